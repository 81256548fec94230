"""The coefficient path of mHC as one fused kernel per token block, P Eqs. 7-9 in the fused form of Eqs. 14-19:

    x_bar  = x.reshape(N, n*C)                  stream-major: x_bar[k*C + c] = x[k, c]
    r      = sqrt(mean(x_bar^2) + rms_eps)    (scaled by max|x_bar| first: no overflow)  (15)
    m      = (x_bar @ phi) / r                  phi (n*C, n^2+2n), columns [pre n | post n | res n^2]   (14, 16)
    H_pre  = sigmoid(alpha[0] m[:n]    + b[:n])    + pre_eps                          (17)
    H_post = post_scale * sigmoid(alpha[1] m[n:2n] + b[n:2n])                          (18)
    H_res  = sinkhorn(mat(alpha[2] m[2n:] + b[2n:]))                                   (19)

The coefficient tile. The n^2 + 2n columns, in the spec's order, are an (n + 2, n) row-major matrix: column
`r*n + j` is tile entry (r, j); row 0 is pre, row 1 is post, rows 2..n+1 are the residual logits v[(r-2)*n + j].
The kernel holds them as one (BLOCK_T, RP, NP) register tile (RP, NP powers of two >= n + 2, n; padding lanes
masked), so one `tl.dot` per chunk of x_bar fills the whole tile and no slicing of registers is needed. In
row_major layout the residual rows are H's rows; in col_major (H[i, j] = v[j*n + i]) they are H's columns, so the
Sinkhorn runs on the same tile with its column and row axes swapped.

One pass over x per token block: the x_bar chunk feeds both the projection (tl.dot) and the square-sum. Sigmoids and
the whole Sinkhorn iteration then run in registers. Saved for the backward: x (an input) and per token m (n^2 + 2n
floats) and r (1 float); no Sinkhorn state.

File layout: forward kernel -> launcher -> backward derivation -> backward kernels -> launcher -> custom ops
(`torch.ops.mhc_triton.mhc_coeffs` with a fake implementation and registered autograd) -> public function.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .. import _checks
from ..mhc_coeffs import validate, validate_options
from . import config as cfg
from ._common import check_runnable, compute_dtype, interpret_mode, serialised_in_interpreter, tl_dtype
from .sinkhorn import _sinkhorn_bwd, _sinkhorn_fwd

OP = "mhc_coeffs"


@triton.jit
def _scalar(hi, lo, ACC: tl.constexpr):
    """A float option passed as two float32 halves (Triton scalars are float32): exact enough for float64 math."""
    return tl.cast(hi, ACC) + tl.cast(lo, ACC)


@triton.jit
def _dot16(a, b, ACC: tl.constexpr, WIDEN: tl.constexpr):
    """a @ b for 16-bit a, b with float32 accumulation. The products are exact in float32 either way; WIDEN does the
    same product in float32 (Triton's interpreter mis-multiplies 16-bit dots)."""
    if WIDEN:
        return tl.dot(a.to(ACC), b.to(ACC), input_precision="ieee")
    else:
        return tl.dot(a, b, out_dtype=ACC)


@triton.jit
def _sigmoid(z):
    """1 / (1 + exp(-z)) without overflow for large |z|."""
    e = tl.exp(-tl.abs(z))
    return tl.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@triton.jit
def _coeff_tile(N, n: tl.constexpr, NP: tl.constexpr, RP: tl.constexpr, BLOCK_T: tl.constexpr):
    """Token, row and column indices of this program's (BLOCK_T, RP, NP) coefficient tile and its masks."""
    t = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)[:, None, None]
    rr = tl.arange(0, RP)[None, :, None]
    jj = tl.arange(0, NP)[None, None, :]
    in_tile = (t < N) & (rr < n + 2) & (jj < n)  # every column of phi / entry of m
    is_res = in_tile & (rr >= 2)  # the residual logits
    return t, rr, jj, in_tile, is_res


@triton.jit
def _res_offsets(t, rr, jj, n: tl.constexpr, COL_MAJOR: tl.constexpr):
    """Offsets into H_res (N, n, n) of the residual tile entries (rows rr >= 2)."""
    if COL_MAJOR:
        return t * (n * n) + jj * n + (rr - 2)  # tile entry (r, j) = v[(r-2)*n + j] = H[j, r-2]
    else:
        return t * (n * n) + (rr - 2) * n + jj  # H[r-2, j]


