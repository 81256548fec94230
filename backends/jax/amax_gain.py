"""Amax gain magnitude of the residual maps, P Sec. 3.1 (Figs. 3 and 7), in jnp: a diagnostic, not differentiated.
The six gains (per layer, and of the prefix / suffix products) are defined in spec/mhc.md, "amax_gain". Computed in
float64 (the call enters the scoped x64 switch); inside a trace that was started without x64, in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import _contract
from . import _checks

OP = "amax_gain"
KEYS = ("forward_gain", "backward_gain", "min_col_sum", "composite_forward_gain", "composite_backward_gain",
        "composite_min_col_sum")
HIGHEST = jax.lax.Precision.HIGHEST


def _gains(M):
    rows, cols = M.sum(axis=-1), M.sum(axis=-2)  # (..., n)
    return (jnp.abs(rows).max(axis=-1).mean(), jnp.abs(cols).max(axis=-1).mean(), cols.min(axis=-1).mean())


@jax.jit
def amax_gain_unchecked(h_res):
    h = jax.lax.stop_gradient(h_res).astype(jnp.float64 if _checks.x64_enabled() else jnp.float32)
    L = h.shape[0]
    per = {k: [None] * L for k in KEYS}
    prefix = suffix = None
    for l in range(L):
        per["forward_gain"][l], per["backward_gain"][l], per["min_col_sum"][l] = _gains(h[l])
        prefix = h[l] if prefix is None else jnp.matmul(h[l], prefix, precision=HIGHEST)  # P_l (..., n, n)
        per["composite_forward_gain"][l] = _gains(prefix)[0]
        k = L - 1 - l
        suffix = h[k] if suffix is None else jnp.matmul(suffix, h[k], precision=HIGHEST)  # Q_k (..., n, n)
        _, per["composite_backward_gain"][k], per["composite_min_col_sum"][k] = _gains(suffix)
    return {k: jnp.stack(v) for k, v in per.items()}


def amax_gain(h_res) -> dict:
    """h_res (L, ..., n, n), layer axis first -> dict of six (L,) float64 arrays."""
    _checks.check_array("h_res", h_res, OP, ndim_min=3)
    _contract.check_gain_maps("h_res", h_res, OP)
    with _checks.x64_scope(h_res, force=_checks.is_concrete(h_res)):
        return amax_gain_unchecked(h_res)
