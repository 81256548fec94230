"""Amax gain magnitude of the residual maps, P Sec. 3.1 (Figs. 3 and 7); a diagnostic, not differentiated.

For a matrix M (rows = output streams): forward gain max_i |sum_j M_ij|, backward gain max_j |sum_i M_ij|, and the
min column sum min_j sum_i M_ij, per layer l of H_res^l. Composites (P Figs. 3b, 7b): the forward gain of the prefix
P_l = H_res^l ... H_res^0 (input -> layer l), the backward gain and min column sum of the suffix
Q_l = H_res^{L-1} ... H_res^l (layer l -> output). Each is averaged over tokens. Computed in float64 (the call
enters the scoped x64 switch); inside a trace that was started without x64, in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

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
    if h_res.shape[-1] != h_res.shape[-2]:
        raise ValueError(f"{OP}: h_res must be (L, ..., n, n) with square maps, got shape {tuple(h_res.shape)}")
    if h_res.size == 0:  # the gains are means over tokens: undefined for none
        raise ValueError(f"{OP}: h_res must hold at least one layer, one token and n >= 1, got shape "
                         f"{tuple(h_res.shape)}")
    with _checks.x64_scope(h_res, force=_checks.is_concrete(h_res)):
        return amax_gain_unchecked(h_res)