# ---------------------------------------------------------------------------------------------------------------
# Forward kernel
# ---------------------------------------------------------------------------------------------------------------
@triton.jit(do_not_specialize=["N", "D", "t_max"])
def _coeffs_fwd_kernel(
    X_ptr, PHI_ptr, ALPHA_ptr, B_ptr,  # x (N, D), phi (D, n^2+2n), alpha (3,), b (n^2+2n,)
    HPRE_ptr, HPOST_ptr, HRES_ptr, M_ptr, R_ptr,  # outputs (N, n), (N, n), (N, n, n); saved m (N, n^2+2n), r (N,)
    N, D, t_max,
    root_eps_hi, root_eps_lo, pre_eps_hi, pre_eps_lo, post_scale_hi, post_scale_lo, log_eps_hi, log_eps_lo,
    n: tl.constexpr, NP: tl.constexpr, RP: tl.constexpr, COL_MAJOR: tl.constexpr, HAS_EPS: tl.constexpr,
    ACC: tl.constexpr, DOT: tl.constexpr, WIDEN: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr,
):
    W: tl.constexpr = RP * NP
    M: tl.constexpr = n * n + 2 * n
    pid = tl.program_id(0)
    # projection and square-sum in one pass over x_bar
    t2 = pid.to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)[:, None]  # (BLOCK_T, 1)
    w = tl.arange(0, W)[None, :]  # (1, W) flattened tile column
    col = (w // NP) * n + (w % NP)  # its phi column
    col_ok = ((w // NP) < n + 2) & ((w % NP) < n)
    kk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_T, W), dtype=ACC)
    # r = sqrt(mean(x_bar^2) + rms_eps) scale-safely: s = running max(|x|, sqrt(rms_eps)), ss = sum (x / s)^2,
    # rescaled when s grows, r = s sqrt(ss / D + (sqrt(rms_eps) / s)^2); x^2 itself would overflow at |x| ~ 1e19
    # in float32. s = 0 (an all-zero token with rms_eps = 0, refused by the launcher's check) gives r = 0.
    root_eps = _scalar(root_eps_hi, root_eps_lo, ACC)
    s = tl.zeros((BLOCK_T,), dtype=ACC) + root_eps
    ss = tl.zeros((BLOCK_T,), dtype=ACC)
    for k0 in range(0, D, BLOCK_K):
        k = k0 + kk
        xk = tl.load(X_ptr + t2 * D + k[None, :], mask=(t2 < N) & (k[None, :] < D), other=0.0)  # (BLOCK_T, BLOCK_K)
        pk = tl.load(PHI_ptr + k[:, None] * M + col, mask=(k[:, None] < D) & col_ok, other=0.0)  # (BLOCK_K, W)
        xa = xk.to(ACC)
        s_new = tl.maximum(s, tl.max(tl.abs(xa), axis=1))
        s_safe = tl.where(s_new > 0, s_new, 1.0)
        y = xa / s_safe[:, None]
        ratio = s / s_safe
        ss = ss * ratio * ratio + tl.sum(y * y, axis=1)
        s = s_new
        if DOT == 0:  # float32 / float64
            acc += tl.dot(xa, pk.to(ACC), input_precision="ieee")
        elif DOT == 1:  # 16-bit x and phi: exact products, float32 accumulation
            acc += _dot16(xk, pk.to(xk.dtype), ACC, WIDEN)
        else:  # 16-bit x, float32 phi = hi + lo, both in x's dtype: two exact-product dots, ~16-bit phi
            p_hi = pk.to(xk.dtype)
            p_lo = (pk - p_hi.to(pk.dtype)).to(xk.dtype)
            acc += _dot16(xk, p_hi, ACC, WIDEN) + _dot16(xk, p_lo, ACC, WIDEN)
    e = root_eps / tl.where(s > 0, s, 1.0)
    r = s * tl.sqrt(ss / D + e * e)  # (BLOCK_T,)
    r_div = tl.where(pid.to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T) < N, r, 1.0)  # padding tokens: no 0/0
    m = tl.reshape(acc / r_div[:, None], (BLOCK_T, RP, NP))

    t, rr, jj, in_tile, is_res = _coeff_tile(N, n, NP, RP, BLOCK_T)
    tl.store(M_ptr + t * M + rr * n + jj, m, mask=in_tile)
    t1 = pid.to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    tl.store(R_ptr + t1, r, mask=t1 < N)

    scale = tl.where(rr == 0, tl.load(ALPHA_ptr).to(ACC),
                     tl.where(rr == 1, tl.load(ALPHA_ptr + 1).to(ACC), tl.load(ALPHA_ptr + 2).to(ACC)))
    bias = tl.load(B_ptr + rr * n + jj, mask=(rr < n + 2) & (jj < n), other=0.0).to(ACC)
    z = scale * m + bias  # (BLOCK_T, RP, NP) logits of all three maps
    sig = _sigmoid(z)
    h_pre = sig + _scalar(pre_eps_hi, pre_eps_lo, ACC)
    h_post = _scalar(post_scale_hi, post_scale_lo, ACC) * sig
    tl.store(HPRE_ptr + t * n + rr * 0 + jj, h_pre.to(HPRE_ptr.dtype.element_ty), mask=in_tile & (rr == 0))
    tl.store(HPOST_ptr + t * n + rr * 0 + jj, h_post.to(HPOST_ptr.dtype.element_ty), mask=in_tile & (rr == 1))

    COL: tl.constexpr = 2 if COL_MAJOR else 1  # the axis a column step of H reduces over
    ROW: tl.constexpr = 1 if COL_MAJOR else 2
    u = tl.where(is_res, z, float("-inf"))
    u = _sinkhorn_fwd(u, is_res, t_max, _scalar(log_eps_hi, log_eps_lo, ACC), COL, ROW, HAS_EPS)
    tl.store(HRES_ptr + _res_offsets(t, rr, jj, n, COL_MAJOR), tl.exp(u).to(HRES_ptr.dtype.element_ty),
             mask=is_res)


