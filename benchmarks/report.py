"""asv results -> Markdown tables and a PNG plot (backend x op x shape: time and % of the copy bandwidth).

    python -m benchmarks.report                                   # latest run of this machine: print the tables
    python -m benchmarks.report --md out.md --png out.png         # write them
    python -m benchmarks.report --readme README.md                # rewrite the README's bench-table section
    python -m benchmarks.report --snapshot benchmarks/results --command "nox -s bench -- --quick"

`--snapshot` copies the asv result JSON with the machine description, library versions, the command and the commit
into `<dir>/<machine>-<commit8>/` (committed; the asv working results stay git-ignored). The CPU targets of
issue 6 are computed here as ratios of times taken in the same run.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import json
import math
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / ".asv" / "results"
README_START, README_END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"
TARGET_SHAPE, TARGET_DTYPE, TARGET_MODE = "cpu", "float32", "forward+backward"
METRICS = {"time_op": "time", "peakmem_op": "peakmem", "track_gbps": "gbps", "track_pct_copy_bw": "pct_bw",
           "track_overhead_pct_vs_residual": "overhead", "track_gpu_peak_mib": "gpu_mib",
           "time_layer": "time", "peakmem_layer": "peakmem", "track_speedup_vs_hyper_connections": "speedup_hc",
           "time_step": "time", "track_x_residual": "x_residual", "track_tensor_peak_mib": "peak_mib"}
# bench_workloads classes (param: impl only) -> workload name; their rows get shape "-", float32, forward+backward
WORKLOAD_CLASSES = {"W1Layer": "W1", "W2Stack": "W2"}
WORKLOADS = tuple(WORKLOAD_CLASSES.values())
DISTRIBUTIONS = ("numpy", "torch", "triton", "jax", "jaxlib", "asv", "hyper-connections", "einops", "liger-kernel",
                 "matplotlib", "mhc-spec")


# -- reading ----------------------------------------------------------------------------------------------------------
def result_files(results_dir: Path, machine: str | None = None) -> list[Path]:
    files = [p for p in Path(results_dir).glob("*/*.json") if p.name != "machine.json"]
    if machine is not None:
        files = [p for p in files if p.parent.name == machine]
    return files


def latest_result(results_dir: Path, machine: str | None = None) -> Path:
    files = result_files(results_dir, machine)
    if not files:
        raise FileNotFoundError(f"no asv results under {results_dir}" + (f" for machine {machine!r}" if machine else "")
                                + "; run `nox -s bench` (or python -m benchmarks.run) first")
    return max(files, key=lambda p: json.loads(p.read_text())["date"])


def records(result_path: Path) -> list[dict]:
    """One dict per (benchmark, parameter combination) with a value: kind (op class or 'module'), name, metric,
    params by name, value."""
    data = json.loads(Path(result_path).read_text())
    cols = data["result_columns"]
    out = []
    for name, row in data["results"].items():
        entry = dict(zip(cols, row))
        module, cls, func = (name.split(".") + ["", ""])[:3]
        metric = METRICS.get(func)
        if metric is None or entry.get("result") is None:
            continue
        params = [[ast.literal_eval(v) for v in values] for values in entry["params"]]
        names = ("impl",) if cls in ("MhcLayerModule", *WORKLOAD_CLASSES) else ("backend",)
        names += ("shape", "dtype", "mode")
        fixed = {"shape": "-", "dtype": "float32", "mode": TARGET_MODE} if cls in WORKLOAD_CLASSES else {}
        for combo, value in zip(itertools.product(*params), entry["result"]):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            kind = ("module" if cls == "MhcLayerModule" else WORKLOAD_CLASSES.get(cls)
                    or module.removeprefix("bench_"))
            out.append({"kind": kind, "metric": metric, "value": float(value), **fixed, **dict(zip(names, combo))})
    return out


def table(recs: Iterable[dict], kind_filter) -> dict[tuple, dict[str, float]]:
    rows: dict[tuple, dict[str, float]] = {}
    for r in recs:
        if not kind_filter(r["kind"]):
            continue
        who = r.get("impl", r.get("backend"))
        rows.setdefault((r["kind"], r["shape"], r["dtype"], r["mode"], who), {})[r["metric"]] = r["value"]
    return rows


# -- the targets (issue 6), as ratios of one run ----------------------------------------------------------------------
def targets(recs: list[dict]) -> list[dict]:
    ops = table(recs, lambda k: k == "mhc_layer")
    mods = table(recs, lambda k: k == "module")
    key = (TARGET_SHAPE, TARGET_DTYPE, TARGET_MODE)
    t_torch = mods.get(("module", *key, "torch"), {}).get("time")
    t_hc = mods.get(("module", *key, "hyper-connections"), {}).get("time")
    interleaved = mods.get(("module", *key, "torch"), {}).get("speedup_hc")
    out = []
    if interleaved or (t_torch and t_hc):
        ratio = interleaved or t_hc / t_torch
        detail = f"asv medians: hyper-connections {fmt_time(t_hc)} / torch {fmt_time(t_torch)}" + (
            f" = {t_hc / t_torch:.2f}x" if t_torch and t_hc else "")
        if interleaved:
            detail = f"interleaved best-of in one process: {interleaved:.2f}x; {detail}"
        out.append({"target": "torch eager >= 2x faster than hyper-connections 0.4.11 mHC (fwd+bwd, B=8 T=512 "
                              "C=256 n=4, around nn.Linear(256, 256))",
                    "ratio": ratio, "goal": ">= 2.0", "met": ratio >= 2.0, "detail": detail})
    else:
        out.append({"target": "torch eager >= 2x faster than hyper-connections 0.4.11 mHC", "ratio": None,
                    "goal": ">= 2.0", "met": None, "detail": "not measured in this run (torch "
                    f"{'ok' if t_torch else 'missing'}, hyper-connections {'ok' if t_hc else 'missing'})"})
    j_torch = ops.get(("mhc_layer", *key, "torch"), {}).get("time")
    j_jax = ops.get(("mhc_layer", *key, "jax"), {}).get("time")
    if j_torch and j_jax:
        ratio = j_jax / j_torch
        out.append({"target": "jax (jit) within 1.5x of torch eager (mhc_layer op, fwd+bwd, cpu shape)", "ratio": ratio,
                    "goal": "<= 1.5", "met": ratio <= 1.5,
                    "detail": f"jax {j_jax * 1e3:.1f} ms / torch {j_torch * 1e3:.1f} ms"})
    else:
        out.append({"target": "jax (jit) within 1.5x of torch eager", "ratio": None, "goal": "<= 1.5", "met": None,
                    "detail": "not measurable: no `jax` backend result in this run" if j_torch else
                    "not measurable: torch and/or jax mhc_layer results missing"})
    return out + workload_targets(recs)


def workload_targets(recs: list[dict]) -> list[dict]:
    """Issue 11: W1 <= 4x and W2 <= +50 % of the plain residual (interleaved ratios), eager faster than
    torch.compile of it at W1, W1 peak tensor memory <= 4.5x the plain residual's."""
    w = table(recs, lambda k: k in WORKLOADS)

    def get(workload, impl, metric):
        return w.get((workload, "-", "float32", TARGET_MODE, impl), {}).get(metric)

    out = []
    for workload, goal, label in (("W1", 4.0, "W1 (one layer around nn.Linear(256, 256), B=8 T=512 n=4) torch eager "
                                               "<= 4x plain residual"),
                                  ("W2", 1.5, "W2 (4 Transformer blocks, 8 mHC layers, B=4 T=256 C=256) torch eager "
                                              "overhead <= +50 % over plain residual")):
        ratio = get(workload, "torch", "x_residual")
        peer = get(workload, "hyper-connections", "x_residual")
        detail = "interleaved best-of in one process" + (f"; hyper-connections {peer:.2f}x" if peer else "")
        out.append({"target": label, "ratio": ratio, "goal": f"<= {goal}", "met": None if ratio is None else
                    ratio <= goal, "detail": detail if ratio is not None else "not measured in this run"})
    t_eager, t_comp = get("W1", "torch", "time"), get("W1", "torch-compile", "time")
    out.append({"target": "W1 torch eager faster than torch.compile of it", "ratio": t_comp / t_eager if t_eager and
                t_comp else None, "goal": "> 1.0 (compile / eager)", "met": None if not (t_eager and t_comp) else
                t_comp > t_eager, "detail": f"asv medians: compiled {fmt_time(t_comp)} / eager {fmt_time(t_eager)}"
                if t_eager and t_comp else "not measured in this run"})
    m_eager, m_res = get("W1", "torch", "peak_mib"), get("W1", "residual", "peak_mib")
    out.append({"target": "W1 peak tensor memory <= 4.5x plain residual", "ratio": m_eager / m_res if m_eager and
                m_res else None, "goal": "<= 4.5", "met": None if not (m_eager and m_res) else m_eager / m_res <= 4.5,
                "detail": f"{m_eager:.1f} MiB / {m_res:.1f} MiB" if m_eager and m_res else "not measured in this run"})
    return out


