"""Residual mixing plus the scattered sublayer output, P Eq. 3, as one fused Pallas kernel (P Table 2):

    y[t, i, c] = sum_j H_res[t, i, j] x[t, j, c] + H_post[t, i] f[t, c]
    x (N, n, C), f_out (N, C), H_post (N, n), H_res (N, n, n) -> y (N, n, C)       rows of H_res = output streams

Reads (n + 1) C elements (plus n^2 + n maps) and writes n C per token. Each program holds a (BLOCK_T, n, BLOCK_C)
block of x and the matching f block; the n x n mixing is a static loop of (BLOCK_T, BLOCK_C) multiply-adds (j in
order, then the H_post term), so n needs no padding. 16-bit activations are widened to float32 in the kernel; y has
x's dtype.

File layout: forward kernel -> launcher -> backward derivation and kernel -> launcher -> custom_vjp -> public
function.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from .. import _checks
from ..mhc_post_res import mhc_post_res_unchecked as mhc_post_res_jnp
from ..mhc_post_res import validate
from . import config as cfg
from ._common import compiler_params, compute_dtype, pad_to, resolve, stream_conf

OP = "mhc_post_res"


def _post_res_fwd_kernel(x_ref, f_ref, hp_ref, hr_ref, y_ref, *, n: int):
    acc = compute_dtype(x_ref.dtype)
    xs = [x_ref[:, j, :].astype(acc) for j in range(n)]  # n x (BT, BC)
    f = f_ref[...].astype(acc)
    for i in range(n):
        y = hr_ref[:, i, 0].astype(acc)[:, None] * xs[0]
        for j in range(1, n):
            y = y + hr_ref[:, i, j].astype(acc)[:, None] * xs[j]
        y = y + hp_ref[:, i].astype(acc)[:, None] * f
        y_ref[:, i, :] = y.astype(y_ref.dtype)


def _specs(n: int, BT: int, c_block: int, c_index):
    """BlockSpecs of x / y (BT, n, c), f (BT, c), h_post (BT, n), h_res (BT, n, n) on a grid (tokens[, channels])."""
    return dict(
        x=pl.BlockSpec((BT, n, c_block), lambda i, *j: (i, 0, c_index(j))),
        f=pl.BlockSpec((BT, c_block), lambda i, *j: (i, c_index(j))),
        hp=pl.BlockSpec((BT, n), lambda i, *j: (i, 0)),
        hr=pl.BlockSpec((BT, n, n), lambda i, *j: (i, 0, 0)),
    )


@functools.cache
def _fwd_call(n: int, conf: cfg.KernelConfig, interpret: bool):
    def run(x, f, hp, hr):  # padded: x (Np, n, Cp), f (Np, Cp), hp (Np, n), hr (Np, n, n) -> y (Np, n, Cp)
        Np, _, Cp = x.shape
        s = _specs(n, conf.block_t, conf.block_c, lambda j: j[0])
        return pl.pallas_call(
            partial(_post_res_fwd_kernel, n=n), out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
            grid=(Np // conf.block_t, Cp // conf.block_c),
            in_specs=[s["x"], s["f"], s["hp"], s["hr"]], out_specs=s["x"],
            interpret=interpret, compiler_params=compiler_params(conf, interpret), name="mhc_post_res_fwd",
        )(x, f, hp, hr)

    return jax.jit(run)


@partial(jax.jit, static_argnames=("Np", "Cp"))
def _pad_all(x, f, hp, hr, g=None, *, Np: int, Cp: int):
    """The (..., n, C) / (..., C) / (..., n) / (..., n, n) arrays flattened over tokens and padded to (N_pad, ...,
    C_pad); g like x (one small jitted program per shape instead of eager ops that would each compile)."""
    n, C = x.shape[-2:]
    out = [pad_to(pad_to(x.reshape(-1, n, C), 0, Np), 2, Cp), pad_to(pad_to(f.reshape(-1, C), 0, Np), 1, Cp),
           pad_to(hp.reshape(-1, n), 0, Np), pad_to(hr.reshape(-1, n, n), 0, Np)]
    if g is not None:
        out.append(pad_to(pad_to(g.reshape(-1, n, C).astype(x.dtype), 0, Np), 2, Cp))
    return out


@partial(jax.jit, static_argnames=("shape",))
def _unpad(*arrays, shape):
    """Padded (N_pad, n, C_pad), (N_pad, C_pad), (N_pad, n), (N_pad, n, n) arrays back to x's leading shape."""
    lead, (n, C) = shape[:-2], shape[-2:]
    N = math.prod(lead)
    full = ((n, C), (C,), (n,), (n, n))
    return [a[:N][..., :s[-1]].reshape(*lead, *s) for a, s in zip(arrays, full)]


def post_res_forward(x, f_out, h_post, h_res, interpret: bool):
    """x (..., n, C), f_out (..., C), h_post (..., n), h_res (..., n, n) -> y (..., n, C) in x's dtype."""
    conf, pads = stream_conf(OP, x, interpret)
    y = _fwd_call(x.shape[-2], conf, interpret)(*_pad_all(x, f_out, h_post, h_res, **pads))
    return _unpad(y, shape=tuple(x.shape))[0]


