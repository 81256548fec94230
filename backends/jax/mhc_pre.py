"""`mhc_pre` in jnp: u = H_pre x_l, the sublayer input of P Eq. 3 (spec/mhc.md); 16-bit x mixes in float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import _contract
from . import _checks

OP = "mhc_pre"


def validate(x, h_pre, op: str = OP) -> int:
    n, _ = _checks.check_stream_state("x", x, op)
    _contract.check_all(_checks.check_like_x, x, {"h_pre": h_pre}, _contract.pre_shapes(x), op)
    return n


@jax.jit
def mhc_pre_unchecked(x, h_pre):
    cd = _checks.compute_dtype(x.dtype)
    y = jnp.einsum("...k,...kc->...c", h_pre.astype(cd), x.astype(cd), precision=jax.lax.Precision.HIGHEST)
    return y.astype(x.dtype)  # (..., C)


def mhc_pre(x, h_pre):
    """x (..., n, C), h_pre (..., n) -> (..., C)."""
    validate(x, h_pre)
    with _checks.x64_scope(x, h_pre):
        out = mhc_pre_unchecked(x, h_pre)
    _checks.check_outputs(OP, out, x, h_pre)
    return out