# ---------------------------------------------------------------------------------------------------------------
# Forward launcher
# ---------------------------------------------------------------------------------------------------------------
def _split(value: float) -> tuple[float, float]:
    """value = hi + lo with hi, lo float32 (the kernels' scalar type), ~48 significant bits."""
    hi = float(torch.tensor(value, dtype=torch.float32))
    return hi, float(torch.tensor(value - hi, dtype=torch.float32))


def _tile_dims(n: int) -> tuple[int, int]:
    """(RP, NP): the coefficient tile is RP x NP >= (n + 2) x n, at least 16 entries (tl.dot's minimum width)."""
    NP = triton.next_power_of_2(n)
    return cfg.coeff_width(n) // NP, NP


def _dot_mode(x: torch.Tensor, phi: torch.Tensor) -> int:
    """How the forward projection multiplies (a numerics choice made by dtype, not a performance knob):
    0: float32 / float64 IEEE products; 1: x and phi 16-bit, exact products on the tensor cores, float32 sums;
    2: bfloat16 x with float32 phi (the modules' mixed precision): phi = hi + lo split into two bfloat16 parts and
    two exact-product dots, i.e. phi to ~16 significant bits, far below the activations' own 8-bit rounding."""
    if x.dtype in _checks.LOW_PRECISION and phi.dtype == x.dtype:
        return 1
    if x.dtype == torch.bfloat16 and phi.dtype == torch.float32:
        return 2
    return 0


@serialised_in_interpreter
def coeffs_forward(x, phi, alpha, b, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, col_major):
    """x (N, n, C) contiguous -> (h_pre (N, n), h_post (N, n), h_res (N, n, n), m (N, n^2+2n), r (N,)), all in the
    compute dtype (float32, or float64 for float64 x)."""
    N, n, C = x.shape
    acc = compute_dtype(x.dtype)
    RP, NP = _tile_dims(n)
    conf = cfg.choose(OP, n=n, C=C, tokens=N, t_max=t_max, interpret=interpret_mode())
    h_pre = x.new_empty((N, n), dtype=acc)
    h_post = x.new_empty((N, n), dtype=acc)
    h_res = x.new_empty((N, n, n), dtype=acc)
    m = x.new_empty((N, n * n + 2 * n), dtype=acc)
    r = x.new_empty((N,), dtype=acc)
    if N:
        grid = (triton.cdiv(N, conf.block_t),)
        _coeffs_fwd_kernel[grid](
            x, phi, alpha, b, h_pre, h_post, h_res, m, r, N, n * C, t_max,
            *_split(math.sqrt(rms_eps)), *_split(pre_eps), *_split(post_scale),
            *_split(math.log(sinkhorn_eps) if sinkhorn_eps > 0 else 0.0),
            n=n, NP=NP, RP=RP, COL_MAJOR=col_major, HAS_EPS=sinkhorn_eps > 0, ACC=tl_dtype(acc),
            DOT=_dot_mode(x, phi), WIDEN=interpret_mode(), BLOCK_T=conf.block_t, BLOCK_K=conf.block_k,
            num_warps=conf.num_warps, num_stages=conf.num_stages,
        )
    return h_pre, h_post, h_res, m, r


