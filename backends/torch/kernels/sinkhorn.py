"""Sinkhorn-Knopp projection in registers, P Eq. 9, with a backward that recomputes the iteration on-chip.

    M^0 = exp(L);  M^t = T_r(T_c(M^{t-1})), t = 1..t_max;  H_res = M^{t_max}       (column first, row last)
    with eps > 0:  H = T_r^eps(T_c(exp L) + eps), then t_max - 1 times T_r^eps(T_c^eps(.))

Everything runs in the log domain, u = log M: a normalisation is `u - log(sum exp(u) + eps)` along the column or
row axis (max-shifted, so logits of +-1e4 stay finite), `+ eps` is `logaddexp(u, log eps)`. This is the same
function as the linear iteration and the same formulation as `mhc_ref.sinkhorn`.

The @triton.jit helpers below work on a register tile `u` of any rank whose two matrix axes are the constexprs COL
(the axis a column step reduces over, i.e. the row index) and ROW; lanes outside the matrix hold -inf and stay -inf
(and get gradient 0). `mhc_coeffs` calls them on its coefficient tile; the standalone op `sinkhorn` of this file
runs them on (BLOCK_T, NP, NP) tiles of logits.

File layout: jit helpers -> forward kernel -> backward derivation and kernel -> launchers -> custom ops
(`torch.ops.mhc_triton.sinkhorn` with a fake implementation and registered autograd) -> public function.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..sinkhorn import validate as validate_sinkhorn
from . import config as cfg
from ._common import check_runnable, compute_dtype, interpret_mode, tl_dtype

NEG_INF = float("-inf")


# ---------------------------------------------------------------------------------------------------------------
# In-register building blocks (shared with mhc_coeffs)
# ---------------------------------------------------------------------------------------------------------------
@triton.jit
def _logaddexp(a, b):
    """log(exp a + exp b) without overflow; -inf when both are -inf (no NaN from -inf - -inf)."""
    mx = tl.maximum(a, b)
    mn = tl.minimum(a, b)
    mx_safe = tl.where(mx == float("-inf"), 0.0, mx)
    return mx + tl.log(1.0 + tl.exp(mn - mx_safe))


@triton.jit
def _log_den(u, AXIS: tl.constexpr, log_eps, HAS_EPS: tl.constexpr):
    """log(sum_AXIS exp(u) + eps) as a singleton axis; 0 for an all-padding lane (so -inf - 0 stays -inf)."""
    m = tl.max(u, axis=AXIS, keep_dims=True)
    m = tl.where(m == float("-inf"), 0.0, m)
    s = tl.sum(tl.exp(u - m), axis=AXIS, keep_dims=True)  # >= 1 on every lane that holds a matrix entry
    d = m + tl.log(tl.where(s > 0, s, 1.0))
    if HAS_EPS:
        d = _logaddexp(d, log_eps)
    return tl.where(s > 0, d, 0.0)


@triton.jit
def _norm_bwd(u, log_den, du_out, AXIS: tl.constexpr):
    """VJP of u' = u - log_den(u):  du = du' - p * sum_AXIS(du'),  p = exp(u - log_den) = M / (sum + eps)."""
    p = tl.exp(u - log_den)
    return du_out - p * tl.sum(du_out, axis=AXIS, keep_dims=True)


@triton.jit
def _pair0_fwd(u, valid, log_eps, COL: tl.constexpr, ROW: tl.constexpr, HAS_EPS: tl.constexpr):
    """The first pair: an exact column softmax, `+ eps`, then the row step (with eps)."""
    a = u - _log_den(u, COL, log_eps, False)
    if HAS_EPS:
        a = tl.where(valid, _logaddexp(a, log_eps), float("-inf"))
    return a - _log_den(a, ROW, log_eps, HAS_EPS)


@triton.jit
def _pair_fwd(u, log_eps, COL: tl.constexpr, ROW: tl.constexpr, HAS_EPS: tl.constexpr):
    """Pairs 2..t_max: T_r^eps(T_c^eps(u))."""
    a = u - _log_den(u, COL, log_eps, HAS_EPS)
    return a - _log_den(a, ROW, log_eps, HAS_EPS)


@triton.jit
def _sinkhorn_fwd(u, valid, t_max, log_eps, COL: tl.constexpr, ROW: tl.constexpr, HAS_EPS: tl.constexpr):
    """log H_res from log-domain logits u (-inf outside `valid`)."""
    u = _pair0_fwd(u, valid, log_eps, COL, ROW, HAS_EPS)
    for _ in range(1, t_max):
        u = _pair_fwd(u, log_eps, COL, ROW, HAS_EPS)
    return u


# ---------------------------------------------------------------------------------------------------------------
# Backward: derivation
#
#   States s_0 = L, s_{p+1} = pair_p(s_p), p = 0..t_max-1, log H = s_{t_max}. The VJP runs the pairs in reverse:
#   ds_{t_max} = g * H, ds_p = pair_p^T(s_p, ds_{p+1}); inside a pair every normalisation u' = u - D(u),
#   D = log(sum exp u + eps), has du = du' - p * sum(du') with p = exp(u - D), and `+ eps` (first pair only) has
#   du = du' * exp(a - logaddexp(a, log eps)).
#
#   The backward needs s_p in reverse order. Storing 2 t_max states per token in global memory is what this kernel
#   avoids: it keeps only the logits and recomputes. Plain recompute-from-s_1 costs ~t_max^2 / 2 pairs; with
#   checkpoint segments of SEG pairs (s_1, s_{1+SEG}, ... recomputed on the fly, never stored) it costs
#   ~t_max (SEG / 2 + t_max / (2 SEG)) pairs, minimal at SEG ~ sqrt(t_max) (~4x fewer at t_max = 20).
#   The recomputed states are bitwise the forward's (same code, same inputs), so the gradient is the exact VJP of
#   the unrolled iteration for every SEG.
# ---------------------------------------------------------------------------------------------------------------
@triton.jit
def _sinkhorn_bwd(u0, g, valid, t_max, seg, log_eps, COL: tl.constexpr, ROW: tl.constexpr,
                  HAS_EPS: tl.constexpr):
    """d loss / d logits from the logits u0 (-inf outside `valid`) and g = d loss / d H_res (0 outside)."""
    s1 = _pair0_fwd(u0, valid, log_eps, COL, ROW, HAS_EPS)
    uT = s1
    for _ in range(1, t_max):
        uT = _pair_fwd(uT, log_eps, COL, ROW, HAS_EPS)
    du = tl.where(valid, g * tl.exp(uT), 0.0)  # through H = exp(s_T)
    # pairs 1..t_max-1 in segments [start, end), last segment first
    nseg = tl.cdiv(t_max - 1, seg)
    for si in range(0, nseg):
        start = 1 + (nseg - 1 - si) * seg
        end = tl.minimum(start + seg, t_max)
        us = s1
        for _ in range(1, start):
            us = _pair_fwd(us, log_eps, COL, ROW, HAS_EPS)
        for qi in range(0, end - start):
            q = end - 1 - qi
            u = us
            for _ in range(start, q):
                u = _pair_fwd(u, log_eps, COL, ROW, HAS_EPS)
            # reverse pair q: u -> a (column step) -> a - D_row(a)
            d_col = _log_den(u, COL, log_eps, HAS_EPS)
            a = u - d_col
            du = _norm_bwd(a, _log_den(a, ROW, log_eps, HAS_EPS), du, ROW)
            du = _norm_bwd(u, d_col, du, COL)
    # reverse pair 0: u0 -> a (exact softmax) -> a2 = a + eps -> a2 - D_row(a2)
    d_col = _log_den(u0, COL, log_eps, False)
    a = u0 - d_col
    a2 = a
    if HAS_EPS:
        a2 = tl.where(valid, _logaddexp(a, log_eps), float("-inf"))
    du = _norm_bwd(a2, _log_den(a2, ROW, log_eps, HAS_EPS), du, ROW)
    if HAS_EPS:
        du = tl.where(valid, du * tl.exp(a - tl.where(valid, a2, 0.0)), 0.0)
    return _norm_bwd(u0, d_col, du, COL)


# ---------------------------------------------------------------------------------------------------------------
# Standalone op: kernels over (BLOCK_T, NP, NP) tiles of logits (N, n, n)
# ---------------------------------------------------------------------------------------------------------------
@triton.jit
def _tile(N, n: tl.constexpr, NP: tl.constexpr, BLOCK_T: tl.constexpr):
    """Offsets of this program's (BLOCK_T, NP, NP) tile in an (N, n, n) array and its mask."""
    t = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)[:, None, None]
    i = tl.arange(0, NP)[None, :, None]
    j = tl.arange(0, NP)[None, None, :]
    return t * (n * n) + i * n + j, (t < N) & (i < n) & (j < n)


