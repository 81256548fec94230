"""`python -m mhc_conformance.peers`: run every installed peer through the convention finder and print the table.

Writes `peers.md` and `peers.json` to --out. Installs nothing: a peer that is not importable is listed as such.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from mhc_spec.table import load

from . import ADAPTERS, installed, reference
from .finder import REGIMES, Finding, find
from .models import DEVIATIONS, MODELS

SPEC = load()


def _row(f: Finding) -> dict:
    s = f.subject
    return {"peer": s.peer, "variant": s.variant, "compared_with": MODELS[s.op][1] if s.op != "hc_layer" else
            "hc_coeffs + mhc_pre + probe + mhc_post_res (HC layer)", "dtype": s.dtype, "verdict": f.verdict,
            "best_match": f.best.describe(), "err_over_allowed": f.score,
            "invariants": f.invariants, "gradients": f.gradient, "declared": list(s.declared),
            "examples": [asdict(e) for e in f.examples]}


def markdown(rows: list[dict], header: dict) -> str:
    out = [f"# mHC peers graded by the spec (spec {header['spec_version']}, {header['date']})", "",
           f"Machine: {header['machine']}; Python {header['python']}; " +
           ", ".join(f"{k} {v}" for k, v in header["versions"].items()), ""]
    out += ["| peer | op | compared with | verdict | H_res invariants (spread draw) | gradients |",
            "|---|---|---|---|---|---|"]
    for r in rows:
        inv = "; ".join(f"{k} {v}" for k, v in r["invariants"].items()) or "n/a"
        out.append(f"| {r['peer']} | `{r['variant']}` | `{r['compared_with']}` | {r['verdict']} | {inv} | "
                   f"{r['gradients']} |")
    if header["missing"]:
        out += ["", "Not installed (not graded): " + ", ".join(header["missing"])]
    out += ["", "## Deviations the finder can name (spec/mhc.toml [conformance.peers.deviations])", ""]
    out += [f"- `{k}`: {v}" for k, v in DEVIATIONS.items()]
    out += ["", "## Failing examples: one per named difference", "",
            "Each compares the peer with the best-matching candidate *without* that difference, at its worst entry "
            f"over three draws (map logits of scale {', '.join(f'{k} {v:g}' for k, v in REGIMES.items())})."]
    for r in rows:
        for e in r["examples"]:
            out += ["", f"**{r['peer']} `{r['variant']}` — {e['what']}** ({e['regime']} draw, `{e['output']}` "
                    f"entry {tuple(e['index'])}): |peer − spec| = {e['err']:.3g} > allowed {e['allowed']:.2g}", ""]
            for k, v in e["inputs"].items():
                out.append(f"    {k}  = {v}")
            out += [f"    peer = {e['got']}", f"    spec = {e['want']}"]
        for d in r["declared"]:
            out += ["", f"**{r['peer']} `{r['variant']}` — {d}** (declared by the adapter from the peer's code): "
                    f"{DEVIATIONS[d]}. A phi with cross-stream entries has no counterpart in the peer's parameters: "
                    f"the adapter refuses it with a ValueError."]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mhc_conformance.peers", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="peers-report", help="folder for peers.md and peers.json (default: %(default)s)")
    ap.add_argument("--peer", action="append", choices=sorted(ADAPTERS), help="grade only these adapters")
    ap.add_argument("--no-control", action="store_true", help="leave out the control rows (the reference itself)")
    args = ap.parse_args(argv)

    avail = installed()
    chosen = [m for m in (args.peer or sorted(ADAPTERS))]
    absent = [ADAPTERS[m][0] for m in chosen if m not in avail]
    versions = {"mhc-spec": version("mhc-spec")}
    subjects = [] if args.no_control else [reference.subject("sinkhorn"), reference.subject("mhc_coeffs")]
    for mod in chosen:
        if mod not in avail:
            print(f"skip {ADAPTERS[mod][0]}: not installed (pip install '.[peers]')", file=sys.stderr)
            continue
        adapter = importlib.import_module(f"{__package__}.{mod}")
        versions[adapter.DISTRIBUTION] = version(adapter.DISTRIBUTION)
        subjects += adapter.subjects()
    if not subjects:
        print("no peer installed; nothing to grade", file=sys.stderr)
        return 1
    rows = []
    for i, s in enumerate(subjects, 1):
        t = time.perf_counter()
        print(f"[{i}/{len(subjects)}] {s.peer} {s.variant} ...", end=" ", flush=True, file=sys.stderr)
        f = find(s)
        print(f"{f.verdict} ({time.perf_counter() - t:.1f} s)", file=sys.stderr)
        rows.append(_row(f))
    header = {"spec_version": SPEC.spec_version, "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": f"{platform.machine()} {platform.system()}", "python": platform.python_version(),
              "versions": versions, "missing": absent}
    text = markdown(rows, header)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "peers.md").write_text(text, encoding="utf-8")
    (out / "peers.json").write_text(json.dumps({"header": header, "rows": rows}, indent=1, default=str),
                                    encoding="utf-8")
    print(text)
    print(f"wrote {out / 'peers.md'} and {out / 'peers.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
