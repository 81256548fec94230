"""Amax gains of a trained model's H_res maps with the library's `amax_gain` op (P Sec. 3.1, Figs. 3 and 7).

The maps are input-dependent, so they are read on a batch: a forward hook on every MHC layer takes the layer's input
state x_l and asks the layer for `maps(x_l)`. `amax_gain` then gives, averaged over tokens, the per-layer forward
(max row sum) and backward (max column sum) gains and those of the composite products over depth.
"""

from __future__ import annotations

import torch

from mhc_backends.torch.amax_gain import amax_gain
from mhc_backends.torch.modules import MHC


@torch.no_grad()
def layer_maps(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """H_res of every MHC layer of `model` on `inputs`: (L, B, T, n, n), float64."""
    layers = [m for m in model.modules() if isinstance(m, MHC)]
    maps: list[torch.Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: maps.append(mod.maps(args[0])[2].double()))
             for m in layers]
    try:
        model(inputs)
    finally:
        for h in hooks:
            h.remove()
    return torch.stack(maps)


def gains(h_res: torch.Tensor) -> dict:
    """Per-layer and composite gains as lists, plus the maxima P Figs. 3/7 report."""
    g = {k: v.tolist() for k, v in amax_gain(h_res).items()}
    return {
        "layer_gain_fwd": g["forward_gain"],
        "layer_gain_bwd": g["backward_gain"],
        "composite_gain_fwd_by_layer": g["composite_forward_gain"],
        "composite_gain_bwd_by_layer": g["composite_backward_gain"],
        "composite_gain_fwd": max(g["composite_forward_gain"]),
        "composite_gain_bwd": max(g["composite_backward_gain"]),
    }


def composite(h_res: torch.Tensor) -> torch.Tensor:
    """H^{L-1} ... H^0 per token: (B, T, n, n)."""
    out = h_res[0]
    for h in h_res[1:]:
        out = h @ out
    return out
