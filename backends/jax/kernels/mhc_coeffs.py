"""The coefficient path of mHC as one fused Pallas kernel per token block: the maps of `mhc_backends.jax.mhc_coeffs`,
P Eqs. 7-9 in the fused form of Eqs. 14-19 (spec/mhc.md, "mhc_coeffs"), with x_bar = x.reshape(N, n*C).

The coefficient tile. The n^2 + 2n columns, in the spec's order, are an (n + 2, n) row-major matrix: column
`r*n + j` is tile entry (r, j); row 0 is pre, row 1 is post, rows 2..n+1 are the residual logits v[(r-2)*n + j].
The launcher lays phi, alpha and b out as (RP, NP) tiles flattened to W = RP*NP columns (RP, NP powers of two >=
n + 2, n; padding zero), so one dot per chunk of x_bar fills the whole (BLOCK_T, W) tile and the kernel never
slices a value (Triton cannot). In row_major layout the residual rows are H's rows; in col_major (H[i, j] =
v[j*n + i]) they are H's columns, so the Sinkhorn runs on the same tile with its column and row axes swapped.

One pass over x per token block: each x_bar chunk feeds both the projection (dot) and the square-sum. Sigmoids and
the whole Sinkhorn iteration then run on the tile in registers (VMEM on TPU). Saved for the backward: x (an input),
per token m (W floats) and r (1 float); no Sinkhorn state.

File layout: forward kernel -> launcher -> backward derivation -> backward kernels -> launcher -> custom_vjp ->
public function.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

from .. import _checks
from ..mhc_coeffs import mat, validate, validate_options
from ..mhc_coeffs import mhc_coeffs_unchecked as mhc_coeffs_jnp
from . import config as cfg
from ._common import compiler_params, compute_dtype, pad_to, resolve, round_up, scalar_spec, static_part
from .sinkhorn import NEG_INF, Axes, log_eps_of, sinkhorn_tile, sinkhorn_tile_bwd

OP = "mhc_coeffs"
HIGHEST = lax.Precision.HIGHEST  # float32 dots in full float32 (IEEE on GPU, no bf16 passes on TPU)
CONTRACT_LAST = (((1,), (1,)), ((), ()))  # a @ b.T
CONTRACT_FIRST = (((0,), (0,)), ((), ()))  # a.T @ b


@dataclass(frozen=True)
class Static:
    """What the compiled kernels depend on (the option values reach them as runtime scalars)."""

    has_eps: bool
    res_layout: str
    interpret: bool


@dataclass(frozen=True)
class Options:
    t_max: int
    sinkhorn_eps: float
    pre_eps: float
    post_scale: float
    rms_eps: float
    res_layout: str
    interpret: bool
    backward: str  # "pallas" or "reference" (the VJP of the jnp op)

    def static(self) -> Static:
        return Static(self.sinkhorn_eps > 0, self.res_layout, self.interpret)

    def jnp_options(self) -> dict:
        return dict(t_max=self.t_max, sinkhorn_eps=self.sinkhorn_eps, pre_eps=self.pre_eps,
                    post_scale=self.post_scale, rms_eps=self.rms_eps, res_layout=self.res_layout)


def _sigmoid(z):
    """1 / (1 + exp(-z)) and its derivative s (1 - s) = e / (1 + e)^2, e = exp(-|z|), without overflow or
    cancellation for large |z|."""
    e = jnp.exp(-jnp.abs(z))
    s = jnp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return s, e / ((1.0 + e) * (1.0 + e))


def _tile_masks(BT: int, n: int, RP: int, NP: int):
    """Row and column indices of the (BT, RP, NP) tile, the mask of its (n + 2, n) entries and of the residual."""
    rr = lax.broadcasted_iota(jnp.int32, (BT, RP, NP), 1)
    jj = lax.broadcasted_iota(jnp.int32, (BT, RP, NP), 2)
    in_tile = (rr < n + 2) & (jj < n)
    return rr, in_tile, in_tile & (rr >= 2)


def _axes(res_layout: str) -> Axes:
    return Axes(col=1, row=2) if res_layout == "row_major" else Axes(col=2, row=1)


# ---------------------------------------------------------------------------------------------------------------
# Forward kernel
# ---------------------------------------------------------------------------------------------------------------
def _coeffs_fwd_kernel(i_ref, f_ref, x_ref, phi_ref, scale_ref, bias_ref, tile_ref, m_ref, r_ref, *, n, RP, NP,
                       block_k, k: Static):
    acc = tile_ref.dtype
    BT, Dp = x_ref.shape
    W = RP * NP

    def chunk(kb, carry):  # projection and square-sum in one pass over x_bar
        p, ss = carry
        ks = pl.ds(pl.multiple_of(kb * block_k, block_k), block_k)
        xk = x_ref[:, ks].astype(acc)  # (BT, BK)
        p = p + jnp.dot(xk, phi_ref[ks, :], precision=HIGHEST, preferred_element_type=acc)  # (BT, W)
        return p, ss + jnp.sum(xk * xk, axis=1)

    p, ss = lax.fori_loop(0, Dp // block_k, chunk, (jnp.zeros((BT, W), acc), jnp.zeros((BT,), acc)))
    rms_eps, pre_eps, post_scale, log_eps, D = (f_ref[i] for i in range(5))  # D = n*C (exact in any float)
    r = jnp.sqrt(ss / D + rms_eps)  # (BT,)
    m = p / r[:, None]
    m_ref[...] = m
    r_ref[...] = r

    z = (scale_ref[...] * m + bias_ref[...]).reshape(BT, RP, NP)  # logits of all three maps
    rr, _, is_res = _tile_masks(BT, n, RP, NP)
    sig, _ = _sigmoid(z)
    u = sinkhorn_tile(jnp.where(is_res, z, NEG_INF), is_res, i_ref[0], log_eps if k.has_eps else None,
                      _axes(k.res_layout))
    out = jnp.where(rr == 0, sig + pre_eps, jnp.where(rr == 1, post_scale * sig, jnp.exp(u)))
    tile_ref[...] = out.reshape(BT, W)


# ---------------------------------------------------------------------------------------------------------------
# Forward launcher
# ---------------------------------------------------------------------------------------------------------------
def _as_tile(a, n: int, RP: int, NP: int):
    """(..., n^2+2n) in the spec's column order -> (..., RP*NP) tile columns (zero padding)."""
    t = a.reshape(*a.shape[:-1], n + 2, n)
    return pad_to(pad_to(t, -2 + t.ndim, RP), t.ndim - 1, NP).reshape(*a.shape[:-1], RP * NP)


