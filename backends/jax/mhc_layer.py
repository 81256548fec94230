"""One mHC layer, P Eq. 3 with the maps of Eqs. 7-9 (jnp):

    H_pre, H_post, H_res = mhc_coeffs(x_l)
    x_{l+1} = H_res x_l + H_post^T F(H_pre x_l)          H_pre and H_res act on the same, un-mixed x_l

`sublayer` is a (C, C) array w_sub, meaning the spec's probe sublayer F(u) = tanh(rmsnorm(u) @ w_sub) (rmsnorm
without weight, eps = spec conformance.probe_rms_eps), or any function (..., C) -> (..., C) (e.g. a bound Flax
module, which includes its own pre-norm). With 16-bit x the maps are kept in float32 and the mixing runs in float32;
F runs in x's dtype. With w_sub the whole layer is one jitted function; with a function F the three mHC pieces are
jitted and F runs as given (wrap the caller in `jax.jit` to fuse everything).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from mhc_spec.table import load

from . import _checks
from .hc_coeffs import rms_normalize
from .mhc_coeffs import OPTIONS, mhc_coeffs_unchecked, validate, validate_options
from .mhc_post_res import mhc_post_res_unchecked
from .mhc_pre import mhc_pre_unchecked

OP = "mhc_layer"
PROBE_RMS_EPS = load().conformance["probe_rms_eps"]


def probe_sublayer(u, w_sub, eps: float = PROBE_RMS_EPS):
    """F(u) = tanh(rmsnorm(u) @ w_sub), u (..., C) -> (..., C); the norm in float32 for 16-bit u, the matmul
    accumulated in float32 and rounded once to u's dtype (as a GPU / torch CPU matmul does)."""
    u_n = rms_normalize(u.astype(_checks.compute_dtype(u.dtype)), eps).astype(u.dtype)  # (..., C)
    z = jnp.matmul(u_n, w_sub.astype(u.dtype), precision=jax.lax.Precision.HIGHEST,
                   preferred_element_type=_checks.compute_dtype(u.dtype))
    return jnp.tanh(z.astype(u.dtype))


def is_array(a) -> bool:
    return isinstance(a, (jax.Array, np.ndarray))


def validate_layer(x, phi, alpha, b, sublayer, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout,
                   op: str = OP) -> dict:
    """The checks of every mhc_layer implementation (jnp and Pallas): arrays, options, sublayer; returns the
    normalised options."""
    _, C = validate(x, phi, alpha, b, op)
    opts = validate_options(op, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout)
    _checks.check_nonzero_tokens(x, rms_eps, op)
    if is_array(sublayer):
        _checks.check_like_x("w_sub", sublayer, x, (C, C), op, " (C, C)")
    elif not callable(sublayer):
        raise TypeError(f"{op}: sublayer must be a (C, C) array w_sub or a callable, got {type(sublayer).__name__}")
    return opts


def mhc_layer_unchecked(x, phi, alpha, b, sublayer, **options):
    """The layer with F = sublayer (a function, or an array w_sub for the probe sublayer); traceable, no checks."""
    h_pre, h_post, h_res = mhc_coeffs_unchecked(x, phi, alpha, b, maps_dtype=_checks.compute_dtype(x.dtype),
                                                **options)
    u = mhc_pre_unchecked(x, h_pre)  # (..., C)
    f_out = probe_sublayer(u, sublayer) if is_array(sublayer) else sublayer(u)
    return mhc_post_res_unchecked(x, f_out.astype(x.dtype), h_post, h_res)  # (..., n, C)


@partial(jax.jit, static_argnames=OPTIONS)
def mhc_layer_probe(x, phi, alpha, b, w_sub, **options):
    """The layer around the probe sublayer as one jitted function."""
    return mhc_layer_unchecked(x, phi, alpha, b, w_sub, **options)


def mhc_layer(x, phi, alpha, b, sublayer, *, t_max: int = 20, sinkhorn_eps: float = 0.0, pre_eps: float = 0.0,
              post_scale: float = 2.0, rms_eps: float = 1e-20, res_layout: str = "row_major"):
    """x_{l+1} (..., n, C) from x_l (..., n, C), P Eq. 3. Defaults are the `paper` preset."""
    opts = validate_layer(x, phi, alpha, b, sublayer, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps,
                          res_layout)
    with _checks.x64_scope(x, phi, alpha, b, sublayer if is_array(sublayer) else None):
        if is_array(sublayer):
            out = mhc_layer_probe(x, phi, alpha, b, sublayer, **opts)
        else:
            out = mhc_layer_unchecked(x, phi, alpha, b, sublayer, **opts)
    _checks.check_outputs(OP, out, x, phi, alpha, b)
    return out
