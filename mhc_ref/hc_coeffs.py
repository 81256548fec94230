"""Hyper-Connections baseline maps as the mHC paper writes them, P Eq. 5 (dynamic HC, HC Eqs. 10-13):

    x_tilde = RMSNorm(x)                    per stream over C, no weight          (..., n, C)
    H_pre   = alpha_pre  * tanh(theta_pre  x_tilde^T) + b_pre     theta_pre  (C,)     -> (..., n)
    H_post  = alpha_post * tanh(theta_post x_tilde^T) + b_post    theta_post (C,)     -> (..., n)
    H_res   = alpha_res  * tanh(theta_res  x_tilde^T) + b_res     theta_res  (n, C)   -> (..., n, n)

(theta_res x_tilde^T)[i, j] = theta_res[i] . x_tilde[j]: column j of H_res depends on stream j. The maps are
unconstrained (no sigmoid, no Sinkhorn). HC's initialisation (HC Eq. 14) is `mhc_ref.init.hc_init`.
"""

from __future__ import annotations

import numpy as np

from ._common import (
    cast,
    check_array,
    check_map_cotangents,
    check_nonzero_rms,
    check_shape,
    check_stream_state,
    compute_dtype_of,
    matmul,
    options,
    rms,
)

OP = "hc_coeffs"
_NAMES = ("theta_pre", "theta_post", "theta_res", "alpha", "b_pre", "b_post", "b_res")


def _validate(x, params, op):
    x, n, C = check_stream_state("x", x, op)
    shapes = {"theta_pre": (C,), "theta_post": (C,), "theta_res": (n, C), "alpha": (3,), "b_pre": (n,),
              "b_post": (n,), "b_res": (n, n)}
    for name, value in zip(_NAMES, params):
        check_shape(name, check_array(name, value, 1, op), shapes[name], op)


def _forward(x, theta_pre, theta_post, theta_res, alpha, rms_eps, op=OP):
    r = rms(x, rms_eps)  # (..., n, 1), scale-safe
    check_nonzero_rms(r, rms_eps, op, "stream whose C")  # the RMSNorm is per stream
    x_t = x / r  # (..., n, C) per-stream RMSNorm
    a_pre = matmul(x_t, theta_pre[:, None])[..., 0]  # (..., n)
    a_post = matmul(x_t, theta_post[:, None])[..., 0]  # (..., n)
    a_res = matmul(theta_res, np.swapaxes(x_t, -1, -2))  # (n, C) @ (..., C, n) -> (..., n, n)
    return x_t, a_pre, a_post, a_res


def hc_coeffs(x, theta_pre, theta_post, theta_res, alpha, b_pre, b_post, b_res, *, rms_eps=None, preset=None,
              compute_dtype="float64"):
    """(H_pre (..., n), H_post (..., n), H_res (..., n, n)) of the HC baseline, P Eq. 5."""
    params = (theta_pre, theta_post, theta_res, alpha, b_pre, b_post, b_res)
    _validate(x, params, OP)
    opts = options(OP, preset, dict(rms_eps=rms_eps))
    x, theta_pre, theta_post, theta_res, alpha, b_pre, b_post, b_res = cast(compute_dtype_of(compute_dtype), x,
                                                                            *params)
    _, a_pre, a_post, a_res = _forward(x, theta_pre, theta_post, theta_res, alpha, opts["rms_eps"])
    return alpha[0] * np.tanh(a_pre) + b_pre, alpha[1] * np.tanh(a_post) + b_post, alpha[2] * np.tanh(a_res) + b_res


def hc_coeffs_vjp(x, theta_pre, theta_post, theta_res, alpha, b_pre, b_post, b_res, g_h_pre, g_h_post, g_h_res, *,
                  rms_eps=None, preset=None, compute_dtype="float64"):
    """Gradients of every input given the cotangents of (H_pre, H_post, H_res); None means zero."""
    params = (theta_pre, theta_post, theta_res, alpha, b_pre, b_post, b_res)
    _validate(x, params, OP + "_vjp")
    check_map_cotangents(OP + "_vjp", x.shape, g_h_pre, g_h_post, g_h_res)
    opts = options(OP, preset, dict(rms_eps=rms_eps))
    dt = compute_dtype_of(compute_dtype)
    x, theta_pre, theta_post, theta_res, alpha, b_pre, b_post, b_res = cast(dt, x, *params)
    n, C = x.shape[-2], x.shape[-1]
    lead = x.shape[:-2]
    g_pre = np.zeros(lead + (n,), dt) if g_h_pre is None else g_h_pre.astype(dt)
    g_post = np.zeros(lead + (n,), dt) if g_h_post is None else g_h_post.astype(dt)
    g_res = np.zeros(lead + (n, n), dt) if g_h_res is None else g_h_res.astype(dt)
    r = rms(x, opts["rms_eps"])
    x_t, a_pre, a_post, a_res = _forward(x, theta_pre, theta_post, theta_res, alpha, opts["rms_eps"], OP + "_vjp")
    t_pre, t_post, t_res = np.tanh(a_pre), np.tanh(a_post), np.tanh(a_res)
    da_pre = g_pre * alpha[0] * (1 - t_pre**2)  # (..., n)
    da_post = g_post * alpha[1] * (1 - t_post**2)  # (..., n)
    da_res = g_res * alpha[2] * (1 - t_res**2)  # (..., n, n): [i, j] -> theta_res[i] . x_t[j]
    flat = lambda a: a.reshape((-1,) + a.shape[len(lead):])  # noqa: E731
    dx_t = (da_pre[..., None] * theta_pre + da_post[..., None] * theta_post
            + matmul(np.swapaxes(da_res, -1, -2), theta_res))  # (..., n, C)
    # x_t = x / r, r = sqrt(mean_C(x^2) + eps):  dx = dx_t / r - x * sum_C(dx_t * x) / (C r^3)
    #                                               = (dx_t - x_t * sum_C(dx_t * x_t) / C) / r   (no r^3 overflow)
    dx = (dx_t - x_t * np.sum(dx_t * x_t, axis=-1, keepdims=True) / C) / r
    return {
        "x": dx,
        # sums over tokens t and streams as one matmul each (np.einsum rejects bfloat16)
        "theta_pre": matmul(flat(da_pre).reshape(1, -1), flat(x_t).reshape(-1, C))[0],  # (C,)
        "theta_post": matmul(flat(da_post).reshape(1, -1), flat(x_t).reshape(-1, C))[0],  # (C,)
        "theta_res": matmul(np.swapaxes(flat(da_res), 0, 1).reshape(n, -1), flat(x_t).reshape(-1, C)),  # (n, C)
        "alpha": np.array([np.sum(g_pre * t_pre), np.sum(g_post * t_post), np.sum(g_res * t_res)], dtype=dt),
        "b_pre": flat(g_pre).sum(axis=0),
        "b_post": flat(g_post).sum(axis=0),
        "b_res": flat(g_res).sum(axis=0),
    }