def _from_tile(t, n: int, RP: int, NP: int):
    """(..., RP*NP) tile columns -> (..., n^2+2n) in the spec's column order."""
    return t.reshape(*t.shape[:-1], RP, NP)[..., :n + 2, :n].reshape(*t.shape[:-1], n * n + 2 * n)


def _scale_bias(alpha, b, n: int, RP: int, NP: int, acc):
    """Per tile column: the scale alpha[group] and the bias b, as (1, W)."""
    group = jnp.repeat(jnp.asarray([0, 1] + [2] * n), n)  # (n^2+2n,) group of each column
    return (_as_tile(alpha.astype(acc)[group], n, RP, NP)[None, :], _as_tile(b.astype(acc), n, RP, NP)[None, :])


def _sizes(x, o: Options):
    """Config and padded sizes of one call: tokens to a multiple of block_t * dphi_splits, n*C to the K chunks."""
    n, C = x.shape[-2:]
    N = math.prod(x.shape[:-2])
    conf = cfg.choose(OP, n=n, C=C, tokens=N, t_max=o.t_max, interpret=o.interpret)
    return conf, dict(Np=round_up(max(N, 1), conf.block_t * conf.dphi_splits),
                      Dp=round_up(n * C, max(conf.block_k, conf.dphi_block_k)))


