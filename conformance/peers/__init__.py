"""Grade public mHC implementations with the spec: `python -m mhc_conformance.peers`.

Each installed peer has an adapter module here (one file per peer) that maps the peer's ops, parameters and layouts
onto the spec's ops as far as they go (`subjects()`), declares what it cannot express, and offers the ops it can
express as a conformance backend (`module:backend`, e.g. `--mhc-backend mhc_conformance.peers.liger:backend`). The
convention finder (`finder.py`) then searches the spec's option space and a set of named deviations
(spec/mhc.toml [conformance.peers]) for the closest match to each peer op. Nothing here installs anything, and
importing this package imports neither torch nor a peer.
"""

from __future__ import annotations

from importlib.util import find_spec

# adapter module -> (distribution, the import names it needs)
ADAPTERS = {
    "liger": ("liger-kernel", ("torch", "triton", "liger_kernel")),
    "hyper_connections": ("hyper-connections", ("torch", "hyper_connections")),
}


def installed() -> dict[str, str]:
    """Adapters whose peer is importable here: {adapter module: distribution}."""
    return {mod: dist for mod, (dist, needs) in ADAPTERS.items() if all(find_spec(n) for n in needs)}


def missing() -> dict[str, str]:
    return {mod: dist for mod, (dist, _) in ADAPTERS.items() if mod not in installed()}
