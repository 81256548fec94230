"""The sublayer input, the H_pre x_l term of P Eq. 3, as a Pallas kernel:

    y[t, c] = sum_k H_pre[t, k] x[t, k, c]          x (N, n, C), H_pre (N, n) -> y (N, C)

Memory-bound: reads nC + n, writes C elements per token. Each program holds a (BLOCK_T, n, BLOCK_C) block of x and
walks the n streams as a static loop of (BLOCK_T, BLOCK_C) multiply-adds (k = 0, 1, ..., n-1 in order), so n needs
no padding; tokens and channels are padded to the block sizes. 16-bit x is widened to float32 in the kernel; y has
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
from ..mhc_pre import mhc_pre_unchecked as mhc_pre_jnp
from ..mhc_pre import validate
from . import config as cfg
from ._common import compiler_params, compute_dtype, pad_to, resolve, stream_conf

OP = "mhc_pre"


def _pre_fwd_kernel(x_ref, h_ref, y_ref, *, n: int):
    acc = compute_dtype(x_ref.dtype)
    y = h_ref[:, 0].astype(acc)[:, None] * x_ref[:, 0, :].astype(acc)  # (BT, BC)
    for k in range(1, n):
        y = y + h_ref[:, k].astype(acc)[:, None] * x_ref[:, k, :].astype(acc)
    y_ref[...] = y.astype(y_ref.dtype)


@functools.cache
def _fwd_call(n: int, conf: cfg.KernelConfig, interpret: bool):
    def run(x, h):  # x (Np, n, Cp), h (Np, n) -> (Np, Cp)
        Np, _, Cp = x.shape
        BT, BC = conf.block_t, conf.block_c
        return pl.pallas_call(
            partial(_pre_fwd_kernel, n=n), out_shape=jax.ShapeDtypeStruct((Np, Cp), x.dtype),
            grid=(Np // BT, Cp // BC),
            in_specs=[pl.BlockSpec((BT, n, BC), lambda i, j: (i, 0, j)), pl.BlockSpec((BT, n), lambda i, j: (i, 0))],
            out_specs=pl.BlockSpec((BT, BC), lambda i, j: (i, j)),
            interpret=interpret, compiler_params=compiler_params(conf, interpret), name="mhc_pre_fwd",
        )(x, h)

    return jax.jit(run)


@partial(jax.jit, static_argnames=("Np", "Cp"))
def _pad(x, h_pre, g=None, *, Np: int, Cp: int):
    """x (..., n, C) -> (N_pad, n, C_pad), h_pre -> (N_pad, n), g (..., C) -> (N_pad, C_pad) in x's dtype (one
    small jitted program per shape instead of eager ops that would each compile)."""
    n, C = x.shape[-2:]
    out = [pad_to(pad_to(x.reshape(-1, n, C), 0, Np), 2, Cp), pad_to(h_pre.reshape(-1, n), 0, Np)]
    if g is not None:
        out.append(pad_to(pad_to(g.reshape(-1, C).astype(x.dtype), 0, Np), 1, Cp))
    return out


@partial(jax.jit, static_argnames=("shape",))
def _unpad_y(y, *, shape):
    return y[:math.prod(shape[:-2]), :shape[-1]].reshape(*shape[:-2], shape[-1])


def pre_forward(x, h_pre, interpret: bool):
    """x (..., n, C), h_pre (..., n) -> y (..., C) in x's dtype."""
    conf, pads = stream_conf(OP, x, interpret)
    y = _fwd_call(x.shape[-2], conf, interpret)(*_pad(x, h_pre, **pads))
    return _unpad_y(y, shape=tuple(x.shape))


