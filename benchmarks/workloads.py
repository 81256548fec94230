"""The module workloads of the performance targets (issue 11), built in one place for asv, the target run and the
GPU command. Both are timed as one training step: forward, then `torch.autograd.grad` of the output against a
fixed random cotangent with respect to the input and every parameter.

- W1: one layer around `nn.Linear(C, C)` at the spec shape `cpu` (B=8, T=512, C=256, n=4): the peers' workload.
- W2: a real Transformer stack: `W2.blocks` pre-norm blocks (causal SDPA attention, 4x GELU MLP), each of whose two
  sublayers is one residual layer (8 mHC layers for 4 blocks), streams expanded after the input and summed at the
  end. B=4, T=256, C=256, 4 heads on the CPU; `W2_GPU` is the same stack at the `paper_3b` width for the GPU run.

impl (who provides the residual layers):
    residual            x + F(x), one stream: the plain pre-norm Transformer
    torch               `mhc_backends.torch.MHC(impl="eager")`, the eager ops
    torch-compile       torch.compile of the `torch` model (the whole model, default inductor backend; W1 only on a
                        CPU, where compiling the W2 stack takes minutes)
    torch-triton        `MHC(impl="triton")`, the fused kernels (CUDA; Triton's interpreter on CPU)
    hyper-connections   the peer `hyper-connections` 0.4.11 `mHC` (streams folded into the batch: (B*n, T, C))
`build(...)` raises NotImplementedError (asv: skip) when an impl cannot run here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mhc_spec.table import load

from . import baselines

SPEC = load()
IMPLS = ("residual", "torch", "torch-compile", "torch-triton", "hyper-connections")


@dataclass(frozen=True)
class StackConfig:
    """A Transformer stack: B sequences of T tokens, width C, `heads` attention heads, `blocks` blocks, n streams."""

    B: int
    T: int
    C: int
    heads: int
    blocks: int
    n: int

    @property
    def layers(self) -> int:
        return 2 * self.blocks  # attention and MLP sublayer of every block


W2 = StackConfig(B=4, T=256, C=256, heads=4, blocks=4, n=SPEC.shapes["cpu"].n)
W2_GPU = StackConfig(B=4, T=2048, C=SPEC.shapes["paper_3b"].C, heads=SPEC.shapes["paper_3b"].C // 128, blocks=4,
                     n=SPEC.shapes["paper_3b"].n)


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - the suite's torch benchmarks need torch
        raise NotImplementedError("the module workloads need torch") from e
    return torch


def sublayers(cfg: StackConfig):
    """[attention_0, mlp_0, attention_1, ...]: pre-norm sublayers (..., C) -> (..., C), each with its own norm."""
    torch = _torch()
    nn = torch.nn

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.RMSNorm(cfg.C)
            self.qkv = nn.Linear(cfg.C, 3 * cfg.C, bias=False)
            self.out = nn.Linear(cfg.C, cfg.C, bias=False)

        def forward(self, h):  # (B', T, C)
            q, k, v = self.qkv(self.norm(h)).unflatten(-1, (3, cfg.heads, -1)).permute(2, 0, 3, 1, 4)  # (B', H, T, d)
            a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.out(a.transpose(1, 2).flatten(-2))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.RMSNorm(cfg.C), nn.Linear(cfg.C, 4 * cfg.C), nn.GELU(),
                                     nn.Linear(4 * cfg.C, cfg.C))

        def forward(self, h):
            return self.net(h)

    return [Attention() if i % 2 == 0 else MLP() for i in range(cfg.layers)]


def stack_model(impl: str, cfg: StackConfig, package=None):
    """(model, input shape) for `impl`; the model maps x (input shape) to the same shape. `package`: the module
    providing MHC, ExpandStreams, CollapseStreams (default `mhc_backends.torch`; e.g. an older revision of it)."""
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(0)
    subs = sublayers(cfg)
    if impl == "residual":
        layers = [baselines.residual_module(s) for s in subs]
        return nn.Sequential(*layers), (cfg.B, cfg.T, cfg.C)
    if impl == "hyper-connections":
        baselines.hyper_connections_module(cfg.n, cfg.C, nn.Identity())  # NotImplementedError when not installed
        from hyper_connections import mc_get_expand_reduce_stream_functions, mHC

        expand, reduce = mc_get_expand_reduce_stream_functions(cfg.n)
        layers = [mHC(cfg.n, dim=cfg.C, branch=s, layer_index=i, sinkhorn_iters=20) for i, s in enumerate(subs)]
        return nn.Sequential(expand, *layers, reduce), (cfg.B, cfg.T, cfg.C)
    if package is None:
        import mhc_backends.torch as package

    kind = {"torch": "eager", "torch-compile": "eager", "torch-triton": "triton"}[impl]
    layers = [package.MHC(s, n=cfg.n, dim=cfg.C, impl=kind, layer_index=i) for i, s in enumerate(subs)]
    model = nn.Sequential(package.ExpandStreams(cfg.n), *layers, package.CollapseStreams(cfg.n))
    if impl == "torch-compile":
        model = torch.compile(model)
    return model, (cfg.B, cfg.T, cfg.C)


def layer_model(impl: str, shape: str = "cpu", package=None):
    """W1: (one layer around nn.Linear(C, C), input shape) at a spec shape config (`package` as in stack_model)."""
    torch = _torch()
    s = SPEC.shapes[shape]
    torch.manual_seed(0)
    branch = torch.nn.Linear(s.C, s.C)
    if impl == "residual":
        return baselines.residual_module(branch), (s.B, s.T, s.C)
    if impl == "hyper-connections":
        return baselines.hyper_connections_module(s.n, s.C, branch), (s.B * s.n, s.T, s.C)
    if package is None:
        import mhc_backends.torch as package

    module = package.MHC(branch, n=s.n, dim=s.C, impl="triton" if impl == "torch-triton" else "eager")
    if impl == "torch-compile":
        module = torch.compile(module)
    return module, (s.B, s.T, s.n, s.C)


def check_impl(workload: str, impl: str, device: str) -> None:
    """NotImplementedError (asv: skip) with the reason when `impl` cannot run on `device`."""
    if impl not in IMPLS:
        raise ValueError(f"workloads: impl must be one of {list(IMPLS)}, got {impl!r}")
    if impl == "torch-compile" and workload == "W2" and device == "cpu":
        raise NotImplementedError("torch.compile of the whole W2 stack takes minutes to build on a 2-core CPU "
                                  "(> the asv setup budget); compare it at W1")
    if impl == "torch-triton" and device == "cpu":
        raise NotImplementedError("torch-triton runs on CPU only in Triton's interpreter: timings would mean nothing")
    if impl == "hyper-connections" and baselines.installed_version("hyper-connections") != \
            baselines.HYPER_CONNECTIONS_VERSION:
        raise NotImplementedError(f"hyper-connections=={baselines.HYPER_CONNECTIONS_VERSION} is not installed")


def training_step(model, shape: tuple[int, ...], device: str = "cpu", dtype: str = "float32",
                  mode: str = "forward+backward") -> Callable[[], object]:
    """One call = one timed unit of `model` on a fixed random input: 'forward' (no_grad) or 'forward+backward'."""
    torch = _torch()
    tdtype = getattr(torch, dtype)
    model = model.to(device=device, dtype=tdtype)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen).to(device=device, dtype=tdtype).requires_grad_(True)
    cot = torch.randn(shape, generator=gen).to(device=device, dtype=tdtype)
    leaves = [x] + [p for p in model.parameters() if p.requires_grad]
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    if mode == "forward":
        def run():
            with torch.no_grad():
                out = model(x)
            sync()
            return out
    else:
        def run():
            grads = torch.autograd.grad(model(x), leaves, cot, allow_unused=True)
            sync()
            return grads
    return run


def build(workload: str, impl: str, device: str = "cpu", dtype: str = "float32", mode: str = "forward+backward",
          cfg: StackConfig | None = None, package=None) -> Callable[[], object]:
    """The timed callable of workload 'W1' or 'W2' for `impl` (already run once: compiled, caches warm)."""
    check_impl(workload, impl, device)
    if workload == "W1":
        model, shape = layer_model(impl, package=package)
    elif workload == "W2":
        model, shape = stack_model(impl, cfg or W2, package=package)
    else:
        raise ValueError(f"workloads: workload must be 'W1' or 'W2', got {workload!r}")
    run = training_step(model, shape, device, dtype, mode)
    run()
    return run


def peak_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes of tensor memory one call of `fn` allocates on the CPU beyond what was live before it, from the
    allocator's own events (torch.profiler with profile_memory): exact for tensors, blind to Python objects."""
    torch = _torch()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak

