"""The sublayer input, the H_pre x_l term of P Eq. 3, as a Triton kernel:

    y[t, c] = sum_k H_pre[t, k] x[t, k, c]          x (N, n, C), H_pre (N, n) -> y (N, C)

Memory-bound: reads nC + n, writes C elements per token. Loads are coalesced along C; the n streams of a token are
one padded register axis (NP = next power of two >= n). 16-bit x is widened to float32 on load; y has x's dtype.

File layout: forward kernel -> launcher -> backward derivation and kernel -> launcher -> custom ops
(`torch.ops.mhc_triton.mhc_pre` with a fake implementation and registered autograd) -> public function.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..mhc_pre import validate
from . import config as cfg
from ._common import check_runnable, compute_dtype, interpret_mode, serialised_in_interpreter, tl_dtype

OP = "mhc_pre"


@triton.jit(do_not_specialize=["N", "C"])
def _pre_fwd_kernel(X_ptr, H_ptr, Y_ptr, N, C, n: tl.constexpr, NP: tl.constexpr, ACC: tl.constexpr,
                    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    t = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)[:, None, None]  # (BT, 1, 1)
    k = tl.arange(0, NP)[None, :, None]  # (1, NP, 1)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[None, None, :]  # (1, 1, BC)
    x = tl.load(X_ptr + (t * n + k) * C + c, mask=(t < N) & (k < n) & (c < C), other=0.0).to(ACC)  # (BT, NP, BC)
    h = tl.load(H_ptr + t * n + k, mask=(t < N) & (k < n), other=0.0).to(ACC)  # (BT, NP, 1)
    y = tl.sum(h * x, axis=1, keep_dims=True)  # (BT, 1, BC)
    tl.store(Y_ptr + t * C + c, y.to(Y_ptr.dtype.element_ty), mask=(t < N) & (c < C))


@serialised_in_interpreter
def pre_forward(x: torch.Tensor, h_pre: torch.Tensor) -> torch.Tensor:
    """x (N, n, C), h_pre (N, n), both contiguous -> y (N, C) in x's dtype."""
    N, n, C = x.shape
    conf = cfg.choose(OP, n=n, C=C, tokens=N, interpret=interpret_mode())
    y = x.new_empty((N, C))
    if N and C:
        grid = (triton.cdiv(N, conf.block_t), triton.cdiv(C, conf.block_c))
        _pre_fwd_kernel[grid](x, h_pre, y, N, C, n=n, NP=triton.next_power_of_2(n),
                              ACC=tl_dtype(compute_dtype(x.dtype)), BLOCK_T=conf.block_t, BLOCK_C=conf.block_c,
                              num_warps=conf.num_warps)
    return y


# ---------------------------------------------------------------------------------------------------------------
# Backward: derivation
#
#   y = sum_k h_k x_k  =>  dx[t, k, c] = h[t, k] g[t, c]   (an outer product, written once)
#                          dh[t, k]    = sum_c x[t, k, c] g[t, c]   (a reduction over C)
#   One program per token block walks C in chunks: it reads x and g once, writes dx, and keeps the dh partial sums
#   in registers, so the reduction needs no atomics and no second pass.
# ---------------------------------------------------------------------------------------------------------------
@triton.jit(do_not_specialize=["N", "C"])
def _pre_bwd_kernel(X_ptr, H_ptr, G_ptr, DX_ptr, DH_ptr, N, C, n: tl.constexpr, NP: tl.constexpr,
                    ACC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    t = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)[:, None, None]  # (BT, 1, 1)
    k = tl.arange(0, NP)[None, :, None]  # (1, NP, 1)
    tk = (t < N) & (k < n)
    h = tl.load(H_ptr + t * n + k, mask=tk, other=0.0).to(ACC)  # (BT, NP, 1)
    dh = tl.zeros((BLOCK_T, NP, 1), dtype=ACC)
    cc = tl.arange(0, BLOCK_C)[None, None, :]
    for c0 in range(0, C, BLOCK_C):
        c = c0 + cc  # (1, 1, BC)
        g = tl.load(G_ptr + t * C + c, mask=(t < N) & (c < C), other=0.0).to(ACC)  # (BT, 1, BC)
        x_off = (t * n + k) * C + c
        x = tl.load(X_ptr + x_off, mask=tk & (c < C), other=0.0).to(ACC)  # (BT, NP, BC)
        tl.store(DX_ptr + x_off, (h * g).to(DX_ptr.dtype.element_ty), mask=tk & (c < C))
        dh += tl.sum(x * g, axis=2, keep_dims=True)
    tl.store(DH_ptr + t * n + k, dh.to(DH_ptr.dtype.element_ty), mask=tk)


@serialised_in_interpreter
def pre_backward(x, h_pre, g):
    """(dx (N, n, C) in x's dtype, dh_pre (N, n) in h_pre's dtype)."""
    N, n, C = x.shape
    conf = cfg.choose(OP, n=n, C=C, tokens=N, interpret=interpret_mode())
    dx = torch.empty_like(x)
    dh = torch.empty_like(h_pre)
    if N:
        _pre_bwd_kernel[(triton.cdiv(N, conf.block_t),)](
            x, h_pre, g.contiguous(), dx, dh, N, C, n=n, NP=triton.next_power_of_2(n),
            ACC=tl_dtype(compute_dtype(x.dtype)), BLOCK_T=conf.block_t, BLOCK_C=conf.block_c,
            num_warps=conf.num_warps)
    return dx, dh


# ---------------------------------------------------------------------------------------------------------------
# Custom ops (torch.library): opaque to torch.compile, which traces them through their fake implementations
# ---------------------------------------------------------------------------------------------------------------
@torch.library.custom_op("mhc_triton::mhc_pre", mutates_args=())
def pre_op(x: torch.Tensor, h_pre: torch.Tensor) -> torch.Tensor:
    """y (N, C) from x (N, n, C), h_pre (N, n)."""
    return pre_forward(x.contiguous(), h_pre.contiguous())


@pre_op.register_fake
def _(x, h_pre):
    return x.new_empty((x.shape[0], x.shape[2]))


@torch.library.custom_op("mhc_triton::mhc_pre_backward", mutates_args=())
def pre_backward_op(x: torch.Tensor, h_pre: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return pre_backward(x.contiguous(), h_pre.contiguous(), g.to(x.dtype).contiguous())


@pre_backward_op.register_fake
def _(x, h_pre, g):
    return torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(
        h_pre, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, g):
    return pre_backward_op(*ctx.saved_tensors, g)


pre_op.register_autograd(_backward, setup_context=_setup_context)


def mhc_pre_unchecked(x: torch.Tensor, h_pre: torch.Tensor) -> torch.Tensor:
    check_runnable("x", x, OP)
    check_runnable("h_pre", h_pre, OP)
    n, C = x.shape[-2:]
    N = x.numel() // (n * C)  # explicit, not -1: zero tokens give an empty result
    y = pre_op(x.reshape(N, n, C), h_pre.reshape(N, n))
    return y.reshape(*x.shape[:-2], C)


def mhc_pre(x: torch.Tensor, h_pre: torch.Tensor) -> torch.Tensor:
    """x (..., n, C), h_pre (..., n) -> y (..., C) in x's dtype (float32 math for 16-bit x)."""
    validate(x, h_pre)
    return mhc_pre_unchecked(x, h_pre)
