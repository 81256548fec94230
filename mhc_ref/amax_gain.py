"""Amax gain magnitude of the residual maps, P Sec. 3.1 (Figs. 3 and 7).

For a matrix M (rows = output streams):
    forward gain  = max_i |sum_j M_ij|    (largest absolute row sum: signal amplification)
    backward gain = max_j |sum_i M_ij|    (largest absolute column sum: gradient amplification)
    min col sum   = min_j sum_i M_ij      (the attenuation the max hides; P Fig. 8 prints 0.41)
Per layer l they are taken of H_res^l. The composites follow P Figs. 3(b) and 7(b), layers 0..L-1:
    forward:  P_l = H_res^l H_res^{l-1} ... H_res^0       (input -> layer l: how the signal is amplified)
    backward: Q_l = H_res^{L-1} ... H_res^{l+1} H_res^l   (layer l -> output: how the gradient is amplified)
composite_forward_gain[l] is the forward gain of P_l; composite_backward_gain[l] and composite_min_col_sum[l] are the
backward gain and min column sum of Q_l. Each quantity is computed per token and then averaged over all tokens.
"""

from __future__ import annotations

import numpy as np

from ._common import check_array

OP = "amax_gain"


def _gains(M: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = np.sum(M, axis=-1)  # (..., n)
    cols = np.sum(M, axis=-2)  # (..., n)
    return (np.mean(np.max(np.abs(rows), axis=-1)), np.mean(np.max(np.abs(cols), axis=-1)),
            np.mean(np.min(cols, axis=-1)))


def amax_gain(h_res):
    """h_res (L, ..., n, n), layer axis first -> dict of six (L,) arrays (see module docstring)."""
    check_array("h_res", h_res, 3, OP)
    if h_res.shape[-1] != h_res.shape[-2]:
        raise ValueError(f"{OP}: h_res must be (L, ..., n, n) with square maps, got shape {h_res.shape}")
    if h_res.size == 0:  # the gains are means over tokens: undefined for none
        raise ValueError(f"{OP}: h_res must hold at least one layer, one token and n >= 1, got shape {h_res.shape}")
    h = h_res.astype(np.float64)
    out = {k: np.zeros(h.shape[0]) for k in ("forward_gain", "backward_gain", "min_col_sum",
                                             "composite_forward_gain", "composite_backward_gain",
                                             "composite_min_col_sum")}
    L = h.shape[0]
    prefix = suffix = None
    for l in range(L):
        out["forward_gain"][l], out["backward_gain"][l], out["min_col_sum"][l] = _gains(h[l])
        prefix = h[l] if prefix is None else np.matmul(h[l], prefix)  # P_l (..., n, n)
        out["composite_forward_gain"][l] = _gains(prefix)[0]
        k = L - 1 - l
        suffix = h[k] if suffix is None else np.matmul(suffix, h[k])  # Q_k (..., n, n)
        _, out["composite_backward_gain"][k], out["composite_min_col_sum"][k] = _gains(suffix)
    return out
