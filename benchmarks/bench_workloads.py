"""asv benchmarks of the module workloads W1 (one layer around nn.Linear) and W2 (a 4-block Transformer stack with
8 residual layers), one training step (forward + backward) in float32, for every impl of `workloads.IMPLS`: the
plain residual, the eager `torch` MHC, torch.compile of it, `torch-triton` (GPU), and hyper-connections 0.4.11.

The targets of issue 11 are ratios to the plain residual, so `track_x_residual` times the impl and the residual
interleaved in one process (best of each; load from other processes only ever adds time) instead of dividing two
medians taken minutes apart. `track_tensor_peak_mib` is the peak tensor memory of one step from the allocator's own
events (asv's `peakmem_` is the process RSS, which the framework's own footprint dominates on a CPU). Threads:
MHC_BENCH_THREADS (the targets are stated at 1 thread).
"""

from __future__ import annotations

import functools
import os

from . import workloads
from .bench_mhc_layer import interleaved_min_seconds
from .common import cuda_available, measure_budget


def _device() -> str:
    return "cuda" if cuda_available() else "cpu"


@functools.lru_cache(maxsize=4)  # asv re-runs setup before every sample; keep the built (and compiled) models
def _step(workload: str, impl: str):
    return workloads.build(workload, impl, device=_device())


def _ratio_budget() -> float:
    return float(os.environ.get("MHC_BENCH_RATIO_BUDGET", 2 * measure_budget()))


class W1Layer:
    """W1: one residual layer around nn.Linear(256, 256), B=8 T=512 n=4, forward+backward, float32."""

    workload = "W1"
    params = (list(workloads.IMPLS),)
    param_names = ("impl",)
    timeout = 600.0
    warmup_time = 0.2
    repeat = (3, 10, 10.0)

    def setup(self, impl):
        self.run = _step(self.workload, impl)

    def time_step(self, impl):
        self.run()

    def track_x_residual(self, impl):
        """t(impl) / t(plain residual), interleaved best-of in this process."""
        residual = _step(self.workload, "residual")
        t_res, t_impl = interleaved_min_seconds([residual, self.run], _ratio_budget())
        return t_impl / t_res

    track_x_residual.unit = "x plain residual"

    def track_tensor_peak_mib(self, impl):
        return workloads.peak_bytes(self.run) / 2**20

    track_tensor_peak_mib.unit = "MiB"


class W2Stack(W1Layer):
    """W2: 4 Transformer blocks (causal SDPA attention + 4x MLP), 8 residual layers, B=4 T=256 C=256, n=4,
    forward+backward, float32."""

    workload = "W2"
