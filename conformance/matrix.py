"""Run the conformance suite for every installed backend (or the ones named) and print a backend x op x dtype matrix.

Each backend runs in its own subprocess (`pytest --pyargs mhc_conformance --mhc-backend NAME --derandomize
--mhc-report ...`), derandomized: the same command draws the same examples wherever it runs. While a backend runs,
a line per op says how many tests ran, how long they took and how far the run is; then the matrix and the totals.

Reading the matrix (the legend is printed with it):
  cell       the tests of one op in one dtype, e.g. `12p 1F 3s 2x h0.41`:
             p passed, F failed or errored, s skipped (what the backend does not claim, e.g. gradients),
             x known failure (xfail, from the backend's known_failures.txt), X known failure that passed,
             h worst error-to-bound ratio max|y - y64| / allowed of the value and gradient checks (a check passes
             when it is <= 1)
  not claimed  the backend declares neither the op nor the dtype: every test of the cell was skipped
  -          no test of this op for this dtype
  any        column of the dtype-independent tests (bad calls, non-finite inputs)
  total      per backend and overall: passed / failed / skipped / known failures, worst ratio (op, dtype), time

Exit status: 0 when every backend passed, 1 when one has a failure or could not be run, 2 when pytest or
hypothesis is missing (install them with `pip install 'mhc-spec[conformance]'`).

Profiles: MHC_HYPOTHESIS_PROFILE (default ci) for every backend; Triton backends under TRITON_INTERPRET=1 and
`jax-pallas` (interpreted on CPU) get `ci-slow` from `ci` unless `--profile-for` says otherwise. Arguments after
`--` go to every pytest run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

from mhc_backends import available_backends
from mhc_spec.table import load

from .runner import run_suite

SPEC = load()
COLUMNS = (*SPEC.conformance["dtypes"], "any")
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
LEGEND = "\n".join((
    "legend: Np passed, NF failed or errored, Ns skipped (not claimed), Nx known failure, NX known failure passed;",
    "        hR worst error/bound ratio of the checks (<= 1 passes); 'not claimed': the backend declares neither",
    "        the op nor the dtype; '-': no tests; column 'any': dtype-independent tests (bad calls, non-finite input)"))


def default_profile(backend: str) -> str:
    base = os.environ.get("MHC_HYPOTHESIS_PROFILE", "ci")
    if "triton" in backend and os.environ.get("TRITON_INTERPRET") == "1" and base == "ci":
        return "ci-slow"  # every kernel call is interpreted in Python
    if backend == "jax-pallas" and base == "ci":
        return "ci-slow"  # on CPU the Pallas kernels are interpreted: each new shape compiles them (~1-3 s)
    return base


def _ratio(counts: dict) -> float:
    h = counts.get("worst_headroom", 0.0)
    return float("inf") if h == "inf" else float(h or 0.0)


def cell(counts: dict | None) -> str:
    if not counts or not any(counts.get(k, 0) for k in OUTCOMES):
        return "-"
    if counts.get("skipped", 0) and not any(counts.get(k, 0) for k in OUTCOMES if k != "skipped"):
        return "not claimed"
    parts = [f"{counts.get('passed', 0)}p"]
    bad = counts.get("failed", 0) + counts.get("error", 0)
    for value, tag in ((bad, "F"), (counts.get("skipped", 0), "s"), (counts.get("xfailed", 0), "x"),
                       (counts.get("xpassed", 0), "X")):
        if value:
            parts.append(f"{value}{tag}")
    if _ratio(counts):
        parts.append(f"h{_ratio(counts):.2g}")
    return " ".join(parts)


def totals(summary: dict) -> dict:
    """Sum of the outcomes over every cell, the worst ratio and where it occurred."""
    out = dict.fromkeys(OUTCOMES, 0) | {"worst": 0.0, "where": ""}
    for op, cells in summary.items():
        for dtype, counts in cells.items():
            for k in OUTCOMES:
                out[k] += counts.get(k, 0)
            if _ratio(counts) > out["worst"]:
                out["worst"], out["where"] = _ratio(counts), f"{op} {dtype}"
    return out


def total_line(label: str, t: dict, seconds: float, extra: str = "") -> str:
    worst = f"worst ratio {t['worst']:.2g} ({t['where']})" if t["where"] else "worst ratio -"
    known = f", {t['xfailed']} known failures" if t["xfailed"] else ""
    xpass = f", {t['xpassed']} known failures passed" if t["xpassed"] else ""
    return (f"{label}: {t['passed']} passed, {t['failed'] + t['error']} failed, {t['skipped']} skipped{known}{xpass}; "
            f"{worst}; {seconds:.0f} s{extra}")


def _why_not_run(res: dict) -> str:
    lines = [ln.strip() for ln in res.get("tail", "").splitlines() if ln.strip()]
    why = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), lines[-1] if lines else "")
    hint = ""
    if "No module named" in why or "not installed" in why:
        hint = " (install the backend's framework, e.g. `pip install 'mhc-spec[torch]'` or `[jax]`)"
    return f"not run (exit code {res['rc']}): {why[:300]}{hint}"


def render(results: dict[str, dict]) -> str:
    ops = list(SPEC.ops) + ["backend"]
    width = max([len(c) for c in COLUMNS] + [16])
    lines = [LEGEND, "", f"{'backend':14s} {'op':17s} " + " ".join(f"{c:{width}s}" for c in COLUMNS)]
    for name, res in results.items():
        if not res.get("summary"):
            lines.append(f"{name:14s} {_why_not_run(res)}")
            continue
        for op in ops:
            row = res["summary"].get(op)
            if row:
                lines.append(f"{name:14s} {op:17s} " + " ".join(f"{cell(row.get(c)):{width}s}" for c in COLUMNS))
    lines.append("")
    overall, seconds, broken = totals({}), 0.0, []
    for name, res in results.items():
        seconds += res.get("seconds", 0.0)
        if not res.get("summary"):
            broken.append(name)
            lines.append(f"total {name}: not run")
            continue
        t = totals(res["summary"])
        run = f", profile {res['profile']}, exit code {res['rc']}"
        lines.append(total_line(f"total {name}", t, res["seconds"], run))
        for k in OUTCOMES:
            overall[k] += t[k]
        if t["worst"] > overall["worst"]:
            overall["worst"], overall["where"] = t["worst"], f"{name} {t['where']}"
    not_run = f", {len(broken)} backend(s) not run: {', '.join(broken)}" if broken else ""
    lines.append(total_line(f"total ({len(results)} backend{'s' * (len(results) != 1)})", overall, seconds, not_run))
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mhc_conformance.matrix", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [BACKEND ...] [--json PATH] [--dtypes LIST] [--profile NAME]\n"
              "       [--profile-for NAME=PROFILE ...] [--timeout S] [-- PYTEST ARGS]")
    parser.add_argument("backends", nargs="*", metavar="BACKEND",
                        help="entry-point name (`python -m mhc_backends` lists them) or module:object (default: all)")
    parser.add_argument("--json", metavar="PATH", help="write {backend: report} to this file")
    parser.add_argument("--dtypes", metavar="LIST", help="comma-separated subset of the spec dtypes")
    parser.add_argument("--profile", metavar="NAME", help="Hypothesis profile of every backend: ci, ci-slow, thorough")
    parser.add_argument("--profile-for", action="append", default=[], metavar="NAME=PROFILE",
                        help="profile for one backend (repeatable)")
    parser.add_argument("--timeout", type=float, default=1800.0, metavar="S", help="seconds per backend (default 1800)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, pytest_args = argv[:i], argv[i + 1:]
    args = _parser().parse_args(argv)
    missing = [m for m in ("pytest", "hypothesis") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"mhc_conformance.matrix: {' and '.join(missing)} not installed; the suite needs them: "
              f"pip install 'mhc-spec[conformance]'", file=sys.stderr)
        return 2
    overrides = dict(item.split("=", 1) for item in args.profile_for)
    names = args.backends or sorted(available_backends())
    print(f"mhc_conformance.matrix: {len(names)} backend(s): {', '.join(names)}; one pytest run each, derandomized",
          flush=True)
    results: dict[str, dict] = {}
    start = time.perf_counter()
    for i, name in enumerate(names, 1):
        profile = overrides.get(name) or args.profile or default_profile(name)
        print(f"[{i}/{len(names)}] {name}: running the suite (Hypothesis profile {profile}) ...", flush=True)
        res = run_suite(name, profile=profile, dtypes=args.dtypes, extra=pytest_args, timeout=args.timeout,
                        progress=lambda line, n=name: print(f"    {n}: {line}", flush=True))
        res["profile"] = profile
        results[name] = res
        if res.get("summary"):
            done = total_line(f"{name} done", totals(res["summary"]), res["seconds"], f", exit code {res['rc']}")
            print(f"    {done}", flush=True)
        else:
            print(f"    {name}: {_why_not_run(res)}", flush=True)
        if res["rc"] not in (0, 1):  # usage error, internal error, nothing collected
            print(res["tail"], file=sys.stderr)
    print(f"\nmhc_conformance.matrix: {len(names)} backend(s) in {time.perf_counter() - start:.0f} s\n", flush=True)
    print(render(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    return 0 if all(r["rc"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
