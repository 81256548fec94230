"""Residual mixing plus the scattered sublayer output, P Eq. 3:

    y[..., i, c] = sum_j H_res[..., i, j] x[..., j, c] + H_post[..., i] f[..., c]      rows of H_res = output streams

16-bit x and f_out are mixed in float32 (the maps may be float32 or x's dtype); the result has x's dtype.
"""

from __future__ import annotations

import torch

from . import _checks

OP = "mhc_post_res"


def validate(x, f_out, h_post, h_res, op: str = OP) -> int:
    n, C = _checks.check_stream_state("x", x, op)
    lead = tuple(x.shape[:-2])
    why = f" for x of shape {tuple(x.shape)}"
    _checks.check_tensor("f_out", f_out, op, scan=False)
    _checks.check_device("f_out", f_out, x, op)
    if f_out.dtype != x.dtype:
        raise TypeError(f"{op}: f_out must have x's dtype {x.dtype}, got {f_out.dtype}")
    _checks.check_shape("f_out", f_out, lead + (C,), op, why)
    _checks.check_finite("f_out", f_out, op)
    _checks.check_like_x("h_post", h_post, x, lead + (n,), op, why)
    _checks.check_like_x("h_res", h_res, x, lead + (n, n), op, why)
    return n


def mhc_post_res_unchecked(x, f_out, h_post, h_res):
    cd = _checks.compute_dtype(x.dtype)
    y = torch.matmul(h_res.to(cd), _checks.to_compute(x, "x (mhc_post_res)"))  # (..., n, n) @ (..., n, C)
    y = y + h_post.to(cd).unsqueeze(-1) * _checks.to_compute(f_out, "f_out").unsqueeze(-2)  # (..., n, 1) * (..., 1, C)
    if x.dtype == torch.float16:
        _checks.fits_float16(y, "mhc_post_res: the mixed streams H_res x + H_post^T f_out")
    return y.to(x.dtype)


def mhc_post_res(x: torch.Tensor, f_out: torch.Tensor, h_post: torch.Tensor, h_res: torch.Tensor) -> torch.Tensor:
    """x (..., n, C), f_out (..., C), h_post (..., n), h_res (..., n, n) -> (..., n, C)."""
    validate(x, f_out, h_post, h_res)
    return mhc_post_res_unchecked(x, f_out, h_post, h_res)
