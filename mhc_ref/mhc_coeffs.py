"""The three mHC maps of a token, P Eqs. 7-8 and their fused form Eqs. 14-19.

    x_bar  = vec(x)                       (..., n*C)  stream-major
    r      = sqrt(mean(x_bar^2) + rms_eps)                                  (15)
    m      = (x_bar @ phi) / r             phi (n*C, n^2 + 2n), columns [pre n | post n | res n^2]   (14), (16)
    H_pre  = sigmoid(alpha_pre  * m[:n]   + b[:n])   + pre_eps              (17)
    H_post = post_scale * sigmoid(alpha_post * m[n:2n] + b[n:2n])          (18)
    H_res  = sinkhorn(mat(alpha_res * m[2n:] + b[2n:]))                     (19)

`mat` is `row_major` (H[i, j] = v[i*n + j], paper) or `col_major` (H[i, j] = v[j*n + i], DeepSeek's comb[src, dst]).
An RMSNorm weight gamma folds into phi as diag(gamma) @ phi (see `mhc_ref.init.fold_norm_weight`).
"""

from __future__ import annotations

import numpy as np

from ._common import (
    cast,
    check_array,
    check_map_cotangents,
    check_shape,
    check_stream_state,
    compute_dtype_of,
    options,
    projection,
    projection_vjp,
    sigmoid,
    sum_to_shape,
)
from .sinkhorn import sinkhorn, sinkhorn_vjp

OP = "mhc_coeffs"


def mat(v: np.ndarray, n: int, layout: str) -> np.ndarray:
    """(..., n*n) -> (..., n, n) in the named layout."""
    H = v.reshape(v.shape[:-1] + (n, n))  # row_major: H[i, j] = v[i*n + j]
    return H if layout == "row_major" else np.swapaxes(H, -1, -2)


def unmat(H: np.ndarray, layout: str) -> np.ndarray:
    """Inverse of `mat`."""
    if layout == "col_major":
        H = np.swapaxes(H, -1, -2)
    return H.reshape(H.shape[:-2] + (H.shape[-2] * H.shape[-1],))  # explicit width: leading dims may be empty


def validate(x, phi, alpha, b, op: str = OP) -> tuple[int, int]:
    x, n, C = check_stream_state("x", x, op)
    width = n * n + 2 * n
    check_array("phi", phi, 2, op)
    if phi.ndim != 2 or phi.shape[0] != n * C:
        raise ValueError(f"{op}: phi must have shape (n*C, n*n+2*n) = ({n * C}, {width}) for x of shape "
                         f"{x.shape}, got {phi.shape}")
    if phi.shape[1] != width:
        raise ValueError(f"{op}: phi has {phi.shape[1]} columns, expected n*n+2*n = {width} for n = {n} "
                         f"(from x of shape {x.shape})")
    check_shape("alpha", check_array("alpha", alpha, 1, op), (3,), op)
    check_shape("b", check_array("b", b, 1, op), (width,), op)
    return n, C


def _logits(x, phi, alpha, b, opts, dt, op=OP):
    n = x.shape[-2]
    x, phi, alpha, b = cast(dt, x, phi, alpha, b)
    m, x_bar, r = projection(x, phi, opts["rms_eps"], op)  # (..., n^2 + 2n)
    scale = np.concatenate([np.full(n, alpha[0]), np.full(n, alpha[1]), np.full(n * n, alpha[2])]).astype(dt)
    with np.errstate(over="ignore", invalid="ignore"):
        z = scale * m + b  # (..., n^2 + 2n)
    if not np.all(np.isfinite(z)):  # named here, not as the Sinkhorn's `logits`
        raise ValueError(f"{op}: the map logits alpha * (x_bar @ phi) / r + b overflow {dt} in "
                         f"{int(np.sum(~np.isfinite(z)))} entries: phi, alpha or b is too large")
    return z, m, x_bar, r, scale, (x, phi)


