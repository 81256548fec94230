"""Sinkhorn-Knopp projection inside a Pallas kernel, P Eq. 9, with a backward that recomputes the iteration on-chip.

    M^0 = exp(L);  M^t = T_r(T_c(M^{t-1})), t = 1..t_max;  H_res = M^{t_max}       (column first, row last)
    with eps > 0:  H = T_r^eps(T_c(exp L) + eps), then t_max - 1 times T_r^eps(T_c^eps(.))

Everything runs in the log domain, u = log M. A normalisation along an axis is, with m = max(u) over that axis,

    u' = (u - m) - log(sum exp(u - m))        (the eps term relative to the log-sum, see `normalise`)

never `u - (m + log sum ...)`, which rounds at the scale of |m| (issue 9 section 1). `+ eps` is
`logaddexp(u, log eps)`. This is the same function as the linear iteration and as `mhc_ref.sinkhorn`.

The helpers below are plain jnp functions on a tile `u` of any rank whose two matrix axes are `col` (the axis a
column step reduces over, i.e. the row index) and `row`; lanes outside the matrix hold -inf and stay -inf (and get
gradient 0). `mhc_coeffs` calls them inside its kernel on the coefficient tile; the standalone op of this file runs
them on (BLOCK_T, NP, NP) tiles of logits padded to NP = next power of two >= n (the Triton lowering needs
power-of-two arrays).

File layout: tile helpers -> forward kernel -> backward derivation and kernel -> launchers -> custom_vjp ->
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
from ..sinkhorn import sinkhorn_unchecked as sinkhorn_jnp
from ..sinkhorn import validate as validate_sinkhorn
from . import config as cfg
from ._common import compiler_params, compute_dtype, pad_to, resolve, round_up, scalar_spec, static_part

OP = "sinkhorn"
NEG_INF = -jnp.inf


# ---------------------------------------------------------------------------------------------------------------
# Tile helpers (shared with mhc_coeffs)
# ---------------------------------------------------------------------------------------------------------------
def logaddexp(a, b):
    """log(exp a + exp b) without overflow; -inf when both are -inf (no NaN from -inf - -inf)."""
    mx = jnp.maximum(a, b)
    mn = jnp.minimum(a, b)
    mx_safe = jnp.where(mx == NEG_INF, 0.0, mx)
    return mx + jnp.log1p(jnp.exp(mn - mx_safe))


def softplus(z):
    """log(1 + exp z) without overflow: +inf at z = +inf, 0 at z = -inf."""
    return jnp.maximum(z, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(z)))


def normalise(u, axis: int, log_eps):
    """u - log(sum_axis exp(u) + eps) (log_eps None: no eps), computed as `(u - m) - log s` with m = max u and
    s = sum exp(u - m), never `u - (m + log s)`. The eps term is taken relative to the log-sum a = m + log s, on
    whichever side of log eps it lies (the rule of `mhc_ref.sinkhorn._normalise` and the torch-triton kernel):
        a <  log eps:  u - log eps - log(1 + exp(a - log eps))
        a >= log eps:  (u - m) - log s - log(1 + exp(log eps - a))
    -inf (padding) lanes stay -inf; an all-padding lane gives no NaN."""
    m = jnp.max(u, axis=axis, keepdims=True)
    m = jnp.where(m == NEG_INF, 0.0, m)
    s = jnp.sum(jnp.exp(u - m), axis=axis, keepdims=True)  # >= 1 on every lane that holds a matrix entry
    log_s = jnp.log(jnp.where(s > 0, s, 1.0))
    out = (u - m) - log_s
    if log_eps is not None:
        a = m + log_s  # compared with log eps and used inside log(1 + exp(.)) only, where its rounding is harmless
        eps_side = (u - log_eps) - jnp.log1p(jnp.exp(jnp.minimum(a - log_eps, 0.0)))
        sum_side = out - jnp.log1p(jnp.exp(jnp.minimum(log_eps - a, 0.0)))
        out = jnp.where(a < log_eps, eps_side, sum_side)
    return out


def normalise_bwd(u_out, du_out, axis: int):
    """VJP of u' = u - D(u):  du = du' - p * sum_axis(du'),  p = exp(u') = M / (sum + eps)."""
    return du_out - jnp.exp(u_out) * jnp.sum(du_out, axis=axis, keepdims=True)


@dataclass(frozen=True)
class Axes:
    """Where the matrix sits in a tile: `col` is the axis a column step reduces over, `row` the other."""

    col: int
    row: int


def pair0(u, valid, log_eps, ax: Axes):
    """The first pair: an exact column softmax, `+ eps`, then the row step (with eps)."""
    a = normalise(u, ax.col, None)
    if log_eps is not None:
        a = jnp.where(valid, logaddexp(a, log_eps), NEG_INF)
    return normalise(a, ax.row, log_eps)


def pair(u, log_eps, ax: Axes):
    """Pairs 2..t_max: T_r^eps(T_c^eps(u))."""
    return normalise(normalise(u, ax.col, log_eps), ax.row, log_eps)


def iterate(u, start, stop, log_eps, ax: Axes):
    """Pairs start..stop-1 applied to u (bounds may be traced)."""
    return lax.fori_loop(start, stop, lambda _, v: pair(v, log_eps, ax), u)


def sinkhorn_tile(u, valid, t_max: int, log_eps, ax: Axes):
    """log H_res from log-domain logits u (-inf outside `valid`)."""
    return iterate(pair0(u, valid, log_eps, ax), 1, t_max, log_eps, ax)


# ---------------------------------------------------------------------------------------------------------------
# Backward: derivation
#
#   States s_0 = L, s_{p+1} = pair_p(s_p), p = 0..t_max-1, log H = s_{t_max}. The VJP runs the pairs in reverse:
#   ds_{t_max} = g * H, ds_p = pair_p^T(s_p, ds_{p+1}); inside a pair every normalisation u' = u - D(u) has
#   du = du' - exp(u') * sum(du'), and `+ eps` (first pair only) has du = du' * exp(a) / (exp(a) + eps)
#   = du' * exp(-softplus(log eps - a)).
#
#   The backward needs s_p in reverse order. Storing 2 t_max states per token is what this kernel avoids: it keeps
#   only the logits and recomputes. With checkpoint segments of `seg` pairs (s_1, s_{1+seg}, ... recomputed on the
#   fly, never stored) the recompute costs ~t_max (seg / 2 + t_max / (2 seg)) pairs, minimal at seg ~ sqrt(t_max).
#   The recompute runs the forward's code on the same inputs, so the gradient is the VJP of the unrolled iteration
#   for every seg (seg is a config knob that changes no value).
# ---------------------------------------------------------------------------------------------------------------
def sinkhorn_tile_bwd(u0, g, valid, t_max: int, seg: int, log_eps, ax: Axes):
    """d loss / d logits from the logits u0 (-inf outside `valid`) and g = d loss / d H_res (0 outside)."""
    s1 = pair0(u0, valid, log_eps, ax)
    uT = iterate(s1, 1, t_max, log_eps, ax)
    du = jnp.where(valid, g * jnp.exp(uT), 0.0)  # through H = exp(s_T)
    nseg = -(-(t_max - 1) // seg)

    def segment(si, du):  # pairs [start, end), last segment first
        start = 1 + (nseg - 1 - si) * seg
        end = jnp.minimum(start + seg, t_max)
        us = iterate(s1, 1, start, log_eps, ax)

        def reverse_pair(qi, du):
            u = iterate(us, start, end - 1 - qi, log_eps, ax)  # s_q, q = end - 1 - qi
            a = normalise(u, ax.col, log_eps)
            du = normalise_bwd(normalise(a, ax.row, log_eps), du, ax.row)
            return normalise_bwd(a, du, ax.col)

        return lax.fori_loop(0, end - start, reverse_pair, du)

    du = lax.fori_loop(0, nseg, segment, du)
    # reverse pair 0: u0 -> a (exact softmax) -> a2 = a + eps -> a2 - D_row(a2)
    a = normalise(u0, ax.col, None)
    a2 = jnp.where(valid, logaddexp(a, log_eps), NEG_INF) if log_eps is not None else a
    du = normalise_bwd(normalise(a2, ax.row, log_eps), du, ax.row)
    if log_eps is not None:
        du = jnp.where(valid, du * jnp.exp(-softplus(log_eps - a)), 0.0)  # d a2 / d a = exp(a) / (exp(a) + eps)
    return normalise_bwd(a, du, ax.col)


# ---------------------------------------------------------------------------------------------------------------
# Kernels over (BLOCK_T, NP, NP) tiles of logits
# ---------------------------------------------------------------------------------------------------------------
ROW_MAJOR = Axes(col=1, row=2)


def _valid(shape, n: int):
    i = lax.broadcasted_iota(jnp.int32, shape, 1)
    j = lax.broadcasted_iota(jnp.int32, shape, 2)
    return (i < n) & (j < n)


def _fwd_kernel(i_ref, f_ref, l_ref, h_ref, *, n, has_eps):
    u = l_ref[...].astype(f_ref.dtype)  # (BT, NP, NP)
    valid = _valid(u.shape, n)
    log_eps = f_ref[0] if has_eps else None
    u = sinkhorn_tile(jnp.where(valid, u, NEG_INF), valid, i_ref[0], log_eps, ROW_MAJOR)
    h_ref[...] = jnp.exp(u).astype(h_ref.dtype)


def _bwd_kernel(i_ref, f_ref, l_ref, g_ref, dl_ref, *, n, has_eps):
    u = l_ref[...].astype(f_ref.dtype)
    valid = _valid(u.shape, n)
    g = jnp.where(valid, g_ref[...].astype(f_ref.dtype), 0.0)
    log_eps = f_ref[0] if has_eps else None
    du = sinkhorn_tile_bwd(jnp.where(valid, u, NEG_INF), g, valid, i_ref[0], i_ref[1], log_eps, ROW_MAJOR)
    dl_ref[...] = du.astype(dl_ref.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Launchers: (N, n, n) arrays padded to (N_pad, NP, NP); padding lanes are masked inside the kernels.
# t_max, the recompute segment and log eps reach the kernels as runtime scalars (int32 and compute-dtype arrays),
# so one compiled kernel serves every value of them; only eps > 0 vs eps = 0 is a different kernel.
# ---------------------------------------------------------------------------------------------------------------
def log_eps_of(eps: float) -> float:
    return math.log(eps) if eps > 0 else 0.0


@functools.cache
def _tile_call(backward: bool, n: int, has_eps: bool, conf: cfg.KernelConfig, interpret: bool):
    """The jitted pallas_call over padded (N_pad, NP, NP) arrays, one per static setting (jit then caches per
    padded token count, so eager calls of different leading shapes share compiled kernels)."""
    kernel = partial(_bwd_kernel if backward else _fwd_kernel, n=n, has_eps=has_eps)

    def run(ints, floats, *padded):
        Np, NP, _ = padded[0].shape
        spec = pl.BlockSpec((conf.block_t, NP, NP), lambda i: (i, 0, 0))
        return pl.pallas_call(
            kernel, out_shape=jax.ShapeDtypeStruct(padded[0].shape, padded[0].dtype), grid=(Np // conf.block_t,),
            in_specs=[scalar_spec(ints), scalar_spec(floats)] + [spec] * len(padded), out_specs=spec,
            interpret=interpret, compiler_params=compiler_params(conf, interpret),
            name="mhc_sinkhorn_" + ("bwd" if backward else "fwd"),
        )(ints, floats, *padded)

    return jax.jit(run)


@partial(jax.jit, static_argnames=("Np", "NP"))
def _pad(arrays, *, Np: int, NP: int):
    """(..., n, n) arrays -> (N_pad, NP, NP) in arrays[0]'s dtype (one small jitted program per shape: eager
    reshapes and pads would each compile on every new shape)."""
    n = arrays[0].shape[-1]
    return [pad_to(pad_to(pad_to(a.reshape(-1, n, n).astype(arrays[0].dtype), 0, Np), 1, NP), 2, NP) for a in arrays]


@partial(jax.jit, static_argnames=("shape",))
def _unpad(out, *, shape):
    n = shape[-1]
    return out[:math.prod(shape[:-2]), :n, :n].reshape(shape)


def _launch(backward: bool, arrays, t_max: int, eps: float, interpret: bool):
    """Pad (..., n, n) arrays to (N_pad, NP, NP), run, slice back; the output has arrays[0]'s dtype."""
    shape = tuple(arrays[0].shape)
    n, N = shape[-1], math.prod(shape[:-2])
    conf = cfg.choose(OP, n=n, C=1, tokens=N, t_max=t_max, interpret=interpret)
    padded = _pad(arrays, Np=round_up(max(N, 1), conf.block_t), NP=cfg.next_pow2(n))
    ints = np.asarray([t_max, conf.sinkhorn_seg], np.int32)  # host arrays: no compile per value
    floats = np.asarray([log_eps_of(eps)], compute_dtype(arrays[0].dtype))
    out = _tile_call(backward, n, eps > 0, static_part(conf), interpret)(ints, floats, *padded)
    return _unpad(out, shape=shape)


