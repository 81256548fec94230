"""One mHC layer from the fused kernels, P Eq. 3 with the maps of Eqs. 7-9:

    H_pre, H_post, H_res = mhc_coeffs(x_l)                       (one fused kernel, Sinkhorn in registers)
    x_{l+1} = mhc_post_res(x_l, F(mhc_pre(x_l, H_pre)), H_post, H_res)

`sublayer` is a (C, C) tensor w_sub (the spec's probe sublayer F(u) = tanh(rmsnorm(u) @ w_sub), run in eager torch)
or any callable (..., C) -> (..., C). With 16-bit x the maps stay in float32, as in the eager layer.
"""

from __future__ import annotations

import torch

from .. import _checks
from ..mhc_layer import check_sublayer_output, probe_sublayer, validate_layer
from .mhc_coeffs import mhc_coeffs_unchecked
from .mhc_post_res import mhc_post_res_unchecked
from .mhc_pre import mhc_pre_unchecked

OP = "mhc_layer"


def mhc_layer(x: torch.Tensor, phi: torch.Tensor, alpha: torch.Tensor, b: torch.Tensor, sublayer, *,
              t_max: int = 20, sinkhorn_eps: float = 0.0, pre_eps: float = 0.0, post_scale: float = 2.0,
              rms_eps: float = 1e-20, res_layout: str = "row_major") -> torch.Tensor:
    """x_{l+1} (..., n, C) from x_l (..., n, C), P Eq. 3. Defaults are the `paper` preset."""
    validate_layer(x, phi, alpha, b, sublayer, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout)
    return mhc_layer_unchecked(x, phi, alpha, b, sublayer, t_max=t_max, sinkhorn_eps=sinkhorn_eps, pre_eps=pre_eps,
                               post_scale=post_scale, rms_eps=rms_eps, res_layout=res_layout)


def mhc_layer_unchecked(x, phi, alpha, b, sublayer, **options) -> torch.Tensor:
    """The layer without the input checks (for callers that validated already, e.g. `mhc_stack` per layer)."""
    h_pre, h_post, h_res = mhc_coeffs_unchecked(x, phi, alpha, b, maps_dtype=_checks.compute_dtype(x.dtype),
                                                **options)
    u = mhc_pre_unchecked(x, h_pre)  # (..., C)
    f_out = probe_sublayer(u, sublayer) if isinstance(sublayer, torch.Tensor) else sublayer(u)
    check_sublayer_output(f_out, u, OP)
    if f_out.dtype != x.dtype or not f_out.is_contiguous():
        f_out = f_out.to(x.dtype).contiguous()
    return mhc_post_res_unchecked(x, f_out, h_post, h_res)  # (..., n, C)
