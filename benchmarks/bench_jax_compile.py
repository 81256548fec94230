"""asv: jit compilation time of the JAX backends, reported apart from the op timings (which exclude it: every
workload's first call compiles in `setup`). One number per (backend, op, shape, mode): the first call after
`jax.clear_caches()` minus the steady-state time of the same call (tracing + XLA compilation)."""

from __future__ import annotations

import time

from .common import BACKENDS, SHAPES, Workload, check_runnable, get_backend, median_seconds

JAX_BACKENDS = [b for b in BACKENDS if b.startswith("jax")] or ["jax"]


class JaxCompile:
    params = (JAX_BACKENDS, ["mhc_layer", "mhc_coeffs"], [s for s in SHAPES if s.startswith("cpu")] or ["cpu"],
              ["forward", "forward+backward"])
    param_names = ("backend", "op", "shape", "mode")
    timeout = 600.0
    number = 1
    repeat = 1

    def setup(self, backend, op, shape, mode):
        check_runnable(get_backend(backend), op, shape, "float32", mode)  # NotImplementedError = skip

    def track_compile_seconds(self, backend, op, shape, mode):
        import jax

        jax.clear_caches()
        t0 = time.perf_counter()
        w = Workload(backend, op, shape, "float32", mode)  # runs once: traces and compiles
        first = time.perf_counter() - t0
        return max(0.0, first - median_seconds(w.run, 0.5))

    track_compile_seconds.unit = "s (jit compile)"
