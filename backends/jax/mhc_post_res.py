"""Residual mixing plus the scattered sublayer output, P Eq. 3:

    y[..., i, c] = sum_j H_res[..., i, j] x[..., j, c] + H_post[..., i] f[..., c]      rows of H_res = output streams

16-bit x and f_out are mixed in float32 (the maps may be float32 or x's dtype); the result has x's dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _checks

OP = "mhc_post_res"


def validate(x, f_out, h_post, h_res, op: str = OP) -> int:
    n, C = _checks.check_stream_state("x", x, op)
    lead = tuple(x.shape[:-2])
    why = f" for x of shape {tuple(x.shape)}"
    _checks.check_array("f_out", f_out, op, ndim_min=0, scan=False)
    if jnp.dtype(f_out.dtype) != jnp.dtype(x.dtype):
        raise TypeError(f"{op}: f_out must have x's dtype {x.dtype}, got {f_out.dtype}")
    _checks.check_shape("f_out", f_out, lead + (C,), op, why)
    _checks.check_finite("f_out", f_out, op)
    _checks.check_like_x("h_post", h_post, x, lead + (n,), op, why)
    _checks.check_like_x("h_res", h_res, x, lead + (n, n), op, why)
    return n


@jax.jit
def mhc_post_res_unchecked(x, f_out, h_post, h_res):
    cd = _checks.compute_dtype(x.dtype)
    y = jnp.einsum("...ij,...jc->...ic", h_res.astype(cd), x.astype(cd), precision=jax.lax.Precision.HIGHEST)
    y = y + h_post.astype(cd)[..., :, None] * f_out.astype(cd)[..., None, :]  # (..., n, 1) * (..., 1, C)
    return y.astype(x.dtype)


def mhc_post_res(x, f_out, h_post, h_res):
    """x (..., n, C), f_out (..., C), h_post (..., n), h_res (..., n, n) -> (..., n, C)."""
    validate(x, f_out, h_post, h_res)
    with _checks.x64_scope(x, f_out, h_post, h_res):
        out = mhc_post_res_unchecked(x, f_out, h_post, h_res)
    _checks.check_outputs(OP, out, x, f_out, h_post, h_res)
    return out
