"""Residual mixing plus the scattered sublayer output, P Eq. 3, as one fused Triton kernel (P Table 2):

    y[t, i, c] = sum_j H_res[t, i, j] x[t, j, c] + H_post[t, i] f[t, c]
    x (N, n, C), f_out (N, C), H_post (N, n), H_res (N, n, n) -> y (N, n, C)       rows of H_res = output streams

Reads (n + 1) C elements (plus n^2 + n maps) and writes n C per token. Each program holds a (BLOCK_T, n, n,
BLOCK_C) product tile: loads coalesced along C, the stream axes padded to NP = next power of two >= n. 16-bit
activations are widened to float32 on load; y has x's dtype.

File layout: forward kernel -> launcher -> backward derivation and kernel -> launcher -> custom ops
(`torch.ops.mhc_triton.mhc_post_res` with a fake implementation and registered autograd) -> public function.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..mhc_post_res import validate
from . import config as cfg
from ._common import check_runnable, compute_dtype, interpret_mode, serialised_in_interpreter, tl_dtype

OP = "mhc_post_res"


@triton.jit
def _stream_tile(N, n: tl.constexpr, NP: tl.constexpr, BLOCK_T: tl.constexpr):
    """Token and stream indices of this program: t (BT, 1, 1), i (1, NP, 1), j (1, 1, NP)."""
    t = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)[:, None, None]
    i = tl.arange(0, NP)[None, :, None]
    j = tl.arange(0, NP)[None, None, :]
    return t, i, j


@triton.jit(do_not_specialize=["N", "C"])
def _post_res_fwd_kernel(X_ptr, F_ptr, HP_ptr, HR_ptr, Y_ptr, N, C, n: tl.constexpr, NP: tl.constexpr,
                         ACC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    t, i, j = _stream_tile(N, n, NP, BLOCK_T)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[None, None, :]  # (1, 1, BC)
    h_res = tl.load(HR_ptr + t * (n * n) + i * n + j, mask=(t < N) & (i < n) & (j < n), other=0.0).to(ACC)
    h_post = tl.load(HP_ptr + t * n + i, mask=(t < N) & (i < n), other=0.0).to(ACC)  # (BT, NP, 1)
    ti = (t < N) & (i < n)
    x = tl.load(X_ptr + (t * n + i) * C + c, mask=ti & (c < C), other=0.0).to(ACC)  # (BT, NP, BC), rows = j
    f = tl.load(F_ptr + t * C + c, mask=(t < N) & (c < C), other=0.0).to(ACC)  # (BT, 1, BC)
    y = tl.sum(h_res[:, :, :, None] * x[:, None, :, :], axis=2) + h_post * f  # (BT, NP, BC)
    tl.store(Y_ptr + (t * n + i) * C + c, y.to(Y_ptr.dtype.element_ty), mask=ti & (c < C))


@serialised_in_interpreter
def post_res_forward(x, f_out, h_post, h_res):
    """x (N, n, C), f_out (N, C), h_post (N, n), h_res (N, n, n), contiguous -> y (N, n, C) in x's dtype."""
    N, n, C = x.shape
    conf = cfg.choose(OP, n=n, C=C, tokens=N, interpret=interpret_mode())
    y = torch.empty_like(x)
    if N and C:
        grid = (triton.cdiv(N, conf.block_t), triton.cdiv(C, conf.block_c))
        _post_res_fwd_kernel[grid](x, f_out, h_post, h_res, y, N, C, n=n, NP=triton.next_power_of_2(n),
                                   ACC=tl_dtype(compute_dtype(x.dtype)), BLOCK_T=conf.block_t,
                                   BLOCK_C=conf.block_c, num_warps=conf.num_warps)
    return y


