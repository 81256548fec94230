"""Hyper-Connections baseline maps as the mHC paper writes them, P Eq. 5 (dynamic HC, HC Eqs. 10-13):

    x_tilde = RMSNorm(x)                    per stream over C, no weight        (..., n, C)
    H_pre   = alpha[0] tanh(theta_pre  x_tilde^T) + b_pre     theta_pre  (C,)      -> (..., n)
    H_post  = alpha[1] tanh(theta_post x_tilde^T) + b_post    theta_post (C,)      -> (..., n)
    H_res   = alpha[2] tanh(theta_res  x_tilde^T) + b_res     theta_res  (n, C)    -> (..., n, n)

(theta_res x_tilde^T)[i, j] = theta_res[i] . x_tilde[j]. Unconstrained maps (no sigmoid, no Sinkhorn); HC's
initialisation (HC Eq. 14) is in `modules.MHC(mode="hc")`. 16-bit x is computed in float32; the maps are returned
in `maps_dtype` (default x's dtype).
"""

from __future__ import annotations

import torch

from .. import _contract
from . import _checks

OP = "hc_coeffs"
NAMES = ("theta_pre", "theta_post", "theta_res", "alpha", "b_pre", "b_post", "b_res")


class RMSNormalize(torch.autograd.Function):
    """y = x / r over the last axis, r = sqrt(mean(x^2) + eps) (scale-safe, `_checks.rms`), with the analytic
    backward dx = (g - y sum(g y) / C) / r; saves y and r. The backward is itself differentiable."""

    @staticmethod
    def forward(ctx, x, eps):
        x_t, t, rho = _checks.rms(x, eps)  # r = t * rho
        y = x_t / rho
        ctx.save_for_backward(y, t * rho)
        return y

    @staticmethod
    def backward(ctx, g):
        y, r = ctx.saved_tensors
        C = y.shape[-1]
        return (g - y * torch.sum(g * y, dim=-1, keepdim=True) / C) / r, None


def rms_normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) over the last axis (RMSNorm without weight)."""
    return RMSNormalize.apply(x, eps)


def validate(x, params, op: str = OP) -> None:
    _checks.check_stream_state("x", x, op)
    _contract.check_all(_checks.check_like_x, x, dict(zip(NAMES, params)), _contract.hc_shapes(x), op)


def hc_coeffs_unchecked(x, theta_pre, theta_post, theta_res, alpha, b_pre, b_post, b_res, *, rms_eps,
                        maps_dtype=None):
    out = x.dtype if maps_dtype is None else maps_dtype
    cd = _checks.compute_dtype(x.dtype)
    x = x.to(cd)
    x_t = rms_normalize(x, rms_eps)  # (..., n, C) per-stream RMSNorm
    alpha = alpha.to(cd)
    h_pre = alpha[0] * torch.tanh(torch.matmul(x_t, theta_pre.to(cd))) + b_pre.to(cd)  # (..., n)
    h_post = alpha[1] * torch.tanh(torch.matmul(x_t, theta_post.to(cd))) + b_post.to(cd)  # (..., n)
    a_res = torch.matmul(theta_res.to(cd), x_t.transpose(-1, -2))  # (n, C) @ (..., C, n) -> (..., n, n)
    h_res = alpha[2] * torch.tanh(a_res) + b_res.to(cd)
    return h_pre.to(out), h_post.to(out), h_res.to(out)


def hc_coeffs(x, theta_pre, theta_post, theta_res, alpha, b_pre, b_post, b_res, *, rms_eps: float = 1e-20,
              maps_dtype: torch.dtype | None = None):
    """(H_pre (..., n), H_post (..., n), H_res (..., n, n)) of the HC baseline, P Eq. 5."""
    validate(x, (theta_pre, theta_post, theta_res, alpha, b_pre, b_post, b_res))
    _checks.check_option("rms_eps", rms_eps, OP)
    _checks.check_nonzero_tokens(x, rms_eps, OP, per_stream=True)  # the RMSNorm is per stream
    return hc_coeffs_unchecked(x, theta_pre, theta_post, theta_res, alpha, b_pre, b_post, b_res, rms_eps=rms_eps,
                               maps_dtype=maps_dtype)
