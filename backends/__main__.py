"""List the installed mHC backends: `python -m mhc_backends [--load] [NAME ...]`.

Without `--load` the listing reads package metadata only (name, entry point, the package that registers it and its
version): no framework is imported. `--load` imports each backend and adds what it claims (ops, gradient ops,
dtypes, presets, devices, framework versions), or why it cannot be loaded. Exit status 1 when a loaded backend
fails to load.
"""

from __future__ import annotations

import argparse
import sys

from .registry import ENTRY_POINT_GROUP, available_backends, load_backend


def _package(ep) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    return (dist.name, dist.version) if dist is not None else ("?", "?")


def describe(name: str) -> list[str]:
    """What a loaded backend claims, one aspect per line; the load error (and a hint) when it cannot be loaded."""
    try:
        be = load_backend(name)
    except Exception as e:  # noqa: BLE001 (a listing reports every failure and goes on)
        hint = ""
        if isinstance(e, ImportError) or "No module named" in str(e):
            hint = " (install its framework, e.g. pip install 'mhc-spec[torch]' or 'mhc-spec[jax]')"
        return [f"cannot be loaded: {type(e).__name__}: {e}{hint}"]
    c = be.capabilities
    versions = ", ".join(f"{k} {v}" for k, v in be.versions().items()) or "-"
    return [
        f"implements spec {be.spec_version}; device {be.device}; {versions}",
        f"ops ({len(c.ops)}): {', '.join(sorted(c.ops))}",
        f"gradients ({len(c.grad_ops)}): {', '.join(sorted(c.grad_ops)) or '-'}",
        f"dtypes: {', '.join(sorted(c.dtypes))}; presets: {', '.join(sorted(c.presets))}; "
        f"devices: {', '.join(c.devices)}",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mhc_backends", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", metavar="NAME", help="backends to show (default: every installed one)")
    ap.add_argument("--load", action="store_true", help="import the backends and show what they claim")
    args = ap.parse_args(argv)
    found = available_backends()
    unknown = [n for n in args.names if n not in found]
    if unknown:
        ap.error(f"not installed: {', '.join(unknown)}; installed backends: {', '.join(sorted(found)) or 'none'}")
    names = args.names or sorted(found)
    print(f"{len(names)} mHC backend(s) installed (entry-point group {ENTRY_POINT_GROUP})"
          f"{'' if args.load else '; `--load` imports them and shows the ops and dtypes they claim'}")
    rows = [("name", "entry point", "package", "version")]
    rows += [(n, found[n].value, *_package(found[n])) for n in names]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    failed = 0
    for k, row in enumerate(rows):
        print("  ".join(f"{v:{w}s}" for v, w in zip(row, widths)).rstrip())
        if args.load and k > 0:
            lines = describe(row[0])
            failed += lines[0].startswith("cannot be loaded")
            for line in lines:
                print(f"{'':{widths[0]}s}  {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
