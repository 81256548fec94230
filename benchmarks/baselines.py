"""Every baseline the suite compares against, from this one place.

- The plain residual y = h + F(h) at the same shape (B, T, C): the cost mHC adds is measured against it.
  `residual_workload` builds it in the framework of a backend with the spec's probe sublayer (for the op-level
  `mhc_layer` overhead); `residual_module` wraps any torch branch (for the module comparison with the peers).
- `hyper-connections` 0.4.11 (the most used community package; CPU): its `mHC`
  (ManifoldConstrainedHyperConnections) around a branch, streams folded into the batch: (B*n, T, C).
- `liger-kernel` (GPU only): `LigerMHC` around a branch, streams next to the features: (B, T, n, C).

Peers are imported lazily: a missing peer makes its benchmarks skip (NotImplementedError), never fail the suite.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

from mhc_ref import ProbeSublayer
from mhc_spec.table import load

HYPER_CONNECTIONS_VERSION = "0.4.11"
PROBE_RMS_EPS = load().conformance["probe_rms_eps"]


def installed_version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


# -- plain residual with the probe sublayer, per framework ----------------------------------------------------------
def residual_workload(framework: str, backend, h_host: np.ndarray, w_host: np.ndarray, dtype: str,
                      mode: str) -> Callable[[], Any]:
    """y = h + F(h), F(u) = tanh(rmsnorm(u) @ w_sub) (the spec's probe sublayer), h (B, T, C), as one callable
    running `mode` in `framework` on the backend's device. NotImplementedError for frameworks without one here."""
    from .common import block

    h = backend.from_numpy(h_host, dtype)
    w = backend.from_numpy(w_host, dtype)
    if framework == "numpy":
        sub = ProbeSublayer(w)

        def forward():
            f, cache = sub.forward(h)
            return h + f, cache

        g = np.ones_like(h)
        _, cache = forward()

        def backward(cache=cache):
            du, grads = sub.vjp(cache, g)
            return g + du, grads

        return {"forward": lambda: forward()[0], "backward": backward,
                "forward+backward": lambda: backward(forward()[1])}[mode]
    if framework == "torch":
        import torch

        hr, wr = h.detach().requires_grad_(True), w.detach().requires_grad_(True)
        g = torch.ones_like(h)
        if mode == "forward":
            return lambda: block(h + probe_sublayer_torch(h, w))
        y = hr + probe_sublayer_torch(hr, wr)
        if mode == "backward":
            return lambda: block(torch.autograd.grad(y, (hr, wr), g, retain_graph=True))
        return lambda: block(torch.autograd.grad(hr + probe_sublayer_torch(hr, wr), (hr, wr), g))
    if framework == "jax":
        import jax
        import jax.numpy as jnp

        def f(h, w):
            h32 = h.astype(jnp.float32)
            u = (h32 * jax.lax.rsqrt(jnp.mean(h32 * h32, axis=-1, keepdims=True) + PROBE_RMS_EPS)).astype(h.dtype)
            return h + jnp.tanh(u @ w)

        g = jnp.ones_like(h)
        fwd = jax.jit(f)
        bwd = jax.jit(lambda h, w, g: jax.vjp(f, h, w)[1](g))

        @jax.jit
        def step(h, w, g):
            y, pull = jax.vjp(f, h, w)
            return y, pull(g)

        return {"forward": lambda: block(fwd(h, w)), "backward": lambda: block(bwd(h, w, g)),
                "forward+backward": lambda: block(step(h, w, g))}[mode]
    raise NotImplementedError(f"no plain-residual baseline for framework {framework!r}")


def probe_sublayer_torch(u, w_sub, eps: float = PROBE_RMS_EPS):
    """F(u) = tanh(rmsnorm(u) @ w_sub) in torch, written here so the baseline does not depend on a backend under test;
    the norm runs in float32 for 16-bit u."""
    import torch

    u32 = u.float() if u.dtype in (torch.bfloat16, torch.float16) else u
    u_n = (u32 * torch.rsqrt(torch.mean(u32 * u32, dim=-1, keepdim=True) + eps)).to(u.dtype)
    return torch.tanh(u_n @ w_sub)


# -- torch modules around a branch (the peers' workload) ------------------------------------------------------------
def residual_module(branch):
    """The plain residual x + branch(x) as a module; input (B, T, C)."""
    import torch

    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.branch = branch

        def forward(self, x):
            return x + self.branch(x)

    return Residual()


def hyper_connections_module(n: int, C: int, branch):
    """hyper-connections 0.4.11 `mHC` around `branch`, 20 Sinkhorn iterations (its default linear domain);
    input (B*n, T, C). NotImplementedError when the package (at that version) is not installed."""
    got = installed_version("hyper-connections")
    if got != HYPER_CONNECTIONS_VERSION:
        raise NotImplementedError(f"hyper-connections=={HYPER_CONNECTIONS_VERSION} not installed (found {got})")
    from hyper_connections import mHC

    return mHC(n, dim=C, branch=branch, layer_index=0, sinkhorn_iters=20)


def liger_module(n: int, C: int, branch, dtype):
    """liger-kernel `LigerMHC` (Triton, CUDA only) around `branch`; input (B, T, n, C)."""
    import torch

    if importlib.util.find_spec("liger_kernel") is None:
        raise NotImplementedError("liger-kernel is not installed")
    if not torch.cuda.is_available():
        raise NotImplementedError("liger-kernel mHC runs on CUDA only")
    try:
        from liger_kernel.transformers.mhc import LigerMHC
    except ImportError as e:
        raise NotImplementedError(f"this liger-kernel has no mHC ops: {e}") from e
    return LigerMHC(branch, hc=n, c=C, tmax=20, allow_fp32=dtype == torch.float32)


def peer_versions() -> dict[str, str | None]:
    return {"hyper-connections": installed_version("hyper-connections"),
            "liger-kernel": installed_version("liger-kernel")}
