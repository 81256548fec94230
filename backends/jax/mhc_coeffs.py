"""The three mHC maps of each token, P Eqs. 7-9 in the fused form of Eqs. 14-19 (jnp): the equations are in
spec/mhc.md, "mhc_coeffs", the res_layout `mat` in its section 3; `projection` is Eqs. 14-16 before scale and bias.

Precision: with 16-bit x the whole path (projection, RMS, sigmoids, Sinkhorn) runs in float32, as DeepSeek does;
phi, alpha, b may be float32 or x's dtype. The maps are returned in `maps_dtype` (default: x's dtype, the backend
contract; the modules and the functional layer ask for float32 and mix in float32). All options are static under jit.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from .. import _contract
from . import _checks
from .sinkhorn import sinkhorn_log

OP = "mhc_coeffs"
LAYOUTS = ("row_major", "col_major")
HIGHEST = jax.lax.Precision.HIGHEST  # float32 matmuls in full float32 on every device (no bf16 passes)
OPTIONS = ("t_max", "sinkhorn_eps", "pre_eps", "post_scale", "rms_eps", "res_layout")


def mat(v, n: int, layout: str):
    """(..., n*n) -> (..., n, n) in the named layout."""
    H = v.reshape(*v.shape[:-1], n, n)  # row_major: H[i, j] = v[i*n + j]
    return H if layout == "row_major" else jnp.swapaxes(H, -1, -2)


def projection(x, w, rms_eps: float):
    """m = (x_bar @ w) / r, P Eqs. 14-16 before scale and bias; x (..., n, C), w (n*C, k) -> (..., k)."""
    x_bar = x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])  # (..., n*C), stream-major
    y, rho = _checks.rms_scaled(x_bar, rms_eps)  # r = t * rho; y = x_bar / t exact (t a power of two)
    return jnp.matmul(y, w, precision=HIGHEST) / rho  # = (x_bar @ w) / r, no overflow of x_bar^2


def validate(x, phi, alpha, b, op: str = OP) -> tuple[int, int]:
    n, C = _checks.check_stream_state("x", x, op)
    _checks.check_array("phi", phi, op, ndim_min=0, scan=False)
    shapes = _contract.coeffs_shapes(x, phi, op)
    _contract.check_all(_checks.check_like_x, x, {"phi": phi, "alpha": alpha, "b": b}, shapes, op)
    return n, C


def validate_options(op, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout) -> dict:
    """The options checked and normalised (Python int / float / str: hashable static arguments of jit)."""
    out = {"t_max": _checks.check_int("t_max", t_max, op, 1)}
    for name, v in (("sinkhorn_eps", sinkhorn_eps), ("pre_eps", pre_eps), ("post_scale", post_scale),
                    ("rms_eps", rms_eps)):
        out[name] = _checks.check_float(name, v, op)
    out["res_layout"] = _checks.check_choice("res_layout", res_layout, LAYOUTS, op)
    return out


@partial(jax.jit, static_argnames=OPTIONS + ("maps_dtype",))
def mhc_coeffs_unchecked(x, phi, alpha, b, *, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout,
                         maps_dtype=None):
    n = x.shape[-2]
    cd = _checks.compute_dtype(x.dtype)
    alpha, b = alpha.astype(cd), b.astype(cd)
    m = projection(x.astype(cd), phi.astype(cd), rms_eps)  # (..., n^2 + 2n)
    h_pre = jax.nn.sigmoid(alpha[0] * m[..., :n] + b[:n]) + pre_eps  # (..., n)
    h_post = post_scale * jax.nn.sigmoid(alpha[1] * m[..., n:2 * n] + b[n:2 * n])  # (..., n)
    logits = mat(alpha[2] * m[..., 2 * n:] + b[2 * n:], n, res_layout)  # (..., n, n)
    h_res = jnp.exp(sinkhorn_log(logits, t_max, sinkhorn_eps))  # (..., n, n)
    out = x.dtype if maps_dtype is None else maps_dtype
    return h_pre.astype(out), h_post.astype(out), h_res.astype(out)


def mhc_coeffs(x, phi, alpha, b, *, t_max: int = 20, sinkhorn_eps: float = 0.0, pre_eps: float = 0.0,
               post_scale: float = 2.0, rms_eps: float = 1e-20, res_layout: str = "row_major", maps_dtype=None):
    """(H_pre (..., n), H_post (..., n), H_res (..., n, n)) from x (..., n, C). Defaults are the `paper` preset."""
    validate(x, phi, alpha, b)
    opts = validate_options(OP, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout)
    _checks.check_nonzero_tokens(x, rms_eps, OP)
    md = None if maps_dtype is None else jnp.dtype(maps_dtype)
    with _checks.x64_scope(x, phi, alpha, b):
        out = mhc_coeffs_unchecked(x, phi, alpha, b, maps_dtype=md, **opts)
    _checks.check_outputs(OP, out, x, phi, alpha, b)
    return out
