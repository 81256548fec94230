"""asv benchmarks of `mhc_stack`: L mHC layers (P Eq. 3, L times) around the spec's probe sublayer, the op that
depth-parallel (pipeline) backends implement. L comes from the shape config (`[shapes.*] L` in the spec table).

- `MhcStack`: the spec op through the backend contract on every installed backend (time, peak memory, GB/s, % of
  the copy bandwidth; see common.op_benchmark), plus the overhead % of the stack over L separate `mhc_layer` calls
  at the same shape (the loop, the once-per-stack input checks; a pipeline backend adds its communication here).
- `MhcStackRecompute`: the eager torch op with `recompute_every` off, 1, 2 and P Eq. 20's "auto": the forward (with
  autograd recording), the backward, or both, and the bytes autograd keeps for the backward (counted with
  saved-tensor hooks, so the number is exact on CPU too), i.e. what selective recompute (P Sec. 4.3.2) trades.
"""

from __future__ import annotations

import functools

import numpy as np

from .common import (
    DTYPES,
    MODES,
    SHAPES,
    SPEC,
    Workload,
    block,
    check_fits,
    check_runnable,
    cuda_available,
    estimate_device_bytes,
    get_backend,
    gpu_peak_mib,
    median_seconds,
    native_inputs,
    op_benchmark,
)


class MhcStack(op_benchmark("mhc_stack")):
    def track_overhead_pct_vs_layers(self, backend, shape, dtype, mode):
        """100 * (t_mhc_stack / (L * t_mhc_layer) - 1), both timed here at the same shape: mhc_layer on the same
        backend, or, for a backend that runs only the stack (torch-pipeline), on its framework's eager backend."""
        try:
            layer = Workload(backend, "mhc_layer", shape, dtype, mode)
        except NotImplementedError:
            layer = Workload(self.work.framework, "mhc_layer", shape, dtype, mode)
        L = SPEC.shapes[shape].L
        return 100.0 * (median_seconds(self.work.run) / (L * median_seconds(layer.run)) - 1.0)

    track_overhead_pct_vs_layers.unit = "% over L mhc_layer calls"


RECOMPUTE = ("off", "1", "2", "auto")


def build_recompute_workload(recompute: str, shape: str, dtype: str, mode: str):
    """(run, saved_bytes): the timed unit of the torch op with `recompute_every` in `mode`; the bytes autograd keeps."""
    try:
        import torch

        from mhc_backends.torch import mhc_stack
    except ImportError as e:
        raise NotImplementedError("the recompute benchmark needs torch") from e
    backend = get_backend("torch")
    check_runnable(backend, "mhc_stack", shape, dtype, mode)
    check_fits(estimate_device_bytes("mhc_stack", shape, dtype, "forward+backward"), str(backend.device))
    every = None if recompute == "off" else recompute if recompute == "auto" else int(recompute)
    options = SPEC.op_options("mhc_stack", "paper")
    leaves = [a.detach().requires_grad_(True) for a in native_inputs(backend, "mhc_stack", shape, dtype)]
    cot = torch.from_numpy(np.random.default_rng(1).standard_normal(tuple(leaves[0].shape), dtype=np.float32))
    cot = cot.to(device=leaves[0].device, dtype=leaves[0].dtype)

    def forward():
        return mhc_stack(*leaves, recompute_every=every, **options)

    if mode == "forward":  # recording the graph is what recompute changes in the forward
        def run():
            return block(forward())
    elif mode == "backward":
        out = forward()

        def run():
            return block(torch.autograd.grad(out, leaves, cot, retain_graph=True))
    else:
        def run():
            return block(torch.autograd.grad(forward(), leaves, cot))

    storages: dict[int, int] = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()  # the graph is dropped at once; only the sizes are kept
    run()
    return run, float(sum(storages.values()))


recompute_workload = functools.lru_cache(maxsize=1)(build_recompute_workload)


class MhcStackRecompute:
    """Eager torch mhc_stack with selective recompute off or on."""

    params = (list(RECOMPUTE), list(SHAPES), list(DTYPES), list(MODES))
    param_names = ("recompute_every", "shape", "dtype", "mode")
    timeout = 600.0
    warmup_time = 0.2
    repeat = (3, 10, 10.0)

    def setup(self, recompute, shape, dtype, mode):
        self.run, self.saved = recompute_workload(recompute, shape, dtype, mode)

    def time_step(self, recompute, shape, dtype, mode):
        self.run()

    def peakmem_step(self, recompute, shape, dtype, mode):
        self.run()

    def track_saved_mib(self, recompute, shape, dtype, mode):
        return self.saved / 2**20

    track_saved_mib.unit = "MiB kept for backward"

    if cuda_available():
        def track_gpu_peak_mib(self, recompute, shape, dtype, mode):
            return gpu_peak_mib(self.run)

        track_gpu_peak_mib.unit = "MiB"
