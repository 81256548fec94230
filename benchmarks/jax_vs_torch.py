"""mhc_layer forward+backward, `jax` backend vs `torch` backend, side by side in one process (issue 12's CPU target:
jax within 1.5x of torch at the `cpu` shape).

    python -m benchmarks.jax_vs_torch [--shape cpu] [--dtype float32] [--rounds 7] [--backends jax,torch]

Both go through the asv suite's `Workload` (the same inputs, bytes-moved model and timing unit as `bench_mhc_layer`):
torch = forward with autograd + torch.autograd.grad; jax = `value_and_vjp`, the forward and its VJP as one jitted
program, `block_until_ready` on every output. jit compilation is excluded from the timings (each workload's first
call compiles) and reported separately: the first call after `jax.clear_caches()` minus the steady-state time.
Rounds are interleaved (A B A B ...) and each backend's best round median is kept, which is robust to load from
other processes on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

from .common import SPEC, Workload, median_seconds


def first_call_seconds(backend: str, op: str, shape: str, dtype: str, mode: str) -> tuple[float, Workload]:
    import jax

    jax.clear_caches()
    t0 = time.perf_counter()
    w = Workload(backend, op, shape, dtype, mode)  # builds the inputs, then runs once (compiles)
    return time.perf_counter() - t0, w


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="cpu", choices=list(SPEC.shapes))
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--mode", default="forward+backward")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--budget", type=float, default=1.0, help="seconds of timing per round and backend")
    ap.add_argument("--backends", default="jax,torch", help="first / second: the ratio is first over second")
    args = ap.parse_args(argv)
    names = args.backends.split(",")
    work, compile_s = {}, {}
    for name in names:
        if name.startswith("jax"):
            first, w = first_call_seconds(name, "mhc_layer", args.shape, args.dtype, args.mode)
            compile_s[name] = first - median_seconds(w.run, args.budget)
            work[name] = w
        else:
            work[name] = Workload(name, "mhc_layer", args.shape, args.dtype, args.mode)
    best = {n: float("inf") for n in names}
    for _ in range(args.rounds):
        for n in names:
            best[n] = min(best[n], median_seconds(work[n].run, args.budget))
    s = SPEC.shapes[args.shape]
    result = {
        "op": "mhc_layer", "shape": args.shape, "tokens": s.tokens, "n": s.n, "C": s.C, "dtype": args.dtype,
        "mode": args.mode, "seconds": best, "ratio": best[names[0]] / best[names[1]], "ratio_of": names[:2],
        "compile_seconds": compile_s, "rounds": args.rounds, "cpu_count": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0], "machine": platform.machine(),
        "versions": {n: work[n].backend.versions() for n in names},
    }
    for n in names:
        print(f"{n:>8}: {1e3 * best[n]:8.2f} ms  ({work[n].nbytes / best[n] / 1e9:.2f} GB/s by the bytes-moved model)")
    print(f"ratio {names[0]} / {names[1]} = {result['ratio']:.2f}  "
          f"(best of {args.rounds} interleaved round medians; load avg {result['load_avg_1min']:.1f})")
    for n, c in compile_s.items():
        print(f"{n:>8}: jit compile ~{c:.2f} s (first call after jax.clear_caches() minus steady state)")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
