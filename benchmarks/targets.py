"""The CPU targets of issue 11, measured side by side in one process and written as a committed snapshot.

    python -m benchmarks.targets --old 8857bf6 --threads 1 --out benchmarks/results/<machine>-<commit8>-targets

One process, `--threads` intra-op threads (the targets are stated at 1). Every impl of a workload is built first
(torch.compile ones compiled and warm), then all are timed interleaved, round after round, for `--budget` seconds
each workload, and each keeps its best time (load from other processes only ever adds time, and it hits all impls
alike). The ratios are to the plain residual of the same round robin. Peak tensor memory of one step comes from the
allocator's events (`workloads.peak_bytes`). `--old REV` loads the eager package of that git revision beside the
current one (as `mhc_backends_<rev>`, from `git archive`), so "eager vs torch.compile of the old code" is measured
in the same run. Writes targets.json and targets.md (machine, load average before and after, versions, command).
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import math
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOALS = {"W1": 4.0, "W2": 1.5, "W1 memory": 4.5}


def load_revision(rev: str):
    """`mhc_backends.torch` as it was at git revision `rev`, imported as `mhc_backends_<rev>.torch`."""
    sha = subprocess.run(["git", "rev-parse", "--short=8", rev], cwd=HERE, capture_output=True, text=True,
                         check=True).stdout.strip()
    name = f"mhc_backends_{sha}"
    root = Path(tempfile.mkdtemp(prefix="mhc-old-"))
    blob = subprocess.run(["git", "archive", sha, "backends"], cwd=HERE.parent, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(root, filter="data")
    (root / "backends").rename(root / name)
    sys.path.insert(0, str(root))
    return sha, importlib.import_module(f"{name}.torch")


def measure(workload: str, impls: dict, budget: float) -> dict:
    """{label: best seconds} for the callables in `impls`, timed interleaved."""
    from .bench_mhc_layer import interleaved_min_seconds

    labels = list(impls)
    best = interleaved_min_seconds([impls[k] for k in labels], budget)
    return dict(zip(labels, best))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", help="git revision whose eager code is measured beside the current one")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget", type=float, default=30.0, help="seconds of interleaved timing per workload")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    os.environ.setdefault("MHC_BENCH_PRELOAD", "0")
    import torch

    from . import workloads
    from .report import versions

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    old_sha, old_pkg = load_revision(args.old) if args.old else (None, None)
    builds, build_s = {}, {}

    def add(workload, label, impl, package=None):
        t0 = time.perf_counter()
        try:
            builds.setdefault(workload, {})[label] = workloads.build(workload, impl, package=package)
        except NotImplementedError as e:
            print(f"[targets] {workload} {label}: skipped ({e})", flush=True)
        build_s[f"{workload} {label}"] = round(time.perf_counter() - t0, 1)

    for impl in ("residual", "torch", "torch-compile", "hyper-connections"):
        add("W1", impl, impl)
    for impl in ("residual", "torch", "hyper-connections"):
        add("W2", impl, impl)
    if old_pkg is not None:
        add("W1", f"torch@{old_sha}", "torch", old_pkg)
        add("W1", f"torch-compile@{old_sha}", "torch-compile", old_pkg)
        add("W2", f"torch@{old_sha}", "torch", old_pkg)
    times = {w: measure(w, fns, args.budget) for w, fns in builds.items()}
    peaks = {label: workloads.peak_bytes(fn) for label, fn in builds["W1"].items() if "compile" not in label}
    # the step's input x and cotangent are live throughout (the "plain 20 MiB" counts them)
    inputs = {label: 2 * 4 * math.prod(workloads.layer_model(label.split("@")[0])[1]) for label in peaks}
    load_after = os.getloadavg()

    rows, ratios = [], {}
    for w, t in times.items():
        for label, sec in t.items():
            ratio = sec / t["residual"]
            ratios[(w, label)] = ratio
            rows.append({"workload": w, "impl": label, "seconds": sec, "x_residual": ratio,
                         "peak_mib": peaks[label] / 2**20 if w == "W1" and label in peaks else None,
                         "peak_with_inputs_mib": (peaks[label] + inputs[label]) / 2**20
                         if w == "W1" and label in peaks else None})
    targets = [
        {"target": "W1 torch eager <= 4x plain residual", "value": ratios.get(("W1", "torch")), "goal": "<= 4.0"},
        {"target": "W2 torch eager overhead <= +50 %", "value": ratios.get(("W2", "torch")), "goal": "<= 1.5"},
        {"target": "W1 peak tensor memory <= 4.5x plain (counting the step's input and cotangent)",
         "value": (peaks["torch"] + inputs["torch"]) / (peaks["residual"] + inputs["residual"]), "goal": "<= 4.5"},
        {"target": "W1 peak tensor memory <= 4.5x plain (allocated by the step only)",
         "value": peaks["torch"] / peaks["residual"], "goal": "<= 4.5"},
        {"target": "W1 eager faster than torch.compile of the current code",
         "value": times["W1"].get("torch-compile", float("nan")) / times["W1"]["torch"], "goal": "> 1.0"},
    ]
    if old_sha:
        targets.append({"target": f"W1 eager faster than torch.compile of the old code ({old_sha})",
                        "value": times["W1"].get(f"torch-compile@{old_sha}", float("nan")) / times["W1"]["torch"],
                        "goal": "> 1.0"})
    for t in targets:
        v, goal = t["value"], t["goal"]
        t["met"] = None if v is None or v != v else (v > 1.0 if goal.startswith(">") else v <= float(goal.split()[-1]))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "backends",
                                 "benchmarks"], cwd=HERE.parent, capture_output=True, text=True).stdout.strip())
    command = "python -m benchmarks.targets " + " ".join(argv if argv is not None else sys.argv[1:])
    doc = {"commit": commit, "backends_or_benchmarks_dirty": dirty, "old_revision": old_sha, "command": command,
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "threads": args.threads,
           "budget_s_per_workload": args.budget, "seconds_total": round(time.perf_counter() - t_start, 1),
           "build_seconds": build_s,
           "machine": {"node": platform.node(), "processor": cpu_model(), "platform": platform.platform(),
                       "cpus": os.cpu_count(), "load_average_before": load_before, "load_average_after": load_after},
           "versions": versions(), "rows": rows, "targets": targets}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "targets.json").write_text(json.dumps(doc, indent=1) + "\n")
    (args.out / "targets.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


def cpu_model() -> str:
    """The CPU's model name (`platform.processor()` is empty on most Linux systems)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def markdown(doc: dict) -> str:
    m = doc["machine"]
    lines = [f"Commit `{doc['commit'][:10]}`, {doc['date']}, {m['cpus']}-CPU machine `{m['node']}` ({m['processor']}), "
             f"{doc['threads']} thread(s), load average {m['load_average_before'][0]:.1f} before / "
             f"{m['load_average_after'][0]:.1f} after (this run counts 1 on its core; more is other work). "
             "Interleaved best-of, "
             f"{doc['budget_s_per_workload']:.0f} s per workload, one process. Command: `{doc['command']}`.", "",
             "| workload | impl | best time | x plain residual | peak tensor memory: step / with input + cotangent |",
             "|---|---|---:|---:|---:|"]
    for r in doc["rows"]:
        peak = f"{r['peak_mib']:.1f} / {r['peak_with_inputs_mib']:.1f} MiB" if r.get("peak_mib") else ""
        lines.append(f"| {r['workload']} | {r['impl']} | {r['seconds'] * 1e3:.1f} ms | {r['x_residual']:.2f} | "
                     f"{peak} |")
    lines += ["", "Targets:", ""]
    for t in doc["targets"]:
        verdict = "not measured" if t["met"] is None else "met" if t["met"] else "NOT met"
        lines.append(f"- {t['target']}: {t['value']:.2f} (goal {t['goal']}): **{verdict}**")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
