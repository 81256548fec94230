"""One command for a machine with one NVIDIA GPU: check and measure everything in at most `--budget` seconds (8 min).

    python -m benchmarks.gpu                       # = nox -s gpu; needs CUDA
    python -m benchmarks.gpu --dry-run --out DIR   # CPU: every config built, every step run at toy sizes (CI)

One process; each step runs under a hard time limit (SIGALRM) clipped to what is left of the budget, and a step that
fails, times out or does not apply is recorded and the run goes on. Steps, in order:

1. env            device, versions, commit, the plan
2. copy_bw        device-to-device copy bandwidth (torch `copy_`, large enough to leave the L2)
3. ops/<shape>    each fused op (mhc_coeffs, sinkhorn, mhc_pre, mhc_post_res) at `paper_3b` and `paper_27b` in
                  bfloat16 (maps float32), forward and forward+backward, for every CUDA-capable torch backend
                  (torch, torch-triton) and liger-kernel's ops when it imports: time, GB/s from the bytes-moved model
                  of benchmarks/common.py, % of the measured copy bandwidth
4. layer/<shape>  mhc_layer (probe sublayer) forward+backward, same columns
5. block          W2-style stack (benchmarks/workloads.py `W2_GPU`: 4 blocks, 8 layers, paper_3b width) forward+
                  backward: overhead of each impl over the plain residual, hyper-connections beside it
6. determinism    every op and the layer run twice on the same inputs: outputs and gradients bitwise equal
7. conformance/<backend>  the conformance suite (pytest, in this process) for every backend that claims CUDA,
                  sharing what is left of the budget
Writes `gpu.json` (everything) and `gpu.md` (tables) under benchmarks/results/<device>-<commit8>/ (or --out).

--dry-run: device cpu, Triton in its interpreter (TRITON_INTERPRET=1), the same shape configs and n with 8 tokens
and C = 32 (interpreted kernels at the paper widths take minutes per op), one timed repeat, the conformance suite
narrowed to one op and one example. Its numbers mean nothing; it proves that every step and code path runs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHAPES = ("paper_3b", "paper_27b")
DTYPE = "bfloat16"
OPS = ("mhc_coeffs", "sinkhorn", "mhc_pre", "mhc_post_res")
TORCH_BACKENDS = ("torch", "torch-triton")


# -- time limits ------------------------------------------------------------------------------------------------------
class StepTimeout(KeyboardInterrupt):
    """Raised by the alarm. A KeyboardInterrupt, so that pytest aborts its session instead of recording a failure."""


@contextlib.contextmanager
def deadline(seconds: float):
    def on_alarm(signum, frame):
        raise StepTimeout(f"step exceeded its {seconds:.0f} s limit")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(0.01, seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Plan:
    """What the run does; `--dry-run` changes only the device, the token counts and the repeats."""

    dry_run: bool
    device: str
    budget_s: float
    tokens: dict[str, tuple[int, int]]  # shape -> (B, T) actually run
    channels: dict[str, int]  # shape -> C actually run
    limits: dict[str, float]  # step kind -> seconds
    time_per_measurement_s: float
    conformance_args: list[str] = field(default_factory=list)


def make_plan(dry_run: bool, budget_s: float) -> Plan:
    from mhc_spec.table import load

    spec = load()
    if dry_run:
        tokens = {s: (1, 8) for s in SHAPES}
        channels = {s: 32 for s in SHAPES}  # interpreted kernels: the paper widths would take minutes per op
        limits = {"env": 60, "copy_bw": 60, "ops": 120, "layer": 60, "block": 120, "determinism": 120,
                  "conformance": 120}
        return Plan(True, "cpu", budget_s, tokens, channels, limits, 0.0,
                    ["--max-examples", "1", "-k", "mhc_pre and float32"])
    tokens = {s: (spec.shapes[s].B, spec.shapes[s].T) for s in SHAPES}
    channels = {s: spec.shapes[s].C for s in SHAPES}
    # first-call Triton compiles (ours and liger's) land in ops/paper_3b; the budget clips the sum to 8 minutes
    limits = {"env": 30, "copy_bw": 20, "ops": 90, "layer": 30, "block": 60, "determinism": 30, "conformance": 300}
    return Plan(False, "cuda", budget_s, tokens, channels, limits, 0.25, ["--mhc-profile", "ci"])


# -- timing -----------------------------------------------------------------------------------------------------------
def seconds_per_call(fn, plan: Plan) -> float:
    """Median seconds of one call. CUDA: events around batches of calls (>= ~1 ms per batch, so launch gaps and the
    host sync do not count); CPU: wall time. One warm-up call first (compiles, caches)."""
    import torch

    fn()
    if plan.device == "cpu":
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    inner = max(1, min(100, int(1e-3 / max(time.perf_counter() - t0, 1e-6))))
    times = []
    start = time.perf_counter()
    while len(times) < 3 or (len(times) < 50 and time.perf_counter() - start < plan.time_per_measurement_s):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(inner):
            fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3 / inner)
    return statistics.median(times)


# -- inputs and the callables of each impl ----------------------------------------------------------------------------
def op_inputs(op: str, shape: str, plan: Plan, seed: int = 0) -> dict:
    """Inputs of `op` on the device: bfloat16 activations, float32 maps and parameters (the modules' precision)."""
    import torch

    from mhc_ref import mhc_init
    from mhc_spec.table import load

    s = load().shapes[shape]
    B, T = plan.tokens[shape]
    n, C = s.n, plan.channels[shape]
    g = torch.Generator().manual_seed(seed)

    def act(*shp):
        return torch.randn(*shp, generator=g).to(plan.device, torch.bfloat16)

    def f32(*shp):
        return torch.randn(*shp, generator=g).to(plan.device)

    params = {k: torch.from_numpy(v).float().to(plan.device) for k, v in mhc_init(n, C, rng=seed).items()}
    h_res = torch.softmax(f32(B, T, n, n), dim=-1)
    return {"mhc_coeffs": {"x": act(B, T, n, C), **params},
            "sinkhorn": {"logits": f32(B, T, n, n)},
            "mhc_pre": {"x": act(B, T, n, C), "h_pre": torch.sigmoid(f32(B, T, n))},
            "mhc_post_res": {"x": act(B, T, n, C), "f_out": act(B, T, C), "h_post": 2 * torch.sigmoid(f32(B, T, n)),
                             "h_res": h_res},
            "mhc_layer": {"x": act(B, T, n, C), **params, "w_sub": (f32(C, C) / C ** 0.5).to(torch.bfloat16)},
            }[op]


def impls_for(op: str) -> list[str]:
    out = list(TORCH_BACKENDS)
    if op in ("mhc_coeffs", "mhc_pre", "mhc_post_res", "mhc_layer") and importlib.util.find_spec("liger_kernel"):
        out.append("liger-kernel")
    return out


def op_callable(impl: str, op: str, inputs: dict):
    """(forward) -> outputs tuple; a NotImplementedError when impl cannot run op here."""
    from mhc_spec.table import load

    options = load().op_options(op, "paper")
    if impl in TORCH_BACKENDS:
        from .common import get_backend

        fn = get_backend(impl).op_functions[op]
        if op == "mhc_layer":
            return lambda a: fn(a["x"], a["phi"], a["alpha"], a["b"], a["w_sub"], **options)
        return lambda a: fn(*a.values(), **options)
    if impl == "liger-kernel":
        try:
            from mhc_conformance.peers import liger
        except ImportError as e:
            raise NotImplementedError(f"liger-kernel adapter does not import: {e}") from e
        kw = dict(tmax=options.get("t_max", 20), sinkhorn_eps=options.get("sinkhorn_eps", 0.0),
                  pre_eps=options.get("pre_eps", 0.0), post_mult=options.get("post_scale", 2.0),
                  rms_eps=options.get("rms_eps", 1e-20))
        if op == "mhc_coeffs":
            return lambda a: liger.coeffs(a["x"], a["phi"], a["alpha"], a["b"], **kw)
        if op == "mhc_pre":
            return lambda a: liger.pre(a["x"], a["h_pre"])
        if op == "mhc_post_res":
            return lambda a: liger.post_res(a["x"], a["f_out"], a["h_post"], a["h_res"])
        if op == "mhc_layer":
            from .baselines import probe_sublayer_torch

            def layer(a):
                h_pre, h_post, h_res = liger.coeffs(a["x"], a["phi"], a["alpha"], a["b"], **kw)
                f_out = probe_sublayer_torch(liger.pre(a["x"], h_pre), a["w_sub"])
                return liger.post_res(a["x"], f_out, h_post, h_res)

            return layer
    raise NotImplementedError(f"{impl} has no {op}")


def step_callables(impl: str, op: str, inputs: dict):
    """(forward, forward+backward) callables: fresh leaves, random cotangents, autograd.grad w.r.t. every input."""
    import torch

    fwd = op_callable(impl, op, inputs)
    leaves = {k: v.detach().clone().requires_grad_(v.is_floating_point()) for k, v in inputs.items()}
    outs = fwd(leaves)
    outs = outs if isinstance(outs, tuple) else (outs,)
    g = torch.Generator().manual_seed(1)
    cots = [torch.randn(o.shape, generator=g).to(o.device, o.dtype) for o in outs]

    def forward():
        with torch.no_grad():
            return fwd(inputs)

    def both():
        o = fwd(leaves)
        o = o if isinstance(o, tuple) else (o,)
        grads = torch.autograd.grad(o, list(leaves.values()), cots, allow_unused=True)
        return (*o, *grads)

    return forward, both


# -- steps ------------------------------------------------------------------------------------------------------------
def step_env(plan: Plan) -> dict:
    import torch

    from .report import versions

    out = {"plan": asdict(plan), "versions": versions(), "platform": platform.platform(),
           "commit": git_commit(), "torch_cuda": torch.version.cuda}
    if plan.device == "cuda":
        p = torch.cuda.get_device_properties(0)
        out["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                      "sm_count": p.multi_processor_count, "capability": f"{p.major}.{p.minor}"}
    return out


def step_copy_bw(plan: Plan) -> dict:
    import torch

    nbytes = (1 << 20) if plan.dry_run else (1 << 30)  # 1 GiB moved (512 MiB read + 512 MiB written) on a GPU
    src = torch.ones(nbytes // 8, device=plan.device)
    dst = torch.empty_like(src)
    sec = seconds_per_call(lambda: dst.copy_(src), plan)
    return {"bytes": nbytes, "seconds": sec, "gbps": nbytes / sec / 1e9}


def bandwidth_columns(op: str, mode: str, shape: str, plan: Plan, sec: float, copy_gbps: float | None) -> dict:
    from mhc_spec.table import load

    from .common import bytes_per_token

    s = load().shapes[shape]
    B, T = plan.tokens[shape]
    nbytes = B * T * bytes_per_token(op, mode, s.n, plan.channels[shape], "float32" if op == "sinkhorn" else DTYPE)
    gbps = nbytes / sec / 1e9
    return {"seconds": sec, "bytes": nbytes, "gbps": gbps,
            "pct_copy_bw": 100.0 * gbps / copy_gbps if copy_gbps else None}


def step_ops(shape: str, ops: tuple[str, ...], plan: Plan, copy_gbps: float | None) -> list[dict]:
    rows = []
    for op in ops:
        inputs = op_inputs(op, shape, plan)
        for impl in impls_for(op):
            for mode, idx in (("forward", 0), ("forward+backward", 1)):
                if op == "mhc_layer" and mode == "forward":
                    continue
                row = {"op": op, "shape": shape, "dtype": DTYPE, "mode": mode, "impl": impl}
                try:
                    fn = step_callables(impl, op, inputs)[idx]
                    row.update(bandwidth_columns(op, mode, shape, plan, seconds_per_call(fn, plan), copy_gbps))
                except StepTimeout:
                    raise
                except NotImplementedError as e:
                    row["skipped"] = str(e)
                except Exception as e:  # one impl failing must not hide the others
                    row["error"] = f"{type(e).__name__}: {e}"[:500]
                rows.append(row)
    return rows


def step_block(plan: Plan) -> list[dict]:
    from . import workloads

    cfg = workloads.W2_GPU
    if plan.dry_run:
        cfg = workloads.StackConfig(B=1, T=8, C=32, heads=2, blocks=1, n=cfg.n)
    rows, times = [], {}
    dtype = "float32" if plan.dry_run else DTYPE  # CPU SDPA in bfloat16 is slow and not what is measured
    for impl in ("residual", "torch", "torch-triton", "hyper-connections"):
        row = {"impl": impl, "config": asdict(cfg), "dtype": dtype}
        try:
            if impl == "hyper-connections":
                workloads.check_impl("W2", impl, plan.device)
            model, shape = workloads.stack_model(impl, cfg)
            times[impl] = row["seconds"] = seconds_per_call(workloads.training_step(model, shape, plan.device,
                                                                                    dtype), plan)
        except StepTimeout:
            raise
        except NotImplementedError as e:
            row["skipped"] = str(e)
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {e}"[:500]
        rows.append(row)
    for row in rows:
        if "seconds" in row and times.get("residual"):
            row["overhead_pct"] = 100.0 * (row["seconds"] / times["residual"] - 1.0)
    return rows


def step_determinism(plan: Plan) -> list[dict]:
    import torch

    rows = []
    for op in (*OPS, "mhc_layer"):
        inputs = op_inputs(op, SHAPES[0], plan)
        for impl in TORCH_BACKENDS:
            row = {"op": op, "impl": impl, "shape": SHAPES[0]}
            try:
                both = step_callables(impl, op, inputs)[1]
                first, second = both(), both()
                row["bitwise_equal"] = all(a is None and b is None or torch.equal(a, b) for a, b in zip(first, second))
            except StepTimeout:
                raise
            except Exception as e:
                row["error"] = f"{type(e).__name__}: {e}"[:500]
            rows.append(row)
    return rows


def cuda_backends(plan: Plan) -> list[str]:
    """Installed backends that claim CUDA (on a dry run: those that claim it, run on the CPU)."""
    from mhc_backends import available_backends

    from .common import get_backend

    out = []
    for name in sorted(available_backends()):
        try:
            devices = get_backend(name).capabilities.devices
        except NotImplementedError:
            continue
        if "cuda" in devices or "gpu" in devices:
            out.append(name)
    return out


def step_conformance(backend: str, plan: Plan, report_dir: Path) -> dict:
    import pytest

    report = report_dir / f"conformance-{backend}.json"
    args = ["--pyargs", "mhc_conformance", "--mhc-backend", backend, "--mhc-report", str(report), "--derandomize",
            "-q", "-p", "no:cacheprovider", *plan.conformance_args]
    rc = int(pytest.main(args))
    out = {"rc": rc, "args": args}
    if report.exists():
        out["summary"] = json.loads(report.read_text()).get("summary")
    if rc not in (0, 5):  # 5: nothing collected (the dry run's narrowing matched nothing for this backend)
        raise RuntimeError(f"conformance of {backend} exited with {rc}")
    return out


# -- driver -----------------------------------------------------------------------------------------------------------
def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_label(plan: Plan) -> str:
    if plan.dry_run:
        return "cpu-dry-run"
    import torch

    return re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name(0)).strip("-")


class Runner:
    def __init__(self, plan: Plan):
        self.plan, self.steps, self.start = plan, [], time.perf_counter()

    def left(self) -> float:
        return self.plan.budget_s - (time.perf_counter() - self.start)

    def run(self, name: str, kind: str, fn, limit: float | None = None):
        limit = min(limit or self.plan.limits[kind], self.left())
        rec = {"step": name, "limit_s": round(limit, 1)}
        t0 = time.perf_counter()
        if self.left() < 1:
            rec.update(status="skipped", reason="the run's time budget is spent")
        else:
            print(f"[gpu] {name} (limit {limit:.0f} s)", flush=True)
            try:
                with deadline(limit):
                    rec.update(status="ok", result=fn())
            except StepTimeout as e:
                rec.update(status="timeout", reason=str(e))
            except NotImplementedError as e:
                rec.update(status="skipped", reason=str(e))
            except Exception as e:
                rec.update(status="error", reason=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-3000:])
        rec["seconds"] = round(time.perf_counter() - t0, 2)
        print(f"[gpu] {name}: {rec['status']} in {rec['seconds']} s", flush=True)
        self.steps.append(rec)
        return rec.get("result")


def markdown(doc: dict) -> str:
    env = next((s.get("result") or {} for s in doc["steps"] if s["step"] == "env"), {})
    lines = [f"# GPU run {'(DRY RUN on CPU: numbers mean nothing)' if doc['dry_run'] else ''}", "",
             f"Device `{doc['device']}`, commit `{doc['commit'][:10]}`, {doc['date']}, total {doc['seconds']:.0f} s "
             f"(budget {doc['budget_s']:.0f} s). Command: `{doc['command']}`.", ""]
    if env.get("gpu"):
        lines += [f"GPU: {env['gpu']}", ""]
    lines += ["| step | status | seconds | limit | note |", "|---|---|---:|---:|---|"]
    for s in doc["steps"]:
        lines.append(f"| {s['step']} | {s['status']} | {s['seconds']} | {s['limit_s']} | "
                     f"{(s.get('reason') or '')[:120]} |")
    rows = [r for s in doc["steps"] if s["step"].startswith(("ops/", "layer/")) for r in (s.get("result") or [])]
    if rows:
        lines += ["", "| op | shape | mode | impl | time | GB/s | % copy BW | note |",
                  "|---|---|---|---|---:|---:|---:|---|"]
        for r in rows:
            t = f"{r['seconds'] * 1e6:.1f} us" if "seconds" in r else ""
            pct = f"{r['pct_copy_bw']:.1f}" if r.get("pct_copy_bw") is not None else ""
            gb = f"{r['gbps']:.1f}" if "gbps" in r else ""
            lines.append(f"| {r['op']} | {r['shape']} | {r['mode']} | {r['impl']} | {t} | {gb} | {pct} | "
                         f"{(r.get('skipped') or r.get('error') or '')[:80]} |")
    block = next((s.get("result") for s in doc["steps"] if s["step"] == "block"), None)
    if block:
        lines += ["", "W2-style stack, forward+backward:", "", "| impl | time | overhead vs residual | note |",
                  "|---|---:|---:|---|"]
        for r in block:
            t = f"{r['seconds'] * 1e3:.2f} ms" if "seconds" in r else ""
            ov = f"{r['overhead_pct']:+.0f} %" if "overhead_pct" in r else ""
            lines.append(f"| {r['impl']} | {t} | {ov} | {(r.get('skipped') or r.get('error') or '')[:80]} |")
    det = next((s.get("result") for s in doc["steps"] if s["step"] == "determinism"), None)
    if det:
        lines += ["", "Determinism (two runs, same inputs): " + ", ".join(
            f"{r['op']}/{r['impl']} {'bitwise' if r.get('bitwise_equal') else r.get('error', 'DIFFERS')[:60]}"
            for r in det)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, interpreter, toy token counts: checks the command")
    ap.add_argument("--budget", type=float, default=480.0, help="seconds for the whole run (default 480 = 8 min)")
    ap.add_argument("--out", type=Path, help="output folder (default benchmarks/results/<device>-<commit8>)")
    ap.add_argument("--skip", action="append", default=[], help="skip steps whose name starts with this")
    args = ap.parse_args(argv)

    os.environ["TRITON_INTERPRET"] = "1" if args.dry_run else "0"  # before anything imports triton
    os.environ.setdefault("MHC_BENCH_PRELOAD", "0")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # a jax backend shares the GPU with torch
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("benchmarks.gpu: no CUDA device here; run with --dry-run to check the command on a CPU", file=sys.stderr)
        return 2
    if not args.dry_run:
        os.environ.setdefault("MHC_TORCH_DEVICE", "cuda")
    plan = make_plan(args.dry_run, args.budget)
    commit = git_commit()
    out = args.out or HERE / "results" / f"{device_label(plan)}-{commit[:8]}"
    out.mkdir(parents=True, exist_ok=True)
    r = Runner(plan)

    def wanted(name: str) -> bool:
        return not any(name.startswith(s) for s in args.skip)

    if wanted("env"):
        r.run("env", "env", lambda: step_env(plan))
    copy = r.run("copy_bw", "copy_bw", lambda: step_copy_bw(plan)) if wanted("copy_bw") else None
    copy_gbps = copy["gbps"] if copy else None
    for shape in SHAPES:
        if wanted("ops"):
            r.run(f"ops/{shape}", "ops", lambda shape=shape: step_ops(shape, OPS, plan, copy_gbps))
    for shape in SHAPES:
        if wanted("layer"):
            r.run(f"layer/{shape}", "layer", lambda shape=shape: step_ops(shape, ("mhc_layer",), plan, copy_gbps))
    if wanted("block"):
        r.run("block", "block", lambda: step_block(plan))
    if wanted("determinism"):
        r.run("determinism", "determinism", lambda: step_determinism(plan))
    if wanted("conformance"):
        names = r.run("conformance/backends", "env", lambda: cuda_backends(plan)) or []
        for i, name in enumerate(names):
            share = max(1.0, r.left() / (len(names) - i))
            r.run(f"conformance/{name}", "conformance", lambda name=name: step_conformance(name, plan, out), share)

    doc = {"dry_run": plan.dry_run, "device": device_label(plan), "commit": commit,
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "budget_s": plan.budget_s,
           "seconds": time.perf_counter() - r.start,
           "command": "python -m benchmarks.gpu " + " ".join(argv if argv is not None else sys.argv[1:]),
           "steps": r.steps}
    (out / "gpu.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    (out / "gpu.md").write_text(markdown(doc))
    print(f"[gpu] wrote {out / 'gpu.json'} and {out / 'gpu.md'}", flush=True)
    failed = [s["step"] for s in r.steps if s["status"] in ("error", "timeout")]
    if failed:
        print(f"[gpu] steps that failed or timed out: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
