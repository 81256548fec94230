"""L mHC layers from the fused kernels, P Eq. 3 applied L times around the probe sublayer:

    x_{l+1} = mhc_layer(x_l; phi[l], alpha[l], b[l], w_sub[l])        l = 0 .. L-1,   y = x_L   (..., n, C)

Each layer is the fused `mhc_layer` (mhc_coeffs, mhc_pre and mhc_post_res kernels, the probe sublayer in eager
torch) on views of the stacked parameters, so autograd writes row l of each stacked gradient through the kernels'
registered backwards. The inputs are checked once, as the eager op checks them (`validate_stack`), not per layer.
"""

from __future__ import annotations

import torch

from ..mhc_stack import validate_stack
from .mhc_layer import mhc_layer_unchecked

OP = "mhc_stack"


def mhc_stack(x: torch.Tensor, phi: torch.Tensor, alpha: torch.Tensor, b: torch.Tensor, w_sub: torch.Tensor, *,
              t_max: int = 20, sinkhorn_eps: float = 0.0, pre_eps: float = 0.0, post_scale: float = 2.0,
              rms_eps: float = 1e-20, res_layout: str = "row_major") -> torch.Tensor:
    """x_L (..., n, C) from x_0 (..., n, C). Defaults are the `paper` preset."""
    L = validate_stack(x, phi, alpha, b, w_sub, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout)
    for l in range(L):
        x = mhc_layer_unchecked(x, phi[l], alpha[l], b[l], w_sub[l], t_max=t_max, sinkhorn_eps=sinkhorn_eps,
                                pre_eps=pre_eps, post_scale=post_scale, rms_eps=rms_eps, res_layout=res_layout)
    return x
