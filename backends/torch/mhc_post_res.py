"""Residual mixing plus the scattered sublayer output, P Eq. 3:

    y[..., i, c] = sum_j H_res[..., i, j] x[..., j, c] + H_post[..., i] f[..., c]      rows of H_res = output streams

16-bit x and f_out are mixed in float32 (the maps may be float32 or x's dtype); the result has x's dtype.
"""

from __future__ import annotations

import math

import torch

from .. import _contract
from . import _checks

OP = "mhc_post_res"


def validate(x, f_out, h_post, h_res, op: str = OP) -> int:
    n, _ = _checks.check_stream_state("x", x, op)
    shapes = _contract.post_res_shapes(x)
    _checks.check_tensor("f_out", f_out, op, scan=False)
    _checks.check_device("f_out", f_out, x, op)
    if f_out.dtype != x.dtype:  # f_out is an activation: x's dtype, not a map's float32
        raise TypeError(f"{op}: f_out must have x's dtype {x.dtype}, got {f_out.dtype}")
    expected, why = shapes.pop("f_out")
    _checks.check_shape("f_out", f_out, expected, op, why)
    _checks.check_finite("f_out", f_out, op)
    _contract.check_all(_checks.check_like_x, x, {"h_post": h_post, "h_res": h_res}, shapes, op)
    return n


class AddOuter(torch.autograd.Function):
    """y += H_post^T f_out in place, y (N, n, C) the fresh output of the mixing bmm, h_post (N, n), f_out (N, C): no
    full-size temporary forward; backward dy = g (passed through), df = H_post^T g and dH_post = g f_out by bmm,
    where autograd's broadcasting backward of `h_post[..., None] * f_out[..., None, :]` would make two (N, n, C)
    products. The bmm before it stays a built-in op on purpose: its dx then reaches x's gradient buffer as a
    built-in result, which autograd accumulates in place; a gradient returned by a Python backward is added out of
    place (one more full-size buffer per layer). The backward is itself differentiable."""

    @staticmethod
    def forward(ctx, y, h_post, f_out):
        ctx.mark_dirty(y)
        ctx.save_for_backward(h_post, f_out)
        y.addcmul_(h_post.unsqueeze(-1), f_out.unsqueeze(-2))  # + (N, n, 1) * (N, 1, C)
        return y

    @staticmethod
    def backward(ctx, g):
        h_post, f_out = ctx.saved_tensors
        need = ctx.needs_input_grad
        # (N, 1, C) @ (N, C, n): the row-vector form; (N, n, C) @ (N, C, 1) is the same product ~7x slower on CPU
        dh_post = torch.bmm(f_out.unsqueeze(-2), g.transpose(-1, -2)).squeeze(-2) if need[1] else None
        df = torch.bmm(h_post.unsqueeze(-2), g).squeeze(-2) if need[2] else None  # (N, 1, n) @ (N, n, C)
        return g, dh_post, df


def mhc_post_res_unchecked(x, f_out, h_post, h_res, out_dtype: torch.dtype | None = None):
    """`out_dtype`: the result's dtype when it is not x's (a layer mixes the float32 copy of 16-bit x_l)."""
    cd = _checks.compute_dtype(x.dtype)
    out_dtype = x.dtype if out_dtype is None else out_dtype
    N, (n, C) = math.prod(x.shape[:-2]), x.shape[-2:]
    xc = _checks.to_compute(x, "x (mhc_post_res)")
    xc = xc if xc.dim() == 3 else xc.reshape(N, n, C)  # a 3-D x (the modules') enters the bmm without a view
    y = torch.bmm(h_res.to(cd).reshape(N, n, n), xc)
    y = AddOuter.apply(y, h_post.to(cd).reshape(N, n), _checks.to_compute(f_out, "f_out").reshape(N, C))
    y = y.reshape(x.shape)
    if out_dtype == torch.float16:
        _checks.fits_float16(y, "mhc_post_res: the mixed streams H_res x + H_post^T f_out")
    return y.to(out_dtype)


def mhc_post_res(x: torch.Tensor, f_out: torch.Tensor, h_post: torch.Tensor, h_res: torch.Tensor) -> torch.Tensor:
    """x (..., n, C), f_out (..., C), h_post (..., n), h_res (..., n, n) -> (..., n, C)."""
    validate(x, f_out, h_post, h_res)
    return mhc_post_res_unchecked(x, f_out, h_post, h_res)