# ---------------------------------------------------------------------------------------------------------------
# Backward: derivation
#
#   y_i = sum_j H_ij x_j + h_i f  =>  dx_j   = sum_i H_ij g_i        (H^T g, per channel)
#                                     df     = sum_i h_i g_i          (per channel)
#                                     dH_ij  = sum_c g_i[c] x_j[c]    (a reduction over C)
#                                     dh_i   = sum_c g_i[c] f[c]      (a reduction over C)
#   One program per token block walks C in chunks of BLOCK_C: it reads g, x, f once, writes dx and df, and
#   carries the n^2 + n partial sums of dH and dh through the loop; no atomics, no second pass.
# ---------------------------------------------------------------------------------------------------------------
def _post_res_bwd_kernel(x_ref, f_ref, hp_ref, hr_ref, g_ref, dx_ref, df_ref, dhp_ref, dhr_ref, *, n: int,
                         block_c: int):
    acc = compute_dtype(x_ref.dtype)
    hr = [[hr_ref[:, i, j].astype(acc)[:, None] for j in range(n)] for i in range(n)]
    hp = [hp_ref[:, i].astype(acc)[:, None] for i in range(n)]

    def chunk(cb, carry):
        d_res, d_post = carry
        c = pl.ds(pl.multiple_of(cb * block_c, block_c), block_c)
        g = [g_ref[:, i, c].astype(acc) for i in range(n)]  # n x (BT, BC)
        x = [x_ref[:, j, c].astype(acc) for j in range(n)]
        f = f_ref[:, c].astype(acc)
        for j in range(n):
            dx = hr[0][j] * g[0]
            for i in range(1, n):
                dx = dx + hr[i][j] * g[i]
            dx_ref[:, j, c] = dx.astype(dx_ref.dtype)
        df = hp[0] * g[0]
        for i in range(1, n):
            df = df + hp[i] * g[i]
        df_ref[:, c] = df.astype(df_ref.dtype)
        d_res = tuple(d_res[i * n + j] + jnp.sum(g[i] * x[j], axis=1) for i in range(n) for j in range(n))
        d_post = tuple(d_post[i] + jnp.sum(g[i] * f, axis=1) for i in range(n))
        return d_res, d_post

    BT = x_ref.shape[0]
    zeros = jnp.zeros((BT,), acc)
    d_res, d_post = lax.fori_loop(0, x_ref.shape[2] // block_c, chunk, ((zeros,) * (n * n), (zeros,) * n))
    for i in range(n):
        dhp_ref[:, i] = d_post[i].astype(dhp_ref.dtype)
        for j in range(n):
            dhr_ref[:, i, j] = d_res[i * n + j].astype(dhr_ref.dtype)


@functools.cache
def _bwd_call(n: int, conf: cfg.KernelConfig, interpret: bool):
    def run(x, f, hp, hr, g):
        Np, _, Cp = x.shape
        s = _specs(n, conf.block_t, Cp, lambda j: 0)  # whole (padded) C per program, walked in the kernel
        return pl.pallas_call(
            partial(_post_res_bwd_kernel, n=n, block_c=conf.block_c),
            out_shape=tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in (x, f, hp, hr)),
            grid=(Np // conf.block_t,),
            in_specs=[s["x"], s["f"], s["hp"], s["hr"], s["x"]], out_specs=(s["x"], s["f"], s["hp"], s["hr"]),
            interpret=interpret, compiler_params=compiler_params(conf, interpret), name="mhc_post_res_bwd",
        )(x, f, hp, hr, g)

    return jax.jit(run)


def post_res_backward(x, f_out, h_post, h_res, g, interpret: bool):
    """(dx, df_out, dh_post, dh_res), each in its input's dtype and shape."""
    conf, pads = stream_conf(OP, x, interpret)
    grads = _bwd_call(x.shape[-2], conf, interpret)(*_pad_all(x, f_out, h_post, h_res, g, **pads))
    return tuple(_unpad(*grads, shape=tuple(x.shape)))


# ---------------------------------------------------------------------------------------------------------------
# custom_vjp
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    interpret: bool
    backward: str  # "pallas" or "reference" (the VJP of the jnp op)


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def _mhc_post_res(x, f_out, h_post, h_res, o: Options):
    return post_res_forward(x, f_out, h_post, h_res, o.interpret)


def _mhc_post_res_fwd(x, f_out, h_post, h_res, o: Options):
    return _mhc_post_res(x, f_out, h_post, h_res, o), (x, f_out, h_post, h_res)


def _mhc_post_res_bwd(o: Options, res, g):
    if o.backward == "reference":
        return jax.vjp(mhc_post_res_jnp, *res)[1](g)
    return post_res_backward(*res, g, o.interpret)


_mhc_post_res.defvjp(_mhc_post_res_fwd, _mhc_post_res_bwd)


def mhc_post_res_unchecked(x, f_out, h_post, h_res, o: Options):
    return _mhc_post_res(x, f_out, h_post, h_res, o)


def mhc_post_res(x, f_out, h_post, h_res, *, interpret: bool | None = None, backward: str = "pallas"):
    """x (..., n, C), f_out (..., C), h_post (..., n), h_res (..., n, n) -> y (..., n, C) in x's dtype (float32
    math for 16-bit x), as one fused Pallas kernel. `interpret` defaults to True on CPU; `backward="reference"`
    takes the gradient from the jnp op."""
    validate(x, f_out, h_post, h_res)
    o = Options(resolve(interpret, backward, OP), backward)
    with _checks.x64_scope(x, f_out, h_post, h_res):
        return mhc_post_res_unchecked(x, f_out, h_post, h_res, o)
