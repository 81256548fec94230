"""Leave the n-stream space: x (..., n, C) -> y (..., C).

    mode = "sum"  (HC Algorithm 1):       y = sum_k x_k
    mode = "head" (DeepSeek-V4 hc_head):  w = sigmoid(alpha_head * (x_bar @ phi_head) / r + b_head) + pre_eps
                                          y = sum_k w_k x_k,   r = sqrt(mean(x_bar^2) + rms_eps)
phi_head is (n*C, n), DeepSeek's `hc_head_fn` transposed. 16-bit x is reduced in float32 and cast back.
"""

from __future__ import annotations

import torch

from .. import _contract
from . import _checks
from .mhc_coeffs import projection
from .mhc_pre import mhc_pre_unchecked

OP = "collapse_streams"


def validate(x, phi_head, alpha_head, b_head, mode, op: str = OP) -> int:
    n, _ = _checks.check_stream_state("x", x, op)
    heads = {"phi_head": phi_head, "alpha_head": alpha_head, "b_head": b_head}
    _contract.check_all(_checks.check_like_x, x, heads, _contract.collapse_shapes(x, heads, mode, op), op)
    return n


def head_weights(x, phi_head, alpha_head, b_head, *, rms_eps, pre_eps):
    """w (..., n) in the compute dtype (float32 for 16-bit x)."""
    cd = _checks.compute_dtype(x.dtype)
    m = projection(x.to(cd), phi_head.to(cd), rms_eps)  # (..., n)
    return torch.sigmoid(alpha_head.to(cd)[0] * m + b_head.to(cd)) + pre_eps


def collapse_streams_unchecked(x, phi_head, alpha_head, b_head, *, mode, rms_eps, pre_eps):
    if mode == "sum":
        return torch.sum(x.to(_checks.compute_dtype(x.dtype)), dim=-2).to(x.dtype)  # (..., C)
    w = head_weights(x, phi_head, alpha_head, b_head, rms_eps=rms_eps, pre_eps=pre_eps)
    return mhc_pre_unchecked(x, w)


def collapse_streams(x: torch.Tensor, phi_head=None, alpha_head=None, b_head=None, *, mode: str = "sum",
                     rms_eps: float = 1e-20, pre_eps: float = 0.0) -> torch.Tensor:
    """x (..., n, C) -> (..., C) by `mode` ('sum' or 'head')."""
    validate(x, phi_head, alpha_head, b_head, mode)
    _checks.check_option("rms_eps", rms_eps, OP)
    _checks.check_option("pre_eps", pre_eps, OP)
    if mode == "head":
        _checks.check_nonzero_tokens(x, rms_eps, OP)
    return collapse_streams_unchecked(x, phi_head, alpha_head, b_head, mode=mode, rms_eps=rms_eps, pre_eps=pre_eps)
