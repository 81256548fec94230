"""Sinkhorn-Knopp projection in registers, P Eq. 9, with a backward that recomputes the iteration on-chip.

    M^0 = exp(L);  M^t = T_r(T_c(M^{t-1})), t = 1..t_max;  H_res = M^{t_max}       (column first, row last)
    with eps > 0:  H = T_r^eps(T_c(exp L) + eps), then t_max - 1 times T_r^eps(T_c^eps(.))

Everything runs in the log domain, u = log M: a normalisation is `u - log(sum exp(u) + eps)` along the column or
row axis, evaluated as `(u - m) - log(sum exp(u - m))` with m = max u (so logits of +-1e4 stay finite and no step
rounds at the scale of |m|), `+ eps` is `logaddexp(u, log eps)`. This is the same
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
from ._common import check_runnable, compute_dtype, interpret_mode, serialised_in_interpreter, tl_dtype

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
def _softplus(z):
    """log(1 + exp z) without overflow: +inf at z = +inf, 0 at z = -inf."""
    return tl.maximum(z, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(z)))


@triton.jit
def _normalise(u, AXIS: tl.constexpr, log_eps, HAS_EPS: tl.constexpr):
    """u - log(sum_AXIS exp(u) + eps): one T_c / T_r step, computed as `(u - m) - log s` with m = max u and
    s = sum exp(u - m), never `u - (m + log s)`, which rounds at the scale of |m| (issue 9 Sec. 1). The eps term is
    taken relative to the log-sum a = m + log s (the same rule as `mhc_ref.sinkhorn._normalise`):
    a < log eps: u - log eps - log(1 + exp(a - log eps));  else (u - m) - log s - log(1 + exp(log eps - a)).
    -inf (padding) lanes stay -inf; an all-padding lane gives no NaN."""
    m = tl.max(u, axis=AXIS, keep_dims=True)
    m = tl.where(m == float("-inf"), 0.0, m)
    s = tl.sum(tl.exp(u - m), axis=AXIS, keep_dims=True)  # >= 1 on every lane that holds a matrix entry
    log_s = tl.log(tl.where(s > 0, s, 1.0))
    out = (u - m) - log_s
    if HAS_EPS:
        a = m + log_s  # compared with log eps and used inside log(1 + exp(.)) only, where its rounding is harmless
        eps_side = u - log_eps - tl.log(1.0 + tl.exp(tl.minimum(a - log_eps, 0.0)))
        sum_side = out - tl.log(1.0 + tl.exp(tl.minimum(log_eps - a, 0.0)))
        out = tl.where(a < log_eps, eps_side, sum_side)
    return out


@triton.jit
def _norm_bwd(out, du_out, AXIS: tl.constexpr):
    """VJP of out = u - log(sum_AXIS exp(u) + eps):  du = du' - p * sum_AXIS(du'),  p = exp(out) = M / (sum + eps)
    (the step's own output, so no denominator is recomputed)."""
    return du_out - tl.exp(out) * tl.sum(du_out, axis=AXIS, keep_dims=True)


@triton.jit
def _pair0_fwd(u, valid, log_eps, COL: tl.constexpr, ROW: tl.constexpr, HAS_EPS: tl.constexpr):
    """The first pair: an exact column softmax, `+ eps`, then the row step (with eps)."""
    a = _normalise(u, COL, log_eps, False)
    if HAS_EPS:
        a = tl.where(valid, _logaddexp(a, log_eps), float("-inf"))
    return _normalise(a, ROW, log_eps, HAS_EPS)


@triton.jit
def _pair_fwd(u, log_eps, COL: tl.constexpr, ROW: tl.constexpr, HAS_EPS: tl.constexpr):
    """Pairs 2..t_max: T_r^eps(T_c^eps(u))."""
    return _normalise(_normalise(u, COL, log_eps, HAS_EPS), ROW, log_eps, HAS_EPS)


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
#   D = log(sum exp u + eps), has du = du' - p * sum(du') with p = exp(u') = exp(u - D), and `+ eps` (first pair
#   only) has du = du' * exp(a) / (exp(a) + eps) = du' * exp(-softplus(log eps - a)).
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
            # reverse pair q: u -> a (column step) -> b (row step)
            a = _normalise(u, COL, log_eps, HAS_EPS)
            du = _norm_bwd(_normalise(a, ROW, log_eps, HAS_EPS), du, ROW)
            du = _norm_bwd(a, du, COL)
    # reverse pair 0: u0 -> a (exact softmax) -> a2 = a + eps -> b (row step)
    a = _normalise(u0, COL, log_eps, False)
    a2 = a
    if HAS_EPS:
        a2 = tl.where(valid, _logaddexp(a, log_eps), float("-inf"))
    du = _norm_bwd(_normalise(a2, ROW, log_eps, HAS_EPS), du, ROW)
    if HAS_EPS:  # d(a2)/d(a) = exp(a) / (exp(a) + eps) = exp(-softplus(log eps - a)); 0 on padding lanes
        du = tl.where(valid, du * tl.exp(-_softplus(log_eps - a)), 0.0)
    return _norm_bwd(a, du, COL)


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
def _sinkhorn_fwd_kernel(L_ptr, H_ptr, N, t_max, log_eps_hi, log_eps_lo, n: tl.constexpr, NP: tl.constexpr,
                         HAS_EPS: tl.constexpr, ACC: tl.constexpr, BLOCK_T: tl.constexpr):
    offs, mask = _tile(N, n, NP, BLOCK_T)
    u = tl.load(L_ptr + offs, mask=mask, other=float("-inf")).to(ACC)  # (BLOCK_T, NP, NP)
    log_eps = tl.cast(log_eps_hi, ACC) + tl.cast(log_eps_lo, ACC)  # float32 halves: log eps to ~48 bits
    u = _sinkhorn_fwd(u, mask, t_max, log_eps, 1, 2, HAS_EPS)
    tl.store(H_ptr + offs, tl.exp(u).to(H_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["N", "t_max", "seg"])
def _sinkhorn_bwd_kernel(L_ptr, G_ptr, DL_ptr, N, t_max, seg, log_eps_hi, log_eps_lo, n: tl.constexpr, NP: tl.constexpr,
                         HAS_EPS: tl.constexpr, ACC: tl.constexpr, BLOCK_T: tl.constexpr):
    offs, mask = _tile(N, n, NP, BLOCK_T)
    u = tl.load(L_ptr + offs, mask=mask, other=float("-inf")).to(ACC)
    g = tl.load(G_ptr + offs, mask=mask, other=0.0).to(ACC)
    log_eps = tl.cast(log_eps_hi, ACC) + tl.cast(log_eps_lo, ACC)
    du = _sinkhorn_bwd(u, g, mask, t_max, seg, log_eps, 1, 2, HAS_EPS)
    tl.store(DL_ptr + offs, du.to(DL_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------------------------
def _log_eps(eps: float) -> tuple[float, float]:
    """log eps as two float32 halves (Triton passes float scalars as float32; float64 math needs the rest)."""
    value = math.log(eps) if eps > 0 else 0.0
    hi = float(torch.tensor(value, dtype=torch.float32))
    return hi, float(torch.tensor(value - hi, dtype=torch.float32))


@serialised_in_interpreter
def sinkhorn_forward(logits: torch.Tensor, t_max: int, eps: float) -> torch.Tensor:
    """logits (N, n, n) contiguous -> H_res (N, n, n) in logits' dtype."""
    N, n, _ = logits.shape
    acc = compute_dtype(logits.dtype)
    conf = cfg.choose("sinkhorn", n=n, C=1, tokens=N, t_max=t_max, interpret=interpret_mode())
    h = torch.empty_like(logits)
    if N:
        grid = (triton.cdiv(N, conf.block_t),)
        _sinkhorn_fwd_kernel[grid](logits, h, N, t_max, *_log_eps(eps), n=n, NP=triton.next_power_of_2(n),
                                   HAS_EPS=eps > 0, ACC=tl_dtype(acc), BLOCK_T=conf.block_t,
                                   num_warps=conf.num_warps)
    return h


@serialised_in_interpreter
def sinkhorn_backward(logits: torch.Tensor, g: torch.Tensor, t_max: int, eps: float,
                      seg: int | None = None) -> torch.Tensor:
    """d loss / d logits (N, n, n) in logits' dtype; `seg` overrides the config's recompute segment length."""
    N, n, _ = logits.shape
    acc = compute_dtype(logits.dtype)
    conf = cfg.choose("sinkhorn", n=n, C=1, tokens=N, t_max=t_max, interpret=interpret_mode())
    dl = torch.empty_like(logits)
    if N:
        grid = (triton.cdiv(N, conf.block_t),)
        _sinkhorn_bwd_kernel[grid](logits, g.contiguous(), dl, N, t_max, seg or conf.sinkhorn_seg, *_log_eps(eps), n=n,
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
    flat = logits.reshape(logits.numel() // (n * n), n, n)  # (N, n, n), a view of contiguous memory; N may be 0
    return sinkhorn_op(flat, t_max, float(eps)).reshape(logits.shape)
