"""asv: jit compilation time of the JAX backends' `mhc_layer`, reported apart from the op timings (which exclude it:
every workload's first call compiles in `setup`). One number per (backend, shape, dtype, mode): the first call after
`jax.clear_caches()` minus the steady-state time of the same call (tracing + XLA compilation). The first parameter
is named `jax_backend` (not `backend`): the grid holds only the installed JAX backends."""

from __future__ import annotations

import time

from .common import BACKENDS, DTYPES, MODES, SHAPES, Workload, check_runnable, get_backend, median_seconds

JAX_BACKENDS = [b for b in BACKENDS if b.startswith("jax")] or ["jax"]


class JaxCompile:
    params = (JAX_BACKENDS, list(SHAPES), list(DTYPES), list(MODES))
    param_names = ("jax_backend", "shape", "dtype", "mode")
    timeout = 600.0

    def setup(self, backend, shape, dtype, mode):
        check_runnable(get_backend(backend), "mhc_layer", shape, dtype, mode)  # NotImplementedError = skip

    def track_compile_seconds(self, backend, shape, dtype, mode):
        import jax

        jax.clear_caches()
        t0 = time.perf_counter()
        w = Workload(backend, "mhc_layer", shape, dtype, mode)  # builds the inputs and runs once: compiles
        first = time.perf_counter() - t0
        return max(0.0, first - median_seconds(w.run, 0.5))

    track_compile_seconds.unit = "s (jit compile)"