@triton.jit(do_not_specialize=["N", "t_max"])
def _sinkhorn_fwd_kernel(L_ptr, H_ptr, N, t_max, log_eps, n: tl.constexpr, NP: tl.constexpr,
                         HAS_EPS: tl.constexpr, ACC: tl.constexpr, BLOCK_T: tl.constexpr):
    offs, mask = _tile(N, n, NP, BLOCK_T)
    u = tl.load(L_ptr + offs, mask=mask, other=float("-inf")).to(ACC)  # (BLOCK_T, NP, NP)
    u = _sinkhorn_fwd(u, mask, t_max, log_eps, 1, 2, HAS_EPS)
    tl.store(H_ptr + offs, tl.exp(u).to(H_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["N", "t_max", "seg"])
def _sinkhorn_bwd_kernel(L_ptr, G_ptr, DL_ptr, N, t_max, seg, log_eps, n: tl.constexpr, NP: tl.constexpr,
                         HAS_EPS: tl.constexpr, ACC: tl.constexpr, BLOCK_T: tl.constexpr):
    offs, mask = _tile(N, n, NP, BLOCK_T)
    u = tl.load(L_ptr + offs, mask=mask, other=float("-inf")).to(ACC)
    g = tl.load(G_ptr + offs, mask=mask, other=0.0).to(ACC)
    du = _sinkhorn_bwd(u, g, mask, t_max, seg, log_eps, 1, 2, HAS_EPS)
    tl.store(DL_ptr + offs, du.to(DL_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------------------------
def _log_eps(eps: float) -> float:
    return math.log(eps) if eps > 0 else 0.0


def sinkhorn_forward(logits: torch.Tensor, t_max: int, eps: float) -> torch.Tensor:
    """logits (N, n, n) contiguous -> H_res (N, n, n) in logits' dtype."""
    N, n, _ = logits.shape
    acc = compute_dtype(logits.dtype)
    conf = cfg.choose("sinkhorn", n=n, C=1, tokens=N, t_max=t_max, interpret=interpret_mode())
    h = torch.empty_like(logits)
    if N:
        grid = (triton.cdiv(N, conf.block_t),)
        _sinkhorn_fwd_kernel[grid](logits, h, N, t_max, _log_eps(eps), n=n, NP=triton.next_power_of_2(n),
                                   HAS_EPS=eps > 0, ACC=tl_dtype(acc), BLOCK_T=conf.block_t,
                                   num_warps=conf.num_warps)
    return h


def sinkhorn_backward(logits: torch.Tensor, g: torch.Tensor, t_max: int, eps: float,
                      seg: int | None = None) -> torch.Tensor:
    """d loss / d logits (N, n, n) in logits' dtype; `seg` overrides the config's recompute segment length."""
    N, n, _ = logits.shape
    acc = compute_dtype(logits.dtype)
    conf = cfg.choose("sinkhorn", n=n, C=1, tokens=N, t_max=t_max, interpret=interpret_mode())
    dl = torch.empty_like(logits)
    if N:
        grid = (triton.cdiv(N, conf.block_t),)
        _sinkhorn_bwd_kernel[grid](logits, g.contiguous(), dl, N, t_max, seg or conf.sinkhorn_seg, _log_eps(eps), n=n,
                                   NP=triton.next_power_of_2(n), HAS_EPS=eps > 0, ACC=tl_dtype(acc),
                                   BLOCK_T=conf.block_t, num_warps=conf.num_warps)
    return dl


# ---------------------------------------------------------------------------------------------------------------
# Custom ops (torch.library): opaque to torch.compile, which traces them through their fake implementations
# ---------------------------------------------------------------------------------------------------------------
@torch.library.custom_op("mhc_triton::sinkhorn", mutates_args=())
def sinkhorn_op(logits: torch.Tensor, t_max: int, eps: float) -> torch.Tensor:
    """H_res (N, n, n) from logits (N, n, n); the backward recomputes the iteration from the saved logits only."""
    return sinkhorn_forward(logits.contiguous(), t_max, eps)


@sinkhorn_op.register_fake
def _(logits, t_max, eps):
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


@torch.library.custom_op("mhc_triton::sinkhorn_backward", mutates_args=())
def sinkhorn_backward_op(logits: torch.Tensor, g: torch.Tensor, t_max: int, eps: float) -> torch.Tensor:
    return sinkhorn_backward(logits.contiguous(), g.to(logits.dtype).contiguous(), t_max, eps)


@sinkhorn_backward_op.register_fake
def _(logits, g, t_max, eps):
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    logits, t_max, eps = inputs
    ctx.save_for_backward(logits)
    ctx.t_max, ctx.eps = t_max, eps


def _backward(ctx, g):
    (logits,) = ctx.saved_tensors
    return sinkhorn_backward_op(logits, g, ctx.t_max, ctx.eps), None, None


sinkhorn_op.register_autograd(_backward, setup_context=_setup_context)


def sinkhorn(logits: torch.Tensor, *, t_max: int = 20, eps: float = 0.0) -> torch.Tensor:
    """H_res (..., n, n) = Sinkhorn-Knopp(exp(logits (..., n, n))), P Eq. 9; same dtype as logits, fp32 math
    for 16-bit logits."""
    validate_sinkhorn(logits, t_max, eps)
    check_runnable("logits", logits, "sinkhorn")
    n = logits.shape[-1]
    flat = logits.reshape(-1, n, n)  # (N, n, n), a view of contiguous memory
    return sinkhorn_op(flat, t_max, float(eps)).reshape(logits.shape)