def mhc_coeffs(x, phi, alpha, b, *, preset=None, t_max=None, sinkhorn_eps=None, pre_eps=None, post_scale=None,
               rms_eps=None, res_layout=None, compute_dtype="float64"):
    """(H_pre (..., n), H_post (..., n), H_res (..., n, n)) from x (..., n, C), P Eqs. 14-19."""
    n, _ = validate(x, phi, alpha, b)
    opts = options(OP, preset, dict(t_max=t_max, sinkhorn_eps=sinkhorn_eps, pre_eps=pre_eps,
                                    post_scale=post_scale, rms_eps=rms_eps, res_layout=res_layout))
    dt = compute_dtype_of(compute_dtype)
    z, *_ = _logits(x, phi, alpha, b, opts, dt)
    h_pre = sigmoid(z[..., :n]) + dt.type(opts["pre_eps"])  # (..., n)
    h_post = dt.type(opts["post_scale"]) * sigmoid(z[..., n:2 * n])  # (..., n)
    L = mat(z[..., 2 * n:], n, opts["res_layout"])  # (..., n, n)
    h_res = sinkhorn(L, opts["t_max"], opts["sinkhorn_eps"], compute_dtype=dt)
    return h_pre, h_post, h_res


def mhc_coeffs_vjp(x, phi, alpha, b, g_h_pre, g_h_post, g_h_res, *, preset=None, t_max=None, sinkhorn_eps=None,
                   pre_eps=None, post_scale=None, rms_eps=None, res_layout=None, compute_dtype="float64"):
    """Gradients {x, phi, alpha, b} given the cotangents of (H_pre, H_post, H_res); None means zero."""
    n, _ = validate(x, phi, alpha, b, OP + "_vjp")
    check_map_cotangents(OP + "_vjp", x.shape, g_h_pre, g_h_post, g_h_res)
    opts = options(OP, preset, dict(t_max=t_max, sinkhorn_eps=sinkhorn_eps, pre_eps=pre_eps,
                                    post_scale=post_scale, rms_eps=rms_eps, res_layout=res_layout))
    dt = compute_dtype_of(compute_dtype)
    z, m, x_bar, r, scale, (x_c, phi_c) = _logits(x, phi, alpha, b, opts, dt, OP + "_vjp")
    lead = z.shape[:-1]
    g_pre = np.zeros(lead + (n,), dt) if g_h_pre is None else g_h_pre.astype(dt)
    g_post = np.zeros(lead + (n,), dt) if g_h_post is None else g_h_post.astype(dt)
    g_res = np.zeros(lead + (n, n), dt) if g_h_res is None else g_h_res.astype(dt)

    s_pre, s_post = sigmoid(z[..., :n]), sigmoid(z[..., n:2 * n])
    dz_pre = g_pre * s_pre * (1 - s_pre)  # d sigma = sigma (1 - sigma)
    dz_post = g_post * dt.type(opts["post_scale"]) * s_post * (1 - s_post)
    L = mat(z[..., 2 * n:], n, opts["res_layout"])
    dL = sinkhorn_vjp(L, g_res, opts["t_max"], opts["sinkhorn_eps"], compute_dtype=dt)["logits"]
    dz = np.concatenate([dz_pre, dz_post, unmat(dL, opts["res_layout"])], axis=-1)  # (..., n^2 + 2n)

    dm = dz * scale
    dzm = (dz * m).reshape(-1, dz.shape[-1]).sum(axis=0)
    dalpha = np.array([dzm[:n].sum(), dzm[n:2 * n].sum(), dzm[2 * n:].sum()], dtype=dt)
    db = sum_to_shape(dz.reshape(-1, dz.shape[-1]), b.shape)
    dx, dphi = projection_vjp(dm, m, x_bar, r, phi_c, x_c.shape)
    return {"x": dx, "phi": dphi, "alpha": dalpha, "b": db}
