"""Hyper-Connections baseline maps as the mHC paper writes them, P Eq. 5 (dynamic HC, HC Eqs. 10-13):

    x_tilde = RMSNorm(x)                    per stream over C, no weight        (..., n, C)
    H_pre   = alpha[0] tanh(theta_pre  x_tilde^T) + b_pre     theta_pre  (C,)      -> (..., n)
    H_post  = alpha[1] tanh(theta_post x_tilde^T) + b_post    theta_post (C,)      -> (..., n)
    H_res   = alpha[2] tanh(theta_res  x_tilde^T) + b_res     theta_res  (n, C)    -> (..., n, n)

(theta_res x_tilde^T)[i, j] = theta_res[i] . x_tilde[j]. Unconstrained maps (no sigmoid, no Sinkhorn). 16-bit x
is computed in float32; the maps are returned in `maps_dtype` (default x's dtype).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from .. import _contract
from . import _checks

OP = "hc_coeffs"
NAMES = ("theta_pre", "theta_post", "theta_res", "alpha", "b_pre", "b_post", "b_res")
HIGHEST = jax.lax.Precision.HIGHEST


def rms_normalize(x, eps: float):
    """x / sqrt(mean(x^2) + eps) over the last axis (RMSNorm without weight)."""
    y, rho = _checks.rms_scaled(x, eps)  # scale-safe: x / r = (x / t) / rho
    return y / rho


def validate(x, params, op: str = OP) -> None:
    _checks.check_stream_state("x", x, op)
    _contract.check_all(_checks.check_like_x, x, dict(zip(NAMES, params)), _contract.hc_shapes(x), op)


@partial(jax.jit, static_argnames=("rms_eps", "maps_dtype"))
def hc_coeffs_unchecked(x, theta_pre, theta_post, theta_res, alpha, b_pre, b_post, b_res, *, rms_eps,
                        maps_dtype=None):
    out = x.dtype if maps_dtype is None else maps_dtype
    cd = _checks.compute_dtype(x.dtype)
    x_t = rms_normalize(x.astype(cd), rms_eps)  # (..., n, C) per-stream RMSNorm
    alpha = alpha.astype(cd)
    h_pre = alpha[0] * jnp.tanh(jnp.matmul(x_t, theta_pre.astype(cd), precision=HIGHEST)) + b_pre.astype(cd)
    h_post = alpha[1] * jnp.tanh(jnp.matmul(x_t, theta_post.astype(cd), precision=HIGHEST)) + b_post.astype(cd)
    a_res = jnp.einsum("ic,...jc->...ij", theta_res.astype(cd), x_t, precision=HIGHEST)  # (..., n, n)
    h_res = alpha[2] * jnp.tanh(a_res) + b_res.astype(cd)
    return h_pre.astype(out), h_post.astype(out), h_res.astype(out)


def hc_coeffs(x, theta_pre, theta_post, theta_res, alpha, b_pre, b_post, b_res, *, rms_eps: float = 1e-20,
              maps_dtype=None):
    """(H_pre (..., n), H_post (..., n), H_res (..., n, n)) of the HC baseline, P Eq. 5."""
    params = (theta_pre, theta_post, theta_res, alpha, b_pre, b_post, b_res)
    validate(x, params)
    rms_eps = _checks.check_float("rms_eps", rms_eps, OP)
    md = None if maps_dtype is None else jnp.dtype(maps_dtype)
    with _checks.x64_scope(x, *params):
        out = hc_coeffs_unchecked(x, *params, rms_eps=rms_eps, maps_dtype=md)
    _checks.check_outputs(OP, out, x, *params)
    return out
