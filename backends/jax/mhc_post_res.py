"""`mhc_post_res` in jnp: H_res x_l + H_post^T f, the stream update of P Eq. 3 (spec/mhc.md); 16-bit x and f mix
in float32 and the result has x's dtype."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import _contract
from . import _checks

OP = "mhc_post_res"


def validate(x, f_out, h_post, h_res, op: str = OP) -> int:
    n, _ = _checks.check_stream_state("x", x, op)
    shapes = _contract.post_res_shapes(x)
    _checks.check_array("f_out", f_out, op, ndim_min=0, scan=False)
    if jnp.dtype(f_out.dtype) != jnp.dtype(x.dtype):  # f_out is an activation: x's dtype, not a map's float32
        raise TypeError(f"{op}: f_out must have x's dtype {x.dtype}, got {f_out.dtype}")
    expected, why = shapes.pop("f_out")
    _checks.check_shape("f_out", f_out, expected, op, why)
    _checks.check_finite("f_out", f_out, op)
    _contract.check_all(_checks.check_like_x, x, {"h_post": h_post, "h_res": h_res}, shapes, op)
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
