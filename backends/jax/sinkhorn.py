"""Sinkhorn-Knopp projection of exp(logits), P Eq. 9, in the log domain (jnp, gradient by autodiff).

    M^0 = exp(L);  M^t = T_r(T_c(M^{t-1})), t = 1..t_max;  H_res = M^{t_max}      (column first, row last)

With eps > 0 (DeepSeek-V4): H = T_r^eps(T_c(exp L) + eps), then t_max - 1 times T_r^eps(T_c^eps(.)), where
T^eps divides by (sum + eps). In the log domain u = log M a normalisation is `(u - m) - log s` with m = max u and
s = sum exp(u - m) (issue 9's precision rule: never `u - (m + log s)`, which rounds at the scale of |m|), and the
eps term is taken relative to the log-sum on whichever side of log eps it lies, as `mhc_ref.sinkhorn`.

The gradient is autodiff through the iteration (the t_max - 1 later pairs run in a `lax.fori_loop` with a static
trip count, which reverse-mode differentiates as a scan that keeps every state): the exact VJP of the truncated
iteration (P Sec. 4.3.1), not the implicit gradient at convergence. m enters under `stop_gradient`: the step is
exactly invariant to it, so its gradient is the reference's `du - p * sum(du)`. 16-bit logits are computed in
float32 and the result is cast back.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp

from .. import _contract
from . import _checks

OP = "sinkhorn"


def normalise(u, axis: int, log_eps: float | None):
    """u - log(sum_axis exp(u) + eps) to full precision at any |u| (one T_c / T_r step)."""
    m = jax.lax.stop_gradient(jnp.max(u, axis=axis, keepdims=True))
    log_s = jnp.log(jnp.sum(jnp.exp(u - m), axis=axis, keepdims=True))  # 1 <= s <= n
    out = (u - m) - log_s
    if log_eps is None:
        return out
    a = m + log_s  # only compared with log eps and inside log1p(exp(.)), where its rounding is harmless
    eps_side = u - log_eps - jnp.log1p(jnp.exp(jnp.minimum(a - log_eps, 0.0)))
    sum_side = out - jnp.log1p(jnp.exp(jnp.minimum(log_eps - a, 0.0)))
    return jnp.where(a < log_eps, eps_side, sum_side)


def sinkhorn_log(u, t_max: int, eps: float):
    """The iteration on log-domain logits u (..., n, n) in u's dtype; returns log H_res. No validation."""
    log_eps = math.log(eps) if eps > 0 else None
    u = normalise(u, -2, None)  # the first column step is an exact softmax over each column
    if log_eps is not None:
        u = jnp.logaddexp(u, jnp.asarray(log_eps, u.dtype))  # + eps
    u = normalise(u, -1, log_eps)

    def pair(_, u):
        return normalise(normalise(u, -2, log_eps), -1, log_eps)

    return jax.lax.fori_loop(0, t_max - 1, pair, u) if t_max > 1 else u


@partial(jax.jit, static_argnames=("t_max", "eps"))
def sinkhorn_unchecked(logits, *, t_max: int, eps: float):
    cd = _checks.compute_dtype(logits.dtype)
    return jnp.exp(sinkhorn_log(logits.astype(cd), t_max, eps)).astype(logits.dtype)


def validate(logits, t_max, eps, op: str = OP) -> None:
    _checks.check_array("logits", logits, op, ndim_min=2)
    _contract.square_dim("logits", logits, op)
    _checks.check_int("t_max", t_max, op, 1)
    _checks.check_float("eps", eps, op)


def sinkhorn(logits, *, t_max: int = 20, eps: float = 0.0):
    """H_res (..., n, n) = Sinkhorn-Knopp(exp(logits (..., n, n))), P Eq. 9; same dtype as logits."""
    validate(logits, t_max, eps)
    with _checks.x64_scope(logits):
        out = sinkhorn_unchecked(logits, t_max=int(t_max), eps=float(eps))
    _checks.check_outputs(OP, out, logits)
    return out
