"""asv benchmarks of one whole mHC layer (P Eq. 3 with Eqs. 7-9).

- `MhcLayer`: the spec op `mhc_layer` through the backend contract, around the spec's probe sublayer
  F(u) = tanh(rmsnorm(u) @ w_sub); adds the overhead % versus the plain residual h + F(h) at the same shape, in the
  same framework and process (P Sec. 4.3: 6.7 % at n = 4 on the authors' production stack).
- `MhcLayerModule`: the peers' workload (peers.md Sec. 6): one layer wrapped around `nn.Linear(C, C)`, timed as
  a module, for the plain residual, `hyper-connections` 0.4.11 `mHC`, liger-kernel `LigerMHC` (CUDA) and every
  installed torch backend (its `MHC` module when it has one, else its `mhc_layer` op with the Linear as sublayer).
  The CPU targets are ratios of this class's times at the `cpu` shape, forward+backward, float32.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import math
import os
import time

import numpy as np

from mhc_backends import available_backends
from mhc_ref import mhc_init

from . import baselines
from .common import (
    BACKENDS,
    DTYPES,
    MODES,
    PRESET,
    SHAPES,
    SPEC,
    block,
    check_fits,
    check_runnable,
    cuda_available,
    device_name,
    framework_of,
    get_backend,
    gpu_peak_mib,
    host_inputs,
    measure_budget,
    median_seconds,
    op_benchmark,
)


class MhcLayer(op_benchmark("mhc_layer")):
    def track_overhead_pct_vs_residual(self, backend, shape, dtype, mode):
        """100 * (t_mhc_layer / t_residual - 1), both timed here on the same device and framework."""
        w = self.work
        s = SPEC.shapes[shape]
        h = np.random.default_rng(2).standard_normal((s.B, s.T, s.C), dtype=np.float32)
        residual = baselines.residual_workload(w.framework, w.backend, h, host_inputs("mhc_layer", shape)["w_sub"],
                                               dtype, mode)
        return 100.0 * (median_seconds(w.run) / median_seconds(residual) - 1.0)

    track_overhead_pct_vs_residual.unit = "% over plain residual"


# -- the module comparison ------------------------------------------------------------------------------------------
PEERS = ("residual", "hyper-connections", "liger-kernel")
# baselines that are not installed (or, liger-kernel, lack CUDA) stay out of the parameter grid, and so out of the
# dashboard's legends: they would only add empty lines
_PEER_MODULES = {"hyper-connections": "hyper_connections", "liger-kernel": "liger_kernel"}
RUNNABLE_PEERS = tuple(p for p in PEERS if p not in _PEER_MODULES or (
    importlib.util.find_spec(_PEER_MODULES[p]) is not None and (p != "liger-kernel" or cuda_available())))
IMPLS = RUNNABLE_PEERS + tuple(b for b in BACKENDS if b not in PEERS)

_N_NAMES = ("n", "num_streams", "n_streams", "streams", "hc")
_C_NAMES = ("C", "c", "dim", "channels", "d_model")
_SUB_NAMES = ("sublayer", "branch", "layer", "fn", "f", "module")


def _construct(cls, name: str, n: int, C: int, branch):
    """Instantiate a backend's `MHC` module class by matching its signature; None when it does not fit."""
    sig = inspect.signature(cls)
    kwargs = {}
    for p in sig.parameters.values():
        if p.name in _N_NAMES:
            kwargs[p.name] = n
        elif p.name in _C_NAMES:
            kwargs[p.name] = C
        elif p.name in _SUB_NAMES:
            kwargs[p.name] = branch
        elif p.name == "backend":
            kwargs[p.name] = name
        elif p.name == "preset":
            kwargs[p.name] = PRESET
        elif p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            return None
    if "backend" not in sig.parameters:
        if "impl" in sig.parameters and "-" in name:  # e.g. backend torch-triton = the module's impl="triton"
            kwargs["impl"] = name.split("-", 1)[1]
        elif not available_backends()[name].value.endswith(":backend"):
            return None  # the module would run the package's default backend, not this one
    try:
        return cls(**kwargs)
    except (TypeError, ValueError):  # e.g. an impl name the module does not know
        return None


def backend_module(name: str, n: int, C: int, branch):
    """The backend's own `MHC` module around `branch`, or its `mhc_layer` op with `branch` as the sublayer."""
    import torch

    backend = get_backend(name)
    pkg = available_backends()[name].value.split(":")[0]
    for modname in (pkg + ".modules", pkg):
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            continue
        cls = getattr(mod, "MHC", None)
        module = _construct(cls, name, n, C, branch) if cls is not None else None
        if module is not None:
            return module

    options = SPEC.op_options("mhc_layer", PRESET)

    class ContractLayer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.branch = branch
            for key, value in mhc_init(n, C).items():  # phi, alpha, b
                self.register_parameter(key, torch.nn.Parameter(torch.from_numpy(value).float()))

        def forward(self, x):
            return backend.mhc_layer(x, self.phi, self.alpha, self.b, self.branch, **options)

    return ContractLayer()