@partial(jax.jit, static_argnames=("Np", "Dp"))
def _prepare(x, phi, alpha, b, *, Np: int, Dp: int):
    """x (..., n, C) -> x_bar (N_pad, D_pad): D padded with zeros, tokens padded with ones (a padded token has a
    finite r; its cotangents are zero, so it adds nothing to any reduction). phi -> (D_pad, W) tile columns, scale
    and bias -> (1, W). One small jitted program per shape (eager ops would each compile on every new shape)."""
    n, C = x.shape[-2:]
    RP, NP = cfg.tile_dims(n)
    acc = compute_dtype(x.dtype)
    xb = pad_to(pad_to(x.reshape(-1, n * C), 1, Dp), 0, Np, 1.0)
    phi_t = pad_to(_as_tile(phi.astype(acc), n, RP, NP), 0, Dp)
    return (xb, phi_t, *_scale_bias(alpha, b, n, RP, NP, acc))


def _scalars(o: Options, conf: cfg.KernelConfig, D: int, acc):
    """The option values and D = n*C as runtime scalars (host arrays: no compile per value; one compiled kernel
    serves every C that pads to the same D_pad)."""
    return (np.asarray([o.t_max, conf.sinkhorn_seg], np.int32),
            np.asarray([o.rms_eps, o.pre_eps, o.post_scale, log_eps_of(o.sinkhorn_eps), D], acc))


