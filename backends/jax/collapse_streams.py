"""Leave the n-stream space, x (..., n, C) -> y (..., C) (jnp): mode "sum" (HC Algorithm 1) or "head" (DeepSeek-V4
hc_head, an H_pre-style read-out); the formulas are in spec/mhc.md, "collapse_streams". 16-bit x is reduced in
float32 and cast back.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from .. import _contract
from . import _checks
from .mhc_coeffs import projection
from .mhc_pre import mhc_pre_unchecked

OP = "collapse_streams"


def validate(x, phi_head, alpha_head, b_head, mode, op: str = OP) -> int:
    n, _ = _checks.check_stream_state("x", x, op)
    heads = {"phi_head": phi_head, "alpha_head": alpha_head, "b_head": b_head}
    _contract.check_all(_checks.check_like_x, x, heads, _contract.collapse_shapes(x, heads, mode, op), op)
    return n


def head_weights(x, phi_head, alpha_head, b_head, *, rms_eps, pre_eps):
    """w (..., n) in the compute dtype (float32 for 16-bit x)."""
    cd = _checks.compute_dtype(x.dtype)
    m = projection(x.astype(cd), phi_head.astype(cd), rms_eps)  # (..., n)
    return jax.nn.sigmoid(alpha_head.astype(cd)[0] * m + b_head.astype(cd)) + pre_eps


@partial(jax.jit, static_argnames=("mode", "rms_eps", "pre_eps"))
def collapse_streams_unchecked(x, phi_head, alpha_head, b_head, *, mode, rms_eps, pre_eps):
    if mode == "sum":
        return jnp.sum(x.astype(_checks.compute_dtype(x.dtype)), axis=-2).astype(x.dtype)  # (..., C)
    w = head_weights(x, phi_head, alpha_head, b_head, rms_eps=rms_eps, pre_eps=pre_eps)
    return mhc_pre_unchecked(x, w)


def collapse_streams(x, phi_head=None, alpha_head=None, b_head=None, *, mode: str = "sum", rms_eps: float = 1e-20,
                     pre_eps: float = 0.0):
    """x (..., n, C) -> (..., C) by `mode` ('sum' or 'head')."""
    validate(x, phi_head, alpha_head, b_head, mode)
    rms_eps = _checks.check_float("rms_eps", rms_eps, OP)
    pre_eps = _checks.check_float("pre_eps", pre_eps, OP)
    if mode == "head":
        _checks.check_nonzero_tokens(x, rms_eps, OP)
    with _checks.x64_scope(x, phi_head, alpha_head, b_head):
        out = collapse_streams_unchecked(x, phi_head, alpha_head, b_head, mode=mode, rms_eps=rms_eps,
                                         pre_eps=pre_eps)
    _checks.check_outputs(OP, out, x, phi_head, alpha_head, b_head)
    return out