# -- formatting -------------------------------------------------------------------------------------------------------
def fmt_time(s: float | None) -> str:
    if s is None:
        return ""
    return f"{s * 1e6:.0f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def fmt(v: float | None, spec: str) -> str:
    return "" if v is None else format(v, spec)


def run_date(data: dict) -> datetime:
    """When the benchmarks ran (asv's `date` is the commit's date): the latest `started_at` of the results."""
    cols = data.get("result_columns", [])
    started = [row[cols.index("started_at")] for row in data["results"].values()
               if "started_at" in cols and len(row) > cols.index("started_at") and row[cols.index("started_at")]]
    return datetime.fromtimestamp((max(started) if started else data["date"]) / 1000, UTC)


def markdown(result_path: Path, recs: list[dict], modes: tuple[str, ...] | None = None,
             load: dict | None = None) -> str:
    from .load import warning

    data = json.loads(Path(result_path).read_text())
    machine = json.loads((Path(result_path).parent / "machine.json").read_text())
    ops = table(recs, lambda k: k not in ("module", *WORKLOADS))
    mods = table(recs, lambda k: k == "module")
    works = table(recs, lambda k: k in WORKLOADS)
    loaded = warning(load)
    lines = [f"**{loaded}**", ""] if loaded else []
    lines += [f"Run {run_date(data):%Y-%m-%d %H:%M} UTC, commit `{data['commit_hash'][:10]}` (committed "
             f"{datetime.fromtimestamp(data['date'] / 1000, UTC):%Y-%m-%d}), machine `{machine.get('machine')}` "
             f"({machine.get('cpu')}, {machine.get('num_cpu')} CPUs). "
             f"GB/s and % of copy bandwidth use the bytes-moved model in benchmarks/common.py (P Table 2 counts); "
             f"the copy is timed in the same process at the same byte count.", ""]
    lines += ["| op | shape | dtype | mode | backend | time | GB/s | % copy BW | overhead vs residual |",
              "|---|---|---|---|---|---:|---:|---:|---:|"]
    for (kind, shape, dtype, mode, who), m in sorted(ops.items(), key=lambda kv: _order(kv[0])):
        if modes and mode not in modes or "time" not in m:
            continue
        lines.append(f"| {kind} | {shape} | {dtype} | {mode} | {who} | {fmt_time(m.get('time'))} | "
                     f"{fmt(m.get('gbps'), '.2f')} | {fmt(m.get('pct_bw'), '.1f')} | "
                     f"{fmt(m.get('overhead'), '.0f') + ' %' if 'overhead' in m else ''} |")
    if mods:
        lines += ["", "One layer around `nn.Linear(C, C)` as a module (the peers' workload; hyper-connections input is "
                  "(B*n, T, C), the others (B, T, n, C); plain residual (B, T, C)):", "",
                  "| shape | dtype | mode | impl | time | x residual | hyper-connections / impl (medians) | "
                  "same, interleaved |", "|---|---|---|---|---:|---:|---:|---:|"]
        for (_, shape, dtype, mode, who), m in sorted(mods.items(), key=lambda kv: _order(kv[0])):
            if modes and mode not in modes or "time" not in m:
                continue
            res = mods.get(("module", shape, dtype, mode, "residual"), {}).get("time")
            hc = mods.get(("module", shape, dtype, mode, "hyper-connections"), {}).get("time")
            x_res = fmt(m["time"] / res if res else None, ".1f")
            x_hc = fmt(hc / m["time"] if hc else None, ".2f")
            lines.append(f"| {shape} | {dtype} | {mode} | {who} | {fmt_time(m['time'])} | {x_res} | {x_hc} | "
                         f"{fmt(m.get('speedup_hc'), '.2f')} |")
    if works:
        lines += ["", "Workloads, one training step (forward + backward), float32: W1 = one layer around "
                  "`nn.Linear(256, 256)` (B=8, T=512, n=4); W2 = 4 Transformer blocks (causal SDPA attention + "
                  "4x MLP), 8 residual layers, B=4, T=256, C=256, n=4 (benchmarks/workloads.py):", "",
                  "| workload | impl | time | x plain residual (interleaved) | peak tensor memory |",
                  "|---|---|---:|---:|---:|"]
        for (kind, _, _, _, who), m in sorted(works.items(), key=lambda kv: (kv[0][0], kv[0][4])):
            lines.append(f"| {kind} | {who} | {fmt_time(m.get('time'))} | {fmt(m.get('x_residual'), '.2f')} | "
                         f"{fmt(m.get('peak_mib'), '.1f')}{' MiB' if 'peak_mib' in m else ''} |")
    lines += ["", "Targets (ratios of times from this one run):", ""]
    for t in targets(recs):
        verdict = "not measured" if t["met"] is None else "met" if t["met"] else "NOT met"
        ratio = "" if t["ratio"] is None else f"{t['ratio']:.2f}x, "
        caveat = "; machine loaded, unreliable" if loaded and t["met"] is not None else ""
        lines.append(f"- {t['target']}: {ratio}goal {t['goal']}: **{verdict}** ({t['detail']}{caveat})")
    return "\n".join(lines) + "\n"


