"""The sublayer input, the H_pre x_l term of P Eq. 3: y[..., c] = sum_k H_pre[..., k] x[..., k, c].

16-bit x is mixed in float32 (h_pre may be float32 or x's dtype) and the result is cast back to x's dtype.
"""

from __future__ import annotations

import math

import torch

from .. import _contract
from . import _checks

OP = "mhc_pre"


def validate(x, h_pre, op: str = OP) -> int:
    n, _ = _checks.check_stream_state("x", x, op)
    _contract.check_all(_checks.check_like_x, x, {"h_pre": h_pre}, _contract.pre_shapes(x), op)
    return n


def mhc_pre_unchecked(x: torch.Tensor, h_pre: torch.Tensor) -> torch.Tensor:
    cd = _checks.compute_dtype(x.dtype)
    N, (n, C) = math.prod(x.shape[:-2]), x.shape[-2:]
    xc = _checks.to_compute(x, "x (mhc_pre)")
    xc = xc if xc.dim() == 3 else xc.reshape(N, n, C)  # a 3-D x (the modules') enters the bmm without a view
    y = torch.bmm(h_pre.to(cd).reshape(N, 1, n), xc).reshape(*x.shape[:-2], C)  # (N, 1, n) @ (N, n, C)
    if x.dtype == torch.float16:
        _checks.fits_float16(y, "mhc_pre: the sublayer input H_pre x")
    return y.to(x.dtype)  # (..., C)


def mhc_pre(x: torch.Tensor, h_pre: torch.Tensor) -> torch.Tensor:
    """x (..., n, C), h_pre (..., n) -> (..., C)."""
    validate(x, h_pre)
    return mhc_pre_unchecked(x, h_pre)
