"""L mHC layers in sequence (eager PyTorch), P Eq. 3 applied L times around the probe sublayer:

    x_{l+1} = mhc_layer(x_l; phi[l], alpha[l], b[l], w_sub[l])        l = 0 .. L-1,   y = x_L   (..., n, C)

The parameters are stacked along a leading L axis: phi (L, n*C, n*n+2*n), alpha (L, 3), b (L, n*n+2*n),
w_sub (L, C, C). Layer l runs on views phi[l], ... so autograd writes row l of each stacked gradient.

`recompute_every=L_r` (a memory knob, not a spec option: it must not change values) runs the layers through the
selective recompute of `mhc_backends.torch.recompute` (P Sec. 4.3.2): blocks of L_r layers keep only the block input
and the sublayer outputs, and the backward replays the mHC ops of a block from them. The forward computes the same
ops in the same order, so the output is bit-identical; gradients agree up to summation order. "auto" picks P Eq. 20's
L_r*. Recompute is used only when autograd records (grad enabled and some input requires grad).
"""

from __future__ import annotations

import torch

from .. import _contract
from . import _checks
from .mhc_coeffs import mhc_coeffs_unchecked, validate_options
from .mhc_layer import mhc_layer_unchecked, probe_sublayer
from .mhc_post_res import mhc_post_res_unchecked
from .mhc_pre import mhc_pre_unchecked
from .recompute import default_recompute_every, recompute_layers

OP = "mhc_stack"


def validate_stack(x, phi, alpha, b, w_sub, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout,
                   op: str = OP) -> int:
    """The checks of every mhc_stack implementation (eager, fused, pipelined); returns L."""
    _checks.check_stream_state("x", x, op)
    _checks.check_tensor("phi", phi, op, ndim_min=0, scan=False)
    L, shapes = _contract.stack_shapes(x, phi, op)
    _contract.check_all(_checks.check_like_x, x, {"phi": phi, "alpha": alpha, "b": b, "w_sub": w_sub}, shapes, op)
    validate_options(op, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout)
    _checks.check_nonzero_tokens(x, rms_eps, op)
    return L


class StackLayer:
    """Layer l of a stacked-parameter stack, in the interface `recompute_layers` calls (that of an MHC module)."""

    def __init__(self, phi, alpha, b, w_sub, options: dict):
        self.phi, self.alpha, self.b, self.w_sub, self.options = phi, alpha, b, w_sub, options

    def params(self):
        return (self.phi, self.alpha, self.b)

    def maps_from(self, x, phi, alpha, b):
        return mhc_coeffs_unchecked(x, phi, alpha, b, maps_dtype=_checks.compute_dtype(x.dtype), **self.options)

    def pre(self, x, h_pre):
        return mhc_pre_unchecked(x, h_pre)

    def post_res(self, x, f_out, h_post, h_res):
        return mhc_post_res_unchecked(x, f_out, h_post, h_res)

    def call_sublayer(self, u):
        return probe_sublayer(u, self.w_sub)


def mhc_stack(x: torch.Tensor, phi: torch.Tensor, alpha: torch.Tensor, b: torch.Tensor, w_sub: torch.Tensor, *,
              t_max: int = 20, sinkhorn_eps: float = 0.0, pre_eps: float = 0.0, post_scale: float = 2.0,
              rms_eps: float = 1e-20, res_layout: str = "row_major",
              recompute_every: int | str | None = None) -> torch.Tensor:
    """x_L (..., n, C) from x_0 (..., n, C). Defaults are the `paper` preset; see the module docstring."""
    L = validate_stack(x, phi, alpha, b, w_sub, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout)
    if recompute_every == "auto":
        recompute_every = default_recompute_every(x.shape[-2], L)
    elif recompute_every is not None:
        _checks.check_int("recompute_every", recompute_every, OP, 0)
    options = dict(t_max=t_max, sinkhorn_eps=sinkhorn_eps, pre_eps=pre_eps, post_scale=post_scale, rms_eps=rms_eps,
                   res_layout=res_layout)
    records = torch.is_grad_enabled() and any(t.requires_grad for t in (x, phi, alpha, b, w_sub))
    if recompute_every and records:
        layers = [StackLayer(phi[l], alpha[l], b[l], w_sub[l], options) for l in range(L)]
        return recompute_layers(layers, x, recompute_every)
    for l in range(L):
        x = mhc_layer_unchecked(x, phi[l], alpha[l], b[l], w_sub[l], **options)  # (..., n, C)
    return x