# ---------------------------------------------------------------------------------------------------------------
# Backward: derivation
#
#   y_i = sum_j H_ij x_j + h_i f  =>  dx_j   = sum_i H_ij g_i        (H^T g, per channel)
#                                     df     = sum_i h_i g_i          (per channel)
#                                     dH_ij  = sum_c g_i[c] x_j[c]    (a reduction over C)
#                                     dh_i   = sum_c g_i[c] f[c]      (a reduction over C)
#   One program per token block walks C in chunks: it reads g, x, f once, writes dx and df, and keeps dH and dh in
#   registers until the end; no atomics, no second pass.
# ---------------------------------------------------------------------------------------------------------------
@triton.jit(do_not_specialize=["N", "C"])
def _post_res_bwd_kernel(X_ptr, F_ptr, HP_ptr, HR_ptr, G_ptr, DX_ptr, DF_ptr, DHP_ptr, DHR_ptr, N, C,
                         n: tl.constexpr, NP: tl.constexpr, ACC: tl.constexpr, BLOCK_T: tl.constexpr,
                         BLOCK_C: tl.constexpr):
    t, i, j = _stream_tile(N, n, NP, BLOCK_T)
    tij = (t < N) & (i < n) & (j < n)
    ti = (t < N) & (i < n)
    h_res = tl.load(HR_ptr + t * (n * n) + i * n + j, mask=tij, other=0.0).to(ACC)  # (BT, NP, NP)
    h_post = tl.load(HP_ptr + t * n + i, mask=ti, other=0.0).to(ACC)  # (BT, NP, 1)
    d_res = tl.zeros((BLOCK_T, NP, NP), dtype=ACC)
    d_post = tl.zeros((BLOCK_T, NP, 1), dtype=ACC)
    cc = tl.arange(0, BLOCK_C)[None, None, :]
    for c0 in range(0, C, BLOCK_C):
        c = c0 + cc  # (1, 1, BC)
        s_off = (t * n + i) * C + c  # (BT, NP, BC) offsets of a stream tensor
        s_mask = ti & (c < C)
        g = tl.load(G_ptr + s_off, mask=s_mask, other=0.0).to(ACC)  # (BT, NP, BC), rows = i
        x = tl.load(X_ptr + s_off, mask=s_mask, other=0.0).to(ACC)  # rows = j
        f = tl.load(F_ptr + t * C + c, mask=(t < N) & (c < C), other=0.0).to(ACC)  # (BT, 1, BC)
        dx = tl.sum(h_res[:, :, :, None] * g[:, :, None, :], axis=1)  # (BT, NP, BC): sum over i, rows = j
        tl.store(DX_ptr + s_off, dx.to(DX_ptr.dtype.element_ty), mask=s_mask)
        df = tl.sum(h_post * g, axis=1, keep_dims=True)  # (BT, 1, BC)
        tl.store(DF_ptr + t * C + c, df.to(DF_ptr.dtype.element_ty), mask=(t < N) & (c < C))
        d_res += tl.sum(g[:, :, None, :] * x[:, None, :, :], axis=3)
        d_post += tl.sum(g * f, axis=2, keep_dims=True)
    tl.store(DHR_ptr + t * (n * n) + i * n + j, d_res.to(DHR_ptr.dtype.element_ty), mask=tij)
    tl.store(DHP_ptr + t * n + i, d_post.to(DHP_ptr.dtype.element_ty), mask=ti)


@serialised_in_interpreter
def post_res_backward(x, f_out, h_post, h_res, g):
    """(dx, df_out, dh_post, dh_res), each in its input's dtype."""
    N, n, C = x.shape
    conf = cfg.choose(OP, n=n, C=C, tokens=N, interpret=interpret_mode())
    dx, df = torch.empty_like(x), torch.empty_like(f_out)
    dhp, dhr = torch.empty_like(h_post), torch.empty_like(h_res)
    if N:
        _post_res_bwd_kernel[(triton.cdiv(N, conf.block_t),)](
            x, f_out, h_post, h_res, g.contiguous(), dx, df, dhp, dhr, N, C, n=n, NP=triton.next_power_of_2(n),
            ACC=tl_dtype(compute_dtype(x.dtype)), BLOCK_T=conf.block_t, BLOCK_C=conf.block_c,
            num_warps=conf.num_warps)
    return dx, df, dhp, dhr


# ---------------------------------------------------------------------------------------------------------------
# Custom ops (torch.library): opaque to torch.compile, which traces them through their fake implementations
# ---------------------------------------------------------------------------------------------------------------
@torch.library.custom_op("mhc_triton::mhc_post_res", mutates_args=())
def post_res_op(x: torch.Tensor, f_out: torch.Tensor, h_post: torch.Tensor, h_res: torch.Tensor) -> torch.Tensor:
    """y (N, n, C) from x (N, n, C), f_out (N, C), h_post (N, n), h_res (N, n, n)."""
    return post_res_forward(x.contiguous(), f_out.contiguous(), h_post.contiguous(), h_res.contiguous())


@post_res_op.register_fake
def _(x, f_out, h_post, h_res):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("mhc_triton::mhc_post_res_backward", mutates_args=())
def post_res_backward_op(x: torch.Tensor, f_out: torch.Tensor, h_post: torch.Tensor, h_res: torch.Tensor,
                         g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return post_res_backward(x.contiguous(), f_out.contiguous(), h_post.contiguous(), h_res.contiguous(),
                             g.to(x.dtype).contiguous())


@post_res_backward_op.register_fake
def _(x, f_out, h_post, h_res, g):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (x, f_out, h_post, h_res))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, g):
    return post_res_backward_op(*ctx.saved_tensors, g)


post_res_op.register_autograd(_backward, setup_context=_setup_context)


def mhc_post_res_unchecked(x, f_out, h_post, h_res):
    for name, t in (("x", x), ("f_out", f_out), ("h_post", h_post), ("h_res", h_res)):
        check_runnable(name, t, OP)
    n, C = x.shape[-2:]
    N = x.numel() // (n * C)  # explicit, not -1: zero tokens give an empty result
    y = post_res_op(x.reshape(N, n, C), f_out.reshape(N, C), h_post.reshape(N, n), h_res.reshape(N, n, n))
    return y.reshape(x.shape)


def mhc_post_res(x: torch.Tensor, f_out: torch.Tensor, h_post: torch.Tensor, h_res: torch.Tensor) -> torch.Tensor:
    """x (..., n, C), f_out (..., C), h_post (..., n), h_res (..., n, n) -> y (..., n, C) in x's dtype."""
    validate(x, f_out, h_post, h_res)
    return mhc_post_res_unchecked(x, f_out, h_post, h_res)