def build_module_workload(impl: str, shape: str, dtype: str, mode: str):
    """The timed callable of one `MhcLayerModule` combination."""
    try:
        import torch
    except ImportError as e:
        raise NotImplementedError("the module comparison needs torch") from e
    s = SPEC.shapes[shape]
    if dtype not in s.dtypes:
        raise NotImplementedError(f"shape {shape} runs dtypes {list(s.dtypes)}, not {dtype}")
    device = "cuda" if cuda_available() else "cpu"
    if impl in PEERS:
        if s.device == "gpu" and device == "cpu":
            raise NotImplementedError(f"shape {shape} is a GPU config; no GPU here")
    else:
        backend = get_backend(impl)
        check_runnable(backend, "mhc_layer", shape, dtype, mode)
        if framework_of(backend.from_numpy(np.zeros(1), "float32")) != "torch":
            raise NotImplementedError(f"backend {impl!r} is not a torch backend: no nn.Linear workload")
        device = device_name(backend)
    tdtype = getattr(torch, dtype)
    check_fits(s.tokens * s.n * s.C * tdtype.itemsize * 12, device)
    torch.manual_seed(0)
    branch = torch.nn.Linear(s.C, s.C).to(device=device, dtype=tdtype)
    if impl == "residual":
        module, lead = baselines.residual_module(branch).to(device, tdtype), (s.B, s.T, s.C)
    elif impl == "hyper-connections":  # streams folded into the batch
        module = baselines.hyper_connections_module(s.n, s.C, branch).to(device, tdtype)
        lead = (s.B * s.n, s.T, s.C)
    elif impl == "liger-kernel":  # keeps its own parameter dtypes
        module, lead = baselines.liger_module(s.n, s.C, branch, tdtype).to(device), (s.B, s.T, s.n, s.C)
    else:  # mixed precision is the backend's business: float32 maps with 16-bit streams
        module, lead = backend_module(impl, s.n, s.C, branch).to(device), (s.B, s.T, s.n, s.C)
    x = torch.randn(lead, device=device).to(tdtype).requires_grad_(True)
    leaves = [x] + [p for p in module.parameters() if p.requires_grad]
    cot = torch.randn(lead, device=device).to(tdtype)
    if mode == "forward":
        def run():
            with torch.no_grad():
                return block(module(x))
    elif mode == "backward":
        out = module(x)

        def run():
            return block(torch.autograd.grad(out, leaves, cot, retain_graph=True, allow_unused=True))
    else:
        def run():
            return block(torch.autograd.grad(module(x), leaves, cot, allow_unused=True))
    run()
    return run


# kept: asv re-runs setup before every sample
module_workload = functools.lru_cache(maxsize=1)(build_module_workload)


def interleaved_min_seconds(fns, budget: float, min_repeat: int = 3) -> list[float]:
    """Best time of each callable, sampled alternately so that load from other processes hits all of them alike
    (interference only ever adds time, so the minimum is the robust estimate of a ratio)."""
    for fn in fns:
        fn()
    best = [math.inf] * len(fns)
    start, rounds = time.perf_counter(), 0
    while rounds < min_repeat or time.perf_counter() - start < budget:
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
        rounds += 1
    return best


class MhcLayerModule:
    """One layer around nn.Linear(C, C): forward (no_grad), backward (autograd.grad on a kept graph) or both."""

    params = (list(IMPLS), list(SHAPES), list(DTYPES), list(MODES))
    param_names = ("impl", "shape", "dtype", "mode")
    timeout = 600.0
    warmup_time = 0.2
    repeat = (3, 10, 10.0)

    def setup(self, impl, shape, dtype, mode):
        self.run = module_workload(impl, shape, dtype, mode)

    def time_layer(self, impl, shape, dtype, mode):
        self.run()

    def peakmem_layer(self, impl, shape, dtype, mode):
        self.run()

    def track_speedup_vs_hyper_connections(self, impl, shape, dtype, mode):
        """t(hyper-connections) / t(impl) for the same workload, timed interleaved in this process (the CPU target
        of issue 6 is this ratio >= 2 for impl torch at the cpu shape, forward+backward)."""
        peer = build_module_workload("hyper-connections", shape, dtype, mode)
        budget = float(os.environ.get("MHC_BENCH_RATIO_BUDGET", 2 * measure_budget()))
        t_peer, t_impl = interleaved_min_seconds([peer, self.run], budget)
        return t_peer / t_impl

    track_speedup_vs_hyper_connections.unit = "x"

    if cuda_available():
        def track_gpu_peak_mib(self, impl, shape, dtype, mode):
            return gpu_peak_mib(self.run)

        track_gpu_peak_mib.unit = "MiB"