# ---------------------------------------------------------------------------------------------------------------
# Backward: derivation
#
#   y = sum_k h_k x_k  =>  dx[t, k, c] = h[t, k] g[t, c]          (an outer product, written once)
#                          dh[t, k]    = sum_c x[t, k, c] g[t, c]  (a reduction over C)
#   One program per token block walks C in chunks of BLOCK_C: it reads x and g once, writes dx, and carries the n
#   partial sums of dh through the loop, so the reduction needs no atomics and no second pass.
# ---------------------------------------------------------------------------------------------------------------
def _pre_bwd_kernel(x_ref, h_ref, g_ref, dx_ref, dh_ref, *, n: int, block_c: int):
    acc = compute_dtype(x_ref.dtype)
    h = [h_ref[:, k].astype(acc)[:, None] for k in range(n)]  # n x (BT, 1)

    def chunk(cb, dh):
        c = pl.ds(pl.multiple_of(cb * block_c, block_c), block_c)
        g = g_ref[:, c].astype(acc)  # (BT, BC)
        out = []
        for k in range(n):
            dx_ref[:, k, c] = (h[k] * g).astype(dx_ref.dtype)
            out.append(dh[k] + jnp.sum(x_ref[:, k, c].astype(acc) * g, axis=1))
        return tuple(out)

    zeros = tuple(jnp.zeros((x_ref.shape[0],), acc) for _ in range(n))
    dh = lax.fori_loop(0, x_ref.shape[2] // block_c, chunk, zeros)
    for k in range(n):
        dh_ref[:, k] = dh[k].astype(dh_ref.dtype)


@functools.cache
def _bwd_call(n: int, conf: cfg.KernelConfig, interpret: bool):
    def run(x, h, g):  # x (Np, n, Cp), h (Np, n), g (Np, Cp) -> dx, dh
        Np, _, Cp = x.shape
        BT = conf.block_t
        return pl.pallas_call(
            partial(_pre_bwd_kernel, n=n, block_c=conf.block_c),
            out_shape=(jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct(h.shape, h.dtype)),
            grid=(Np // BT,),
            in_specs=[pl.BlockSpec((BT, n, Cp), lambda i: (i, 0, 0)), pl.BlockSpec((BT, n), lambda i: (i, 0)),
                      pl.BlockSpec((BT, Cp), lambda i: (i, 0))],
            out_specs=(pl.BlockSpec((BT, n, Cp), lambda i: (i, 0, 0)), pl.BlockSpec((BT, n), lambda i: (i, 0))),
            interpret=interpret, compiler_params=compiler_params(conf, interpret), name="mhc_pre_bwd",
        )(x, h, g)

    return jax.jit(run)


@partial(jax.jit, static_argnames=("shape",))
def _unpad_grads(dx, dh, *, shape):
    N, (n, C) = math.prod(shape[:-2]), shape[-2:]
    return dx[:N, :, :C].reshape(shape), dh[:N].reshape(*shape[:-2], n)


def pre_backward(x, h_pre, g, interpret: bool):
    """(dx (..., n, C) in x's dtype, dh_pre (..., n) in h_pre's dtype)."""
    conf, pads = stream_conf(OP, x, interpret)
    dx, dh = _bwd_call(x.shape[-2], conf, interpret)(*_pad(x, h_pre, g, **pads))
    return _unpad_grads(dx, dh, shape=tuple(x.shape))


# ---------------------------------------------------------------------------------------------------------------
# custom_vjp
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    interpret: bool
    backward: str  # "pallas" or "reference" (the VJP of the jnp op)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _mhc_pre(x, h_pre, o: Options):
    return pre_forward(x, h_pre, o.interpret)


def _mhc_pre_fwd(x, h_pre, o: Options):
    return _mhc_pre(x, h_pre, o), (x, h_pre)


def _mhc_pre_bwd(o: Options, res, g):
    x, h_pre = res
    if o.backward == "reference":
        return jax.vjp(mhc_pre_jnp, x, h_pre)[1](g)
    return pre_backward(x, h_pre, g, o.interpret)


_mhc_pre.defvjp(_mhc_pre_fwd, _mhc_pre_bwd)


def mhc_pre_unchecked(x, h_pre, o: Options):
    return _mhc_pre(x, h_pre, o)


def mhc_pre(x, h_pre, *, interpret: bool | None = None, backward: str = "pallas"):
    """x (..., n, C), h_pre (..., n) -> y (..., C) in x's dtype (float32 math for 16-bit x), as a Pallas kernel.
    `interpret` defaults to True on CPU; `backward="reference"` takes the gradient from the jnp op."""
    validate(x, h_pre)
    o = Options(resolve(interpret, backward, OP), backward)
    with _checks.x64_scope(x, h_pre):
        return mhc_pre_unchecked(x, h_pre, o)