# ---------------------------------------------------------------------------------------------------------------
# Backward: derivation
#
#   Per token, with z = scale * m + b (scale = alpha[0], alpha[1], alpha[2] on the pre, post, res columns):
#     dz_pre  = g_pre  * s (1 - s),               s = sigmoid(z_pre)
#     dz_post = g_post * post_scale * s (1 - s),  s = sigmoid(z_post)
#     dz_res  = sinkhorn VJP of g_res at the residual logits (recomputed on-chip, see sinkhorn.py)
#     dm      = dz * scale
#   Parameter gradients of scale and bias (reductions over tokens):
#     d alpha[g] = sum_tokens sum_{columns of group g} dz * m,   d b = sum_tokens dz
#   The projection m = p / r with p = x_bar @ phi, r = sqrt(mean(x_bar^2) + rms_eps), D = n*C:
#     dp = dm / r,  dr = -sum(dm * m) / r,  d r / d x_bar = x_bar / (D r)
#     dx_bar = dp @ phi^T + (dr / (D r)) * x_bar,      d phi = x_bar^T @ dp  (a reduction over tokens)
#
#   Kernel 1 (one program per token block) computes dz, dm, dp and dx in one pass over x and phi and writes dz
#   (N, n^2+2n). d b and d alpha are then two small reductions of dz and dz * m over tokens, done by torch in the
#   reference's order (per column over tokens, then per group). Kernel 2 reduces d phi = x_bar^T dp over tokens,
#   with dp = dz * scale / r rebuilt from dz: one program per (chunk of n*C, token range), partials
#   (splits, n*C, n^2+2n) summed by torch. No atomics: the result is bitwise reproducible.
# ---------------------------------------------------------------------------------------------------------------
@triton.jit(do_not_specialize=["N", "D", "t_max", "seg"])
def _coeffs_bwd_kernel(
    X_ptr, PHI_ptr, ALPHA_ptr, B_ptr, M_ptr, R_ptr,  # inputs and saved m, r
    GPRE_ptr, GPOST_ptr, GRES_ptr,  # cotangents (N, n), (N, n), (N, n, n)
    DX_ptr, DZ_ptr,  # outputs dx (N, D), dz (N, n^2+2n)
    N, D, t_max, seg,
    post_scale_hi, post_scale_lo, log_eps_hi, log_eps_lo,
    n: tl.constexpr, NP: tl.constexpr, RP: tl.constexpr, COL_MAJOR: tl.constexpr, HAS_EPS: tl.constexpr,
    ACC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr,
):
    W: tl.constexpr = RP * NP
    M: tl.constexpr = n * n + 2 * n
    pid = tl.program_id(0)
    t, rr, jj, in_tile, is_res = _coeff_tile(N, n, NP, RP, BLOCK_T)
    m = tl.load(M_ptr + t * M + rr * n + jj, mask=in_tile, other=0.0)  # (BLOCK_T, RP, NP)
    t1 = pid.to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    r = tl.load(R_ptr + t1, mask=t1 < N, other=1.0)  # (BLOCK_T,)
    scale = tl.where(rr == 0, tl.load(ALPHA_ptr).to(ACC),
                     tl.where(rr == 1, tl.load(ALPHA_ptr + 1).to(ACC), tl.load(ALPHA_ptr + 2).to(ACC)))
    bias = tl.load(B_ptr + rr * n + jj, mask=(rr < n + 2) & (jj < n), other=0.0).to(ACC)
    z = scale * m + bias

    # sigmoid rows
    sig = _sigmoid(z)
    g_pre = tl.load(GPRE_ptr + t * n + rr * 0 + jj, mask=in_tile & (rr == 0), other=0.0).to(ACC)
    g_post = tl.load(GPOST_ptr + t * n + rr * 0 + jj, mask=in_tile & (rr == 1), other=0.0).to(ACC)
    post_scale = _scalar(post_scale_hi, post_scale_lo, ACC)
    dz = (g_pre + post_scale * g_post) * sig * (1.0 - sig)  # each lane holds at most one of the two
    # Sinkhorn rows
    COL: tl.constexpr = 2 if COL_MAJOR else 1
    ROW: tl.constexpr = 1 if COL_MAJOR else 2
    g_res = tl.load(GRES_ptr + _res_offsets(t, rr, jj, n, COL_MAJOR), mask=is_res, other=0.0).to(ACC)
    u = tl.where(is_res, z, float("-inf"))
    dz_res = _sinkhorn_bwd(u, g_res, is_res, t_max, seg, _scalar(log_eps_hi, log_eps_lo, ACC), COL, ROW, HAS_EPS)
    dz = tl.where(rr >= 2, dz_res, dz)
    dz = tl.where(in_tile, dz, 0.0)

    tl.store(DZ_ptr + t * M + rr * n + jj, dz, mask=in_tile)

    # projection backward
    dm = dz * scale
    dp = dm / r[:, None, None]
    dr = -tl.sum(tl.sum(dm * m, axis=2), axis=1) / r  # (BLOCK_T,)
    dp2 = tl.reshape(dp, (BLOCK_T, W))
    t2 = t1[:, None]
    w = tl.arange(0, W)[:, None]  # (W, 1)
    col = (w // NP) * n + (w % NP)
    col_ok = ((w // NP) < n + 2) & ((w % NP) < n)
    kk = tl.arange(0, BLOCK_K)
    for k0 in range(0, D, BLOCK_K):
        k = k0 + kk
        x_mask = (t2 < N) & (k[None, :] < D)
        xk = tl.load(X_ptr + t2 * D + k[None, :], mask=x_mask, other=0.0).to(ACC)  # (BLOCK_T, BLOCK_K)
        pT = tl.load(PHI_ptr + k[None, :] * M + col, mask=col_ok & (k[None, :] < D), other=0.0).to(ACC)  # (W, BK)
        dx = tl.dot(dp2, pT, input_precision="ieee") + dr[:, None] * (xk / (D * r[:, None]))
        tl.store(DX_ptr + t2 * D + k[None, :], dx.to(DX_ptr.dtype.element_ty), mask=x_mask)


@triton.jit(do_not_specialize=["N", "D", "tokens_per_split"])
def _coeffs_dphi_kernel(
    X_ptr, DZ_ptr, R_ptr, ALPHA_ptr,  # x (N, D), dz (N, n^2+2n), r (N,), alpha (3,)
    DPHI_PART_ptr,  # -> partials (splits, D, n^2+2n)
    N, D, tokens_per_split,
    n: tl.constexpr, NP: tl.constexpr, RP: tl.constexpr, ACC: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr,
):
    W: tl.constexpr = RP * NP
    M: tl.constexpr = n * n + 2 * n
    kb = tl.program_id(0)
    split = tl.program_id(1)
    k = kb * BLOCK_K + tl.arange(0, BLOCK_K)[:, None]  # (BLOCK_K, 1)
    w = tl.arange(0, W)[None, :]  # (1, W)
    col = (w // NP) * n + (w % NP)
    col_ok = ((w // NP) < n + 2) & ((w % NP) < n)
    row = w // NP
    scale = tl.where(row == 0, tl.load(ALPHA_ptr).to(ACC),
                     tl.where(row == 1, tl.load(ALPHA_ptr + 1).to(ACC), tl.load(ALPHA_ptr + 2).to(ACC)))  # (1, W)
    acc = tl.zeros((BLOCK_K, W), dtype=ACC)
    t_begin = split.to(tl.int64) * tokens_per_split
    t_end = tl.minimum(t_begin + tokens_per_split, N)
    tt = tl.arange(0, BLOCK_T)
    for t0 in range(t_begin, t_end, BLOCK_T):
        t = t0 + tt
        xT = tl.load(X_ptr + t[None, :] * D + k, mask=(t[None, :] < t_end) & (k < D), other=0.0)  # (BK, BT)
        dz = tl.load(DZ_ptr + t[:, None] * M + col, mask=(t[:, None] < t_end) & col_ok, other=0.0)  # (BT, W)
        r = tl.load(R_ptr + t, mask=t < t_end, other=1.0)  # (BT,)
        dp = dz * scale / r[:, None]  # bitwise the dp of kernel 1
        acc += tl.dot(xT.to(ACC), dp, input_precision="ieee")
    tl.store(DPHI_PART_ptr + split * D * M + k * M + col, acc, mask=(k < D) & col_ok)


# ---------------------------------------------------------------------------------------------------------------
# Backward launcher
# ---------------------------------------------------------------------------------------------------------------
@serialised_in_interpreter
def coeffs_backward(x, phi, alpha, b, m, r, g_pre, g_post, g_res, t_max, sinkhorn_eps, post_scale, col_major):
    """Gradients (dx, dphi, dalpha, db) in the dtypes of x, phi, alpha, b."""
    N, n, C = x.shape
    D, Mw = n * C, n * n + 2 * n
    acc = compute_dtype(x.dtype)
    RP, NP = _tile_dims(n)
    conf = cfg.choose(OP, n=n, C=C, tokens=N, t_max=t_max, interpret=interpret_mode())
    blocks = triton.cdiv(N, conf.block_t)
    dx = torch.empty_like(x)
    dz = x.new_empty((N, Mw), dtype=acc)
    if N:
        _coeffs_bwd_kernel[(blocks,)](
            x, phi, alpha, b, m, r, g_pre.contiguous(), g_post.contiguous(), g_res.contiguous(),
            dx, dz, N, D, t_max, conf.sinkhorn_seg,
            *_split(post_scale), *_split(math.log(sinkhorn_eps) if sinkhorn_eps > 0 else 0.0),
            n=n, NP=NP, RP=RP, COL_MAJOR=col_major, HAS_EPS=sinkhorn_eps > 0, ACC=tl_dtype(acc),
            BLOCK_T=conf.block_t, BLOCK_K=conf.block_k, num_warps=conf.num_warps, num_stages=conf.num_stages,
        )
    splits = max(1, min(conf.dphi_splits, triton.cdiv(N, conf.dphi_block_t)))
    per_split = triton.cdiv(triton.cdiv(N, splits), conf.dphi_block_t) * conf.dphi_block_t
    dphi_part = x.new_empty((splits, D, Mw), dtype=acc)
    _coeffs_dphi_kernel[(triton.cdiv(D, conf.dphi_block_k), splits)](
        x, dz, r, alpha, dphi_part, N, D, per_split, n=n, NP=NP, RP=RP, ACC=tl_dtype(acc),
        BLOCK_T=conf.dphi_block_t, BLOCK_K=conf.dphi_block_k, num_warps=conf.num_warps, num_stages=conf.num_stages,
    )
    dphi = dphi_part.sum(0) if splits > 1 else dphi_part[0]
    dzm = (dz * m).sum(0)  # (n^2+2n,): per column over tokens, then per group, as the reference
    dalpha = torch.stack([dzm[:n].sum(), dzm[n:2 * n].sum(), dzm[2 * n:].sum()])
    return dx, dphi.to(phi.dtype), dalpha.to(alpha.dtype), dz.sum(0).to(b.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Custom ops (torch.library): opaque to torch.compile, which traces them through their fake implementations
# ---------------------------------------------------------------------------------------------------------------
@torch.library.custom_op("mhc_triton::mhc_coeffs", mutates_args=())
def coeffs_op(x: torch.Tensor, phi: torch.Tensor, alpha: torch.Tensor, b: torch.Tensor, t_max: int,
              sinkhorn_eps: float, pre_eps: float, post_scale: float, rms_eps: float,
              col_major: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(h_pre, h_post, h_res, m, r) in the compute dtype from x (N, n, C). m and r are the residuals the backward
    reads (no Sinkhorn state, see the banner above); they are outputs only so that autograd can save them, and carry
    no gradient of their own."""
    return coeffs_forward(x.contiguous(), phi.contiguous(), alpha.contiguous(), b.contiguous(), t_max, sinkhorn_eps,
                          pre_eps, post_scale, rms_eps, col_major)


@coeffs_op.register_fake
def _(x, phi, alpha, b, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, col_major):
    N, n = x.shape[0], x.shape[1]
    acc = compute_dtype(x.dtype)
    return (x.new_empty((N, n), dtype=acc), x.new_empty((N, n), dtype=acc), x.new_empty((N, n, n), dtype=acc),
            x.new_empty((N, n * n + 2 * n), dtype=acc), x.new_empty((N,), dtype=acc))


@torch.library.custom_op("mhc_triton::mhc_coeffs_backward", mutates_args=())
def coeffs_backward_op(x: torch.Tensor, phi: torch.Tensor, alpha: torch.Tensor, b: torch.Tensor, m: torch.Tensor,
                       r: torch.Tensor, g_pre: torch.Tensor, g_post: torch.Tensor, g_res: torch.Tensor, t_max: int,
                       sinkhorn_eps: float, post_scale: float,
                       col_major: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return coeffs_backward(x.contiguous(), phi.contiguous(), alpha.contiguous(), b.contiguous(), m, r, g_pre, g_post,
                           g_res, t_max, sinkhorn_eps, post_scale, col_major)


@coeffs_backward_op.register_fake
def _(x, phi, alpha, b, m, r, g_pre, g_post, g_res, t_max, sinkhorn_eps, post_scale, col_major):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (x, phi, alpha, b))


def _setup_context(ctx, inputs, output):
    x, phi, alpha, b, t_max, sinkhorn_eps, _pre_eps, post_scale, _rms_eps, col_major = inputs
    ctx.save_for_backward(x, phi, alpha, b, output[3], output[4])
    ctx.options = (t_max, sinkhorn_eps, post_scale, col_major)


def _backward(ctx, g_pre, g_post, g_res, _g_m, _g_r):
    x, phi, alpha, b, m, r = ctx.saved_tensors  # autograd materialises unused cotangents as zeros
    grads = coeffs_backward_op(x, phi, alpha, b, m, r, g_pre, g_post, g_res, *ctx.options)
    return (*grads, None, None, None, None, None, None)


coeffs_op.register_autograd(_backward, setup_context=_setup_context)


MAX_N = 16  # the (n + 2, n) coefficient tile lives in registers; beyond 16 streams it would spill


def mhc_coeffs_unchecked(x, phi, alpha, b, *, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout,
                         maps_dtype=None):
    """The fused op on validated inputs (the contiguity / device check of the kernels still runs)."""
    if x.shape[-2] > MAX_N:
        raise ValueError(f"{OP}: the torch-triton kernel supports n <= {MAX_N} streams, got x of shape "
                         f"{tuple(x.shape)} (n = {x.shape[-2]}); use the eager `torch` backend for more")
    for name, t in (("x", x), ("phi", phi), ("alpha", alpha), ("b", b)):
        check_runnable(name, t, OP)
    n, C = x.shape[-2:]
    lead = x.shape[:-2]
    N = x.numel() // (n * C)  # explicit, not -1: zero tokens give empty maps
    outs = coeffs_op(x.reshape(N, n, C), phi, alpha, b, t_max, float(sinkhorn_eps), float(pre_eps),
                     float(post_scale), float(rms_eps), res_layout == "col_major")[:3]
    out_dtype = x.dtype if maps_dtype is None else maps_dtype
    h_pre, h_post, h_res = (o.to(out_dtype) for o in outs)
    return h_pre.reshape(*lead, n), h_post.reshape(*lead, n), h_res.reshape(*lead, n, n)


def mhc_coeffs(x: torch.Tensor, phi: torch.Tensor, alpha: torch.Tensor, b: torch.Tensor, *, t_max: int = 20,
               sinkhorn_eps: float = 0.0, pre_eps: float = 0.0, post_scale: float = 2.0, rms_eps: float = 1e-20,
               res_layout: str = "row_major", maps_dtype: torch.dtype | None = None):
    """(H_pre (..., n), H_post (..., n), H_res (..., n, n)) from x (..., n, C), P Eqs. 14-19, fused kernels.

    Defaults are the `paper` preset. The math runs in float32 (float64 for float64 x); the maps are returned in
    `maps_dtype` (default: x's dtype, the backend contract; pass torch.float32 to keep them in float32).
    """
    validate(x, phi, alpha, b)
    validate_options(OP, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout)
    _checks.check_nonzero_tokens(x, rms_eps, OP)
    return mhc_coeffs_unchecked(x, phi, alpha, b, t_max=t_max, sinkhorn_eps=sinkhorn_eps, pre_eps=pre_eps,
                                post_scale=post_scale, rms_eps=rms_eps, res_layout=res_layout, maps_dtype=maps_dtype)
