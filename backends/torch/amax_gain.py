"""Amax gain magnitude of the residual maps, P Sec. 3.1 (Figs. 3 and 7); a diagnostic, not differentiated.

For a matrix M (rows = output streams): forward gain max_i |sum_j M_ij|, backward gain max_j |sum_i M_ij|, and the
min column sum min_j sum_i M_ij, per layer l of H_res^l. Composites (P Figs. 3b, 7b): the forward gain of the prefix
P_l = H_res^l ... H_res^0 (input -> layer l), the backward gain and min column sum of the suffix
Q_l = H_res^{L-1} ... H_res^l (layer l -> output). Each is averaged over tokens. Computed in float64 (float32
where the device has no float64, e.g. MPS).
"""

from __future__ import annotations

import torch

from .. import _contract
from . import _checks

OP = "amax_gain"
KEYS = ("forward_gain", "backward_gain", "min_col_sum", "composite_forward_gain", "composite_backward_gain",
        "composite_min_col_sum")


def _gains(M: torch.Tensor):
    rows, cols = M.sum(dim=-1), M.sum(dim=-2)  # (..., n)
    return (rows.abs().amax(dim=-1).mean(), cols.abs().amax(dim=-1).mean(), cols.amin(dim=-1).mean())


@torch.no_grad()
def amax_gain(h_res: torch.Tensor) -> dict[str, torch.Tensor]:
    """h_res (L, ..., n, n), layer axis first -> dict of six (L,) float64 tensors."""
    _checks.check_tensor("h_res", h_res, OP, ndim_min=3)
    _contract.check_gain_maps("h_res", h_res, OP)
    h = h_res.to(torch.float64 if h_res.device.type != "mps" else torch.float32)
    L = h.shape[0]
    per = {k: [None] * L for k in KEYS}
    prefix = suffix = None
    for l in range(L):
        per["forward_gain"][l], per["backward_gain"][l], per["min_col_sum"][l] = _gains(h[l])
        prefix = h[l] if prefix is None else torch.matmul(h[l], prefix)  # P_l (..., n, n)
        per["composite_forward_gain"][l] = _gains(prefix)[0]
        k = L - 1 - l
        suffix = h[k] if suffix is None else torch.matmul(suffix, h[k])  # Q_k (..., n, n)
        _, per["composite_backward_gain"][k], per["composite_min_col_sum"][k] = _gains(suffix)
    return {k: torch.stack(v) for k, v in per.items()}
