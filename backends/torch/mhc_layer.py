"""One mHC layer, P Eq. 3 with the maps of Eqs. 7-9 (eager PyTorch):

    H_pre, H_post, H_res = mhc_coeffs(x_l)
    x_{l+1} = H_res x_l + H_post^T F(H_pre x_l)          H_pre and H_res act on the same, un-mixed x_l

`sublayer` is a (C, C) tensor w_sub, meaning the spec's probe sublayer F(u) = tanh(rmsnorm(u) @ w_sub) (rmsnorm
without weight, eps = spec conformance.probe_rms_eps), or any callable (..., C) -> (..., C), e.g. an nn.Module
that includes its own pre-norm. With 16-bit x the maps are kept in float32 and the mixing runs in float32; F runs
in x's dtype.
"""

from __future__ import annotations

import torch

from mhc_spec.table import load

from . import _checks
from .hc_coeffs import rms_normalize
from .mhc_coeffs import mhc_coeffs_unchecked, validate, validate_options
from .mhc_post_res import mhc_post_res_unchecked
from .mhc_pre import mhc_pre_unchecked

OP = "mhc_layer"
PROBE_RMS_EPS = load().conformance["probe_rms_eps"]


def probe_sublayer(u: torch.Tensor, w_sub: torch.Tensor, eps: float = PROBE_RMS_EPS) -> torch.Tensor:
    """F(u) = tanh(rmsnorm(u) @ w_sub), u (..., C) -> (..., C); the norm in float32 for 16-bit u."""
    u_n = rms_normalize(u.to(_checks.compute_dtype(u.dtype)), eps).to(u.dtype)  # (..., C)
    return torch.tanh(torch.matmul(u_n, w_sub.to(u.dtype)))


def validate_layer(x, phi, alpha, b, sublayer, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout,
                   op: str = OP) -> None:
    """The checks of every mhc_layer implementation (eager and fused): tensors, options, sublayer."""
    _, C = validate(x, phi, alpha, b, op)
    validate_options(op, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout)
    _checks.check_nonzero_tokens(x, rms_eps, op)
    if isinstance(sublayer, torch.Tensor):
        _checks.check_like_x("w_sub", sublayer, x, (C, C), op, " (C, C)")
    elif not callable(sublayer):
        raise TypeError(f"{op}: sublayer must be a (C, C) tensor w_sub or a callable, got {type(sublayer).__name__}")


def mhc_layer_unchecked(x, phi, alpha, b, sublayer, **options):
    h_pre, h_post, h_res = mhc_coeffs_unchecked(x, phi, alpha, b, maps_dtype=_checks.compute_dtype(x.dtype),
                                                **options)
    u = mhc_pre_unchecked(x, h_pre)  # (..., C)
    f_out = probe_sublayer(u, sublayer) if isinstance(sublayer, torch.Tensor) else sublayer(u)
    check_sublayer_output(f_out, u, OP)
    return mhc_post_res_unchecked(x, f_out, h_post, h_res)  # (..., n, C)


def check_sublayer_output(f_out, u: torch.Tensor, op: str) -> None:
    """F must map (..., C) to a tensor of the same shape; anything else would broadcast into the streams."""
    if not isinstance(f_out, torch.Tensor):
        raise TypeError(f"{op}: the sublayer must return a torch.Tensor, got {type(f_out).__name__}")
    if f_out.shape != u.shape:
        raise ValueError(f"{op}: the sublayer must return the shape of its input H_pre x, {tuple(u.shape)}, "
                         f"got {tuple(f_out.shape)}")


def mhc_layer(x: torch.Tensor, phi: torch.Tensor, alpha: torch.Tensor, b: torch.Tensor, sublayer, *,
              t_max: int = 20, sinkhorn_eps: float = 0.0, pre_eps: float = 0.0, post_scale: float = 2.0,
              rms_eps: float = 1e-20, res_layout: str = "row_major") -> torch.Tensor:
    """x_{l+1} (..., n, C) from x_l (..., n, C), P Eq. 3. Defaults are the `paper` preset."""
    validate_layer(x, phi, alpha, b, sublayer, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout)
    y = mhc_layer_unchecked(x, phi, alpha, b, sublayer, t_max=t_max, sinkhorn_eps=sinkhorn_eps, pre_eps=pre_eps,
                            post_scale=post_scale, rms_eps=rms_eps, res_layout=res_layout)
    _checks.check_result("the output", y, OP, "the map logits alpha * (x_bar @ phi) / r + b, the sublayer output or "
                         f"the mixed streams overflow {y.dtype}")
    return y
