"""Backend discovery through the `mhc.backends` entry-point group.

Listing reads package metadata only: no backend module (and so no framework) is imported until `load_backend`.
An entry point names a zero-argument callable that returns a `Backend` (or a `Backend` instance). An unregistered
backend can be loaded as `"package.module:object"`.
"""

from __future__ import annotations

import importlib
from importlib.metadata import EntryPoint, entry_points

from .base import Backend

ENTRY_POINT_GROUP = "mhc.backends"


def available_backends() -> dict[str, EntryPoint]:
    """Installed backends by name, without loading them."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _instantiate(obj, label: str) -> Backend:
    if not isinstance(obj, Backend) and not callable(obj):
        raise TypeError(f"backend {label!r} must name a mhc_backends.Backend or a zero-argument callable returning "
                        f"one, got {type(obj).__name__} {obj!r}")
    backend = obj if isinstance(obj, Backend) else obj()
    if not isinstance(backend, Backend):
        raise TypeError(f"backend {label!r} must be a mhc_backends.Backend or return one, got {type(backend)}")
    return backend


def load_backend(name: str) -> Backend:
    """Load a backend by entry-point name (e.g. 'numpy', 'torch') or as 'module:object'."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"backend name must be a non-empty str, got {name!r}")
    if ":" in name:
        module, _, attr = name.partition(":")
        if not module or not attr or "" in attr.split("."):
            raise ValueError(f"backend {name!r}: expected 'package.module:object' with both parts non-empty")
        try:
            obj = importlib.import_module(module)
        except ImportError as e:
            raise ValueError(f"backend {name!r}: cannot import module {module!r}: {e}") from e
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise ValueError(f"backend {name!r}: module {module!r} has no attribute {attr!r}")
            obj = getattr(obj, part)
        return _instantiate(obj, name)
    found = available_backends()
    if name not in found:
        raise ValueError(f"unknown mHC backend {name!r}; installed backends: {sorted(found) or 'none'} "
                         f"(or pass 'module:object')")
    return _instantiate(found[name].load(), name)