def sinkhorn_forward(logits, t_max: int, eps: float, interpret: bool):
    """logits (..., n, n) -> H_res (..., n, n) in logits' dtype."""
    return _launch(False, [logits], t_max, eps, interpret)


def sinkhorn_backward(logits, g, t_max: int, eps: float, interpret: bool):
    """d loss / d logits (..., n, n) in logits' dtype."""
    return _launch(True, [logits, g], t_max, eps, interpret)


# ---------------------------------------------------------------------------------------------------------------
# custom_vjp
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    t_max: int
    eps: float
    interpret: bool
    backward: str  # "pallas": the kernel above; "reference": the VJP of the jnp op (mhc_backends.jax.sinkhorn)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _sinkhorn(logits, o: Options):
    return sinkhorn_forward(logits, o.t_max, o.eps, o.interpret)


def _sinkhorn_fwd(logits, o: Options):
    return _sinkhorn(logits, o), logits  # the backward keeps no Sinkhorn state, only the logits


def _sinkhorn_bwd(o: Options, logits, g):
    if o.backward == "reference":
        _, vjp = jax.vjp(lambda L: sinkhorn_jnp(L, t_max=o.t_max, eps=o.eps), logits)
        return vjp(g)
    return (sinkhorn_backward(logits, g, o.t_max, o.eps, o.interpret),)


_sinkhorn.defvjp(_sinkhorn_fwd, _sinkhorn_bwd)


def sinkhorn_unchecked(logits, o: Options):
    """The kernel op on validated inputs: (..., n, n) -> (..., n, n), same dtype, float32 math for 16-bit.

    Not jitted as a whole: eagerly, the pallas_calls are cached per padded token count (and the small pad / slice
    programs per shape), so leading shapes that pad to the same size share one compiled kernel; under a caller's
    jit it is traced like any jnp code."""
    return _sinkhorn(logits, o)


def sinkhorn(logits, *, t_max: int = 20, eps: float = 0.0, interpret: bool | None = None,
             backward: str = "pallas"):
    """H_res (..., n, n) = Sinkhorn-Knopp(exp(logits (..., n, n))), P Eq. 9, as a Pallas kernel; same dtype as
    logits, float32 math for 16-bit logits. `interpret` defaults to True on CPU; `backward="reference"` takes the
    gradient from the jnp op instead of the backward kernel."""
    validate_sinkhorn(logits, t_max, eps)
    o = Options(int(t_max), float(eps), resolve(interpret, backward, OP), backward)
    with _checks.x64_scope(logits):
        return sinkhorn_unchecked(logits, o)