def _order(key):
    kind, shape, dtype, mode, who = key
    shapes = ["cpu_small", "cpu", "paper_3b", "paper_9b", "paper_27b"]
    modes = ["forward", "backward", "forward+backward"]
    return (kind, shapes.index(shape) if shape in shapes else 99, dtype,
            modes.index(mode) if mode in modes else 9, str(who))


def plot(recs: list[dict], png: Path, mode: str = TARGET_MODE) -> Path:
    """Per shape config (rows): time per op and backend (log scale), % of copy bandwidth, and the module comparison."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = table(recs, lambda k: k not in ("module", *WORKLOADS))
    mods = table(recs, lambda k: k == "module")
    shapes = sorted({(k[1], k[2]) for k in list(ops) + list(mods) if k[3] == mode},
                    key=lambda sd: _order(("", sd[0], sd[1], mode, "")))
    if not shapes:
        raise ValueError(f"plot: no results for mode {mode!r}")
    fig, axes = plt.subplots(len(shapes), 3, figsize=(16, 3.6 * len(shapes)), squeeze=False)
    for row, (shape, dtype) in enumerate(shapes):
        names = sorted({k[0] for k in ops if k[1:4] == (shape, dtype, mode)})
        backends = sorted({k[4] for k in ops if k[1:4] == (shape, dtype, mode)})
        width = 0.8 / max(1, len(backends))
        for col, metric, label in ((0, "time", "time per call (ms, log)"), (1, "pct_bw", "% of copy bandwidth")):
            ax = axes[row][col]
            for i, be in enumerate(backends):
                vals = [ops.get((op, shape, dtype, mode, be), {}).get(metric) for op in names]
                vals = [float("nan") if v is None else v * (1e3 if metric == "time" else 1) for v in vals]
                ax.bar([j + i * width for j in range(len(names))], vals, width, label=be)
            ax.set_xticks([j + width * (len(backends) - 1) / 2 for j in range(len(names))], names, rotation=20)
            ax.set_ylabel(label)
            if metric == "time":
                ax.set_yscale("log")
            ax.set_title(f"{shape} {dtype} {mode}")
            ax.legend(fontsize=8)
        ax = axes[row][2]
        impls = sorted(k[4] for k in mods if k[1:4] == (shape, dtype, mode))
        ax.bar(impls, [mods[("module", shape, dtype, mode, i)]["time"] * 1e3 for i in impls])
        ax.set_ylabel("layer around nn.Linear (ms)")
        ax.set_title(f"module comparison, {shape} {dtype} {mode}")
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def rewrite_readme(readme: Path, section: str) -> bool:
    """Replace the text between the bench-table markers; False (file untouched) when the markers are missing."""
    text = Path(readme).read_text()
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    Path(readme).write_text(f"{head}{README_START}\n{section}{README_END}{tail}")
    return True


# -- snapshot ---------------------------------------------------------------------------------------------------------
def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    try:
        import torch

        out["torch_num_threads"] = str(torch.get_num_threads())
    except ImportError:
        pass
    for dist in DISTRIBUTIONS:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def snapshot(result_path: Path, dest_root: Path, command: str, recs: list[dict], load: dict | None = None) -> Path:
    data = json.loads(Path(result_path).read_text())
    machine = json.loads((Path(result_path).parent / "machine.json").read_text())
    dest = Path(dest_root) / f"{machine['machine']}-{data['commit_hash'][:8]}"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(result_path, dest / "asv-result.json")
    shutil.copy(Path(result_path).parent / "machine.json", dest / "machine.json")
    bench_meta = Path(result_path).parent.parent / "benchmarks.json"
    if bench_meta.exists():
        shutil.copy(bench_meta, dest / "benchmarks.json")
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE, capture_output=True,
                           text=True).stdout.strip()
    meta = {"commit": data["commit_hash"], "working_tree_dirty": bool(dirty), "command": command,
            "date": run_date(data).isoformat(),
            "commit_date": datetime.fromtimestamp(data["date"] / 1000, UTC).isoformat(),
            "machine": {**machine, "platform": platform.platform(), "processor": platform.processor(),
                        "load_average_1_5_15min_at_snapshot": list(os.getloadavg())},
            "versions": versions(), "targets": targets(recs), "machine_load": load,
            "env": {k: v for k, v in os.environ.items()
                    if k.startswith("MHC_") or k in ("OMP_NUM_THREADS", "TRITON_INTERPRET", "CUDA_VISIBLE_DEVICES")}}
    (dest / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (dest / "report.md").write_text(markdown(result_path, recs))
    try:
        plot(recs, dest / "report.png")
    except ValueError:  # only workload results (no per-op rows): the report.md table is the whole result
        pass
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, default=RESULTS_DIR, help="asv results_dir")
    ap.add_argument("--result-file", type=Path, help="one asv result JSON (default: the latest)")
    ap.add_argument("--machine", help="asv machine name (default: any)")
    ap.add_argument("--md", type=Path, help="write the full Markdown report here")
    ap.add_argument("--png", type=Path, help="write the plot here")
    ap.add_argument("--readme", type=Path, help="rewrite this README's bench-table section (forward+backward rows)")
    ap.add_argument("--snapshot", type=Path, help="copy results + machine + versions + command into this folder")
    ap.add_argument("--command", default=" ".join(sys.argv), help="the command that produced the results")
    ap.add_argument("--load", type=Path, help="machine-load measurement of the run (benchmarks.load JSON)")
    args = ap.parse_args(argv)
    from .load import read

    path = args.result_file or latest_result(args.results, args.machine)
    recs = records(path)
    load = read(args.load)
    report = markdown(path, recs, load=load)
    print(report)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(report)
        print(f"Markdown report: {args.md}")
    if args.png:
        try:
            print(f"plot: {plot(recs, args.png)}")
        except ValueError as e:  # e.g. `--bench` selected only the workload benchmarks: no per-op results to draw
            print(f"plot skipped: {e}")
    if args.readme:
        ok = rewrite_readme(args.readme, markdown(path, recs, modes=(TARGET_MODE,), load=load))
        print(f"README section {'rewritten' if ok else 'NOT rewritten (markers missing)'}: {args.readme}")
    if args.snapshot:
        print(f"snapshot: {snapshot(path, args.snapshot, args.command, recs, load)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