@functools.cache
def _fwd_call(n: int, conf: cfg.KernelConfig, k: Static):
    RP, NP = cfg.tile_dims(n)
    W = RP * NP

    def run(ints, floats, xb, phi_t, scale, bias):
        Np, Dp = xb.shape
        BT = conf.block_t
        acc = phi_t.dtype
        tok = pl.BlockSpec((BT, W), lambda i: (i, 0))
        return pl.pallas_call(
            partial(_coeffs_fwd_kernel, n=n, RP=RP, NP=NP, block_k=conf.block_k, k=k),
            out_shape=(jax.ShapeDtypeStruct((Np, W), acc), jax.ShapeDtypeStruct((Np, W), acc),
                       jax.ShapeDtypeStruct((Np,), acc)),
            grid=(Np // BT,),
            in_specs=[scalar_spec(ints), scalar_spec(floats), pl.BlockSpec((BT, Dp), lambda i: (i, 0)),
                      pl.BlockSpec((Dp, W), lambda i: (0, 0)), pl.BlockSpec((1, W), lambda i: (0, 0)),
                      pl.BlockSpec((1, W), lambda i: (0, 0))],
            out_specs=(tok, tok, pl.BlockSpec((BT,), lambda i: (i,))),
            interpret=k.interpret, compiler_params=compiler_params(conf, k.interpret), name="mhc_coeffs_fwd",
        )(ints, floats, xb, phi_t, scale, bias)

    return jax.jit(run)


@partial(jax.jit, static_argnames=("shape", "res_layout", "maps_dtype"))
def _maps(tile, *, shape, res_layout: str, maps_dtype):
    """The (N_pad, W) tile -> (h_pre (..., n), h_post (..., n), h_res (..., n, n)) in maps_dtype."""
    lead, n = shape[:-2], shape[-2]
    RP, NP = cfg.tile_dims(n)
    maps = _from_tile(tile[:math.prod(lead)], n, RP, NP).astype(maps_dtype)  # (N, n^2+2n)
    return (maps[:, :n].reshape(*lead, n), maps[:, n:2 * n].reshape(*lead, n),
            mat(maps[:, 2 * n:], n, res_layout).reshape(*lead, n, n))


def coeffs_forward(x, phi, alpha, b, o: Options, maps_dtype):
    """x (..., n, C) -> (h_pre, h_post, h_res) in maps_dtype, and the saved m (N_pad, W), r (N_pad,)."""
    n, C = x.shape[-2:]
    conf, sizes = _sizes(x, o)
    args = _prepare(x, phi, alpha, b, **sizes)
    floats_dtype = args[1].dtype
    tile, m, r = _fwd_call(n, static_part(conf), o.static())(*_scalars(o, conf, n * C, floats_dtype), *args)
    return _maps(tile, shape=tuple(x.shape), res_layout=o.res_layout, maps_dtype=maps_dtype), (m, r)


# ---------------------------------------------------------------------------------------------------------------
# Backward: derivation
#
#   Per token, with z = scale * m + b (scale = alpha[0], alpha[1], alpha[2] on the pre, post, res columns):
#     dz_pre  = g_pre  * s (1 - s),               s = sigmoid(z_pre)
#     dz_post = g_post * post_scale * s (1 - s),  s = sigmoid(z_post)
#     dz_res  = sinkhorn VJP of g_res at the residual logits (recomputed in the kernel, see sinkhorn.py)
#     dm      = dz * scale
#   Parameter gradients of scale and bias (reductions over tokens):
#     d alpha[g] = sum_tokens sum_{columns of group g} dz * m,   d b = sum_tokens dz
#   The projection m = p / r with p = x_bar @ phi, r = sqrt(mean(x_bar^2) + rms_eps), D = n*C:
#     dp = dm / r,  dr = -sum(dm * m) / r,  d r / d x_bar = x_bar / (D r)
#     dx_bar = dp @ phi^T + (dr / (D r)) * x_bar,      d phi = x_bar^T @ dp  (a reduction over tokens)
#
#   Kernel 1 (one program per token block) computes dz, dm, dp and dx in one pass over x and phi and writes dz
#   (N_pad, W). d b and d alpha are two small reductions of dz and dz * m over tokens, done by jnp in the
#   reference's order (per column over tokens, then per group). Kernel 2 reduces d phi = x_bar^T dp over tokens,
#   with dp = dz * scale / r rebuilt from dz: one program per (chunk of n*C, token range), the partials
#   (splits, D_pad, W) summed by jnp afterwards. No atomics: the result is bitwise reproducible.
# ---------------------------------------------------------------------------------------------------------------
def _coeffs_bwd_kernel(i_ref, f_ref, x_ref, phi_ref, scale_ref, bias_ref, m_ref, r_ref, g_ref, dx_ref, dz_ref, *,
                       n, RP, NP, block_k, k: Static):
    acc = m_ref.dtype
    BT, Dp = x_ref.shape
    W = RP * NP
    m = m_ref[...]  # (BT, W)
    r = r_ref[...]  # (BT,)
    scale = scale_ref[...]
    z = (scale * m + bias_ref[...]).reshape(BT, RP, NP)
    g = g_ref[...].reshape(BT, RP, NP)
    rr, in_tile, is_res = _tile_masks(BT, n, RP, NP)
    _, dsig = _sigmoid(z)
    dz_sig = jnp.where(rr == 0, g, jnp.where(rr == 1, f_ref[2] * g, 0.0)) * dsig
    dz_res = sinkhorn_tile_bwd(jnp.where(is_res, z, NEG_INF), jnp.where(is_res, g, 0.0), is_res, i_ref[0], i_ref[1],
                               f_ref[3] if k.has_eps else None, _axes(k.res_layout))
    dz = jnp.where(in_tile, jnp.where(rr >= 2, dz_res, dz_sig), 0.0).reshape(BT, W)
    dz_ref[...] = dz

    dp = dz * scale / r[:, None]  # the same expression as kernel 2's, so both see bitwise the same dp
    dr = -jnp.sum(dz * scale * m, axis=1) / r
    coef = (dr / (f_ref[4] * r))[:, None]  # f_ref[4] = D = n*C

    def chunk(kb, carry):
        ks = pl.ds(pl.multiple_of(kb * block_k, block_k), block_k)
        dx = lax.dot_general(dp, phi_ref[ks, :], CONTRACT_LAST, precision=HIGHEST, preferred_element_type=acc)
        dx_ref[:, ks] = (dx + coef * x_ref[:, ks].astype(acc)).astype(dx_ref.dtype)
        return carry

    lax.fori_loop(0, Dp // block_k, chunk, 0)


def _coeffs_dphi_kernel(x_ref, dz_ref, r_ref, scale_ref, out_ref, *, block_t):
    acc = dz_ref.dtype
    TT, BK = x_ref.shape

    def chunk(tb, a):
        t = pl.ds(pl.multiple_of(tb * block_t, block_t), block_t)
        dp = dz_ref[t, :] * scale_ref[...] / r_ref[t][:, None]  # (BT, W)
        return a + lax.dot_general(x_ref[t, :].astype(acc), dp, CONTRACT_FIRST, precision=HIGHEST,
                                   preferred_element_type=acc)

    out_ref[...] = lax.fori_loop(0, TT // block_t, chunk, jnp.zeros(out_ref.shape, acc))


# ---------------------------------------------------------------------------------------------------------------
# Backward launcher
# ---------------------------------------------------------------------------------------------------------------
@functools.cache
def _bwd_call(n: int, conf: cfg.KernelConfig, k: Static):
    RP, NP = cfg.tile_dims(n)
    W = RP * NP
    params = compiler_params(conf, k.interpret)

    def run(ints, floats, xb, phi_t, scale, bias, m, r, g_tile):
        Np, Dp = xb.shape
        acc = m.dtype
        BT, S, BKd = conf.block_t, conf.dphi_splits, conf.dphi_block_k
        tok = pl.BlockSpec((BT, W), lambda i: (i, 0))
        row = pl.BlockSpec((1, W), lambda *_: (0, 0))
        dx, dz = pl.pallas_call(
            partial(_coeffs_bwd_kernel, n=n, RP=RP, NP=NP, block_k=conf.block_k, k=k),
            out_shape=(jax.ShapeDtypeStruct(xb.shape, xb.dtype), jax.ShapeDtypeStruct((Np, W), acc)),
            grid=(Np // BT,),
            in_specs=[scalar_spec(ints), scalar_spec(floats), pl.BlockSpec((BT, Dp), lambda i: (i, 0)),
                      pl.BlockSpec((Dp, W), lambda i: (0, 0)), row, row, tok, pl.BlockSpec((BT,), lambda i: (i,)), tok],
            out_specs=(pl.BlockSpec((BT, Dp), lambda i: (i, 0)), tok),
            interpret=k.interpret, compiler_params=params, name="mhc_coeffs_bwd",
        )(ints, floats, xb, phi_t, scale, bias, m, r, g_tile)
        per = Np // S  # tokens per split, a multiple of BT
        parts = pl.pallas_call(
            partial(_coeffs_dphi_kernel, block_t=BT),
            out_shape=jax.ShapeDtypeStruct((S, Dp, W), acc),
            grid=(Dp // BKd, S),
            in_specs=[pl.BlockSpec((per, BKd), lambda kb, s: (s, kb)), pl.BlockSpec((per, W), lambda kb, s: (s, 0)),
                      pl.BlockSpec((per,), lambda kb, s: (s,)), row],
            out_specs=pl.BlockSpec((pl.squeezed, BKd, W), lambda kb, s: (s, kb, 0)),
            interpret=k.interpret, compiler_params=params, name="mhc_coeffs_dphi",
        )(xb, dz, r, scale)
        return dx, dz, parts[0] if S == 1 else jnp.sum(parts, axis=0)

    return jax.jit(run)


@partial(jax.jit, static_argnames=("Np", "res_layout"))
def _cotangent_tile(g_pre, g_post, g_res, m, *, Np: int, res_layout: str):
    """The cotangents of the three maps -> (N_pad, W) tile columns in the compute dtype (m's)."""
    n = g_pre.shape[-1]
    RP, NP = cfg.tile_dims(n)
    g_v = g_res if res_layout == "row_major" else jnp.swapaxes(g_res, -1, -2)  # H -> v order (inverse of mat)
    g = jnp.concatenate([g_pre.reshape(-1, n), g_post.reshape(-1, n), g_v.reshape(-1, n * n)], axis=-1)
    return pad_to(_as_tile(g.astype(m.dtype), n, RP, NP), 0, Np)


@jax.jit
def _param_grads(x, phi, alpha, b, dxb, dz_t, dphi_t, m):
    """dx back to x's shape; d alpha, d b from dz (per column over tokens, then per group, as the reference);
    d phi from its tile columns; each in its input's dtype."""
    n, C = x.shape[-2:]
    N, D = math.prod(x.shape[:-2]), n * C
    RP, NP = cfg.tile_dims(n)
    dz = _from_tile(dz_t[:N], n, RP, NP)  # (N, n^2+2n)
    dzm = jnp.sum(dz * _from_tile(m[:N], n, RP, NP), axis=0)
    dalpha = jnp.stack([jnp.sum(dzm[:n]), jnp.sum(dzm[n:2 * n]), jnp.sum(dzm[2 * n:])])
    return (dxb[:N, :D].reshape(x.shape), _from_tile(dphi_t[:D], n, RP, NP).astype(phi.dtype),
            dalpha.astype(alpha.dtype), jnp.sum(dz, axis=0).astype(b.dtype))


def coeffs_backward(x, phi, alpha, b, saved, g_pre, g_post, g_res, o: Options):
    """Gradients (dx, dphi, dalpha, db) in the dtypes (and shapes) of x, phi, alpha, b."""
    n, C = x.shape[-2:]
    m, r = saved
    conf, sizes = _sizes(x, o)
    args = _prepare(x, phi, alpha, b, **sizes)
    g_tile = _cotangent_tile(g_pre, g_post, g_res, m, Np=sizes["Np"], res_layout=o.res_layout)
    dxb, dz_t, dphi_t = _bwd_call(n, static_part(conf), o.static())(*_scalars(o, conf, n * C, m.dtype), *args, m, r,
                                                                           g_tile)
    return _param_grads(x, phi, alpha, b, dxb, dz_t, dphi_t, m)


# ---------------------------------------------------------------------------------------------------------------
# custom_vjp
# ---------------------------------------------------------------------------------------------------------------
@partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _mhc_coeffs(x, phi, alpha, b, o: Options, maps_dtype):
    return coeffs_forward(x, phi, alpha, b, o, maps_dtype)[0]


def _mhc_coeffs_fwd(x, phi, alpha, b, o: Options, maps_dtype):
    maps, saved = coeffs_forward(x, phi, alpha, b, o, maps_dtype)
    return maps, (x, phi, alpha, b, saved)


def _mhc_coeffs_bwd(o: Options, maps_dtype, res, gs):
    x, phi, alpha, b, saved = res
    if o.backward == "reference":
        fn = partial(mhc_coeffs_jnp, maps_dtype=maps_dtype, **o.jnp_options())
        return jax.vjp(fn, x, phi, alpha, b)[1](gs)
    return coeffs_backward(x, phi, alpha, b, saved, *gs, o)


_mhc_coeffs.defvjp(_mhc_coeffs_fwd, _mhc_coeffs_bwd)


MAX_N = 16  # the (n + 2, n) coefficient tile lives in registers; beyond 16 streams it would spill on a GPU


def mhc_coeffs_unchecked(x, phi, alpha, b, o: Options, maps_dtype=None):
    """The fused op on validated inputs; maps in `maps_dtype` (default x's dtype)."""
    n, C = x.shape[-2:]
    if n > MAX_N:
        raise ValueError(f"{OP}: the jax-pallas kernel supports n <= {MAX_N} streams, got x of shape "
                         f"{tuple(x.shape)} (n = {n}); use the jnp `jax` backend for more")
    return _mhc_coeffs(x, phi, alpha, b, o, jnp.dtype(x.dtype if maps_dtype is None else maps_dtype))


def mhc_coeffs(x, phi, alpha, b, *, t_max: int = 20, sinkhorn_eps: float = 0.0, pre_eps: float = 0.0,
               post_scale: float = 2.0, rms_eps: float = 1e-20, res_layout: str = "row_major", maps_dtype=None,
               interpret: bool | None = None, backward: str = "pallas"):
    """(H_pre (..., n), H_post (..., n), H_res (..., n, n)) from x (..., n, C), P Eqs. 14-19, fused Pallas kernels.

    Defaults are the `paper` preset. The math runs in float32 (float64 for float64 x); the maps are returned in
    `maps_dtype` (default: x's dtype; pass jnp.float32 to keep them in float32). `interpret` defaults to True on
    CPU; `backward="reference"` takes the gradient from the jnp op instead of the backward kernels.
    """
    validate(x, phi, alpha, b)
    opts = validate_options(OP, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout)
    _checks.check_nonzero_tokens(x, rms_eps, OP)
    o = Options(**opts, interpret=resolve(interpret, backward, OP), backward=backward)
    md = None if maps_dtype is None else jnp.dtype(maps_dtype)
    with _checks.x64_scope(x, phi, alpha, b):
        return mhc_coeffs_unchecked(x, phi, alpha, b, o, md)
