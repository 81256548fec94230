"""One mHC layer, P Eq. 3 with the maps of Eqs. 7-9 (eager PyTorch):

    H_pre, H_post, H_res = mhc_coeffs(x_l)
    x_{l+1} = H_res x_l + H_post^T F(H_pre x_l)          H_pre and H_res act on the same, un-mixed x_l

`sublayer` is a (C, C) tensor w_sub, meaning the spec's probe sublayer F(u) = tanh(rmsnorm(u) @ w_sub) (rmsnorm
without weight, eps = spec conformance.probe_rms_eps), or any callable (..., C) -> (..., C), e.g. an nn.Module
that includes its own pre-norm. With 16-bit x the maps are kept in float32 and the mixing runs in float32; F runs
in x's dtype. Everything computed from x_l before F is one autograd node (`PreProjection`), so the layer's
x-gradient is built in one buffer; the `MHC` module runs the same path.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from mhc_spec.table import load

from . import _checks
from .hc_coeffs import rms_normalize
from .mhc_coeffs import map_logits, maps_from_logits, project, project_backward, validate, validate_options
from .mhc_post_res import mhc_post_res_unchecked

OP = "mhc_layer"
PROBE_RMS_EPS = load().conformance["probe_rms_eps"]


def probe_sublayer(u: torch.Tensor, w_sub: torch.Tensor, eps: float = PROBE_RMS_EPS) -> torch.Tensor:
    """F(u) = tanh(rmsnorm(u) @ w_sub), u (..., C) -> (..., C); the norm in float32 for 16-bit u."""
    u_n = rms_normalize(u.to(_checks.compute_dtype(u.dtype)), eps).to(u.dtype)  # (..., C)
    return torch.tanh(torch.matmul(u_n, w_sub.to(u.dtype)))


def validate_layer(x, phi, alpha, b, sublayer, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout,
                   op: str = OP) -> None:
    """The checks of every mhc_layer implementation (eager and fused): tensors, options, sublayer."""
    _, C = validate(x, phi, alpha, b, op)
    validate_options(op, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout)
    _checks.check_nonzero_tokens(x, rms_eps, op)
    if isinstance(sublayer, torch.Tensor):
        _checks.check_like_x("w_sub", sublayer, x, (C, C), op, " (C, C)")
    elif not callable(sublayer):
        raise TypeError(f"{op}: sublayer must be a (C, C) tensor w_sub or a callable, got {type(sublayer).__name__}")


class PreProjection(torch.autograd.Function):
    """Everything a layer computes from x_l and its map parameters before the sublayer, in one node: the projection
    m of Eqs. 14-16, the scaled and biased logits z = alpha[k] m_k + b_k of Eqs. 17-19, H_pre = sigmoid(z_pre) +
    pre_eps and u = H_pre x (Eq. 3), and x itself, passed through as x_mix for the mixing H_res x of
    `mhc_post_res`: x (N, n, C) -> (z_post (N, n), z_res (N, n^2), u (N, C), x_mix (N, n, C)). H_post and H_res
    (sigmoid, Sinkhorn) follow outside, by autograd.

    Why one node: as separate ops, the projection, H_pre x and the mixing each return a full-size x-gradient and
    autograd adds them (three fresh (N, n, C) buffers, two adds). Here the mixing's x-gradient H_res^T g arrives as
    the cotangent of x_mix and the backward builds dx in one buffer:

        dz_pre = (du x^T) s (1 - s),   dm = [alpha_0 dz_pre | alpha_1 dz_post | alpha_2 dz_res]
        dalpha_k = sum(dz_k m_k),      db = sum_tokens [dz_pre | dz_post | dz_res]
        dx = (H_res^T g + H_pre^T du)  +  project_backward(dm)      (one addcmul into a fresh buffer, then in place)

    The node never writes to a cotangent it receives: they may be held elsewhere (torch.distributed.pipelining's
    zero-bubble schedules capture them and replay this backward for the weights). Every map parameter enters here
    only, so phi, alpha and b share this one node as their path to x (the weight-pass grouping of those schedules
    needs that). One backward only, as `Projection`."""

    @staticmethod
    def forward(ctx, x, w, alpha, b, rms_eps, pre_eps, scan=None):
        N, n, C = x.shape
        m, t, rho = project(x.reshape(N, n * C), w, rms_eps, scan)  # (N, k); scan: the module's NaN/Inf check
        z_pre, z_post, z_res = map_logits(m, alpha, b, n)  # (N, n), (N, n), (N, n^2)
        s = torch.sigmoid(z_pre)
        h_pre = s + pre_eps
        u = torch.bmm(h_pre.unsqueeze(-2), x).squeeze(-2)  # (N, 1, n) @ (N, n, C)
        ctx.save_for_backward(x, w, alpha, t, rho, m, s, h_pre)
        return z_post, z_res, u, x.view_as(x)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_post, g_res, du, g_mix):
        x, w, alpha, t, rho, m, s, h_pre = ctx.saved_tensors
        N, n, C = x.shape
        need_x, need_w, need_alpha, need_b = ctx.needs_input_grad[:4]
        dh_pre = torch.bmm(du.unsqueeze(-2), x.transpose(-1, -2)).squeeze(-2)  # (N, 1, C) @ (N, C, n): the fast form
        dz = torch.cat([dh_pre * s * (1 - s), g_post, g_res], dim=-1)  # (N, k): the cotangent of z
        blocks = (slice(0, n), slice(n, 2 * n), slice(2 * n, None))
        g = torch.cat([alpha[i] * dz[:, blk] for i, blk in enumerate(blocks)], dim=-1)  # the cotangent of m
        dx = None
        if need_x:
            dx = torch.empty((N, n, C), dtype=g_mix.dtype, device=g_mix.device)
            torch.addcmul(g_mix, h_pre.unsqueeze(-1), du.unsqueeze(-2), out=dx)  # H_res^T g + H_pre^T du
        _, dw = project_backward(x.reshape(N, n * C), w, t, rho, m, g, need_x, need_w,
                                 out=dx.view(N, n * C) if need_x else None)
        dalpha = torch.stack([torch.sum(dz[:, blk] * m[:, blk]) for blk in blocks]) if need_alpha else None
        db = dz.sum(0) if need_b else None
        return dx, dw, dalpha, db, None, None, None


def maps_and_pre(x, phi, alpha, b, *, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout, scan=None):
    """(u = H_pre x (..., C) in x's dtype, H_post (N, n), H_res (N, n, n), x_mix (N, n, C)), all but u in the
    compute dtype: what a layer needs before its sublayer, with x read by one node (`PreProjection`); pass x_mix to
    `mhc_post_res_unchecked` in place of x. No validation; `scan` = (name, op) makes the projection's row extremes
    the NaN/Inf scan of x (`_checks.rms_scale`)."""
    lead, (n, C) = tuple(x.shape[:-2]), x.shape[-2:]
    cd = _checks.compute_dtype(x.dtype)
    xc = _checks.to_compute(x, "x (mhc_layer)")
    xc = xc if xc.dim() == 3 else xc.reshape(math.prod(lead), n, C)  # the modules' 3-D x enters without a view
    z_post, z_res, u, x_mix = PreProjection.apply(xc, phi.to(cd), alpha.to(cd), b.to(cd), rms_eps, pre_eps, scan)
    h_post, h_res = maps_from_logits(z_post, z_res, (xc.shape[0],), n, t_max=t_max, sinkhorn_eps=sinkhorn_eps,
                                     post_scale=post_scale, res_layout=res_layout)
    if x.dtype == torch.float16:
        _checks.fits_float16(u, "mhc_pre: the sublayer input H_pre x")
    return u.reshape(*lead, C).to(x.dtype), h_post, h_res, x_mix


def mhc_layer_unchecked(x, phi, alpha, b, sublayer, **options):
    u, h_post, h_res, x_mix = maps_and_pre(x, phi, alpha, b, **options)  # u (..., C)
    f_out = probe_sublayer(u, sublayer) if isinstance(sublayer, torch.Tensor) else sublayer(u)
    check_sublayer_output(f_out, u, OP)
    y = mhc_post_res_unchecked(x_mix, f_out.reshape(x_mix.shape[0], x.shape[-1]), h_post, h_res, out_dtype=x.dtype)
    return y.reshape(x.shape)  # (..., n, C)


def check_sublayer_output(f_out, u: torch.Tensor, op: str) -> None:
    """F must map (..., C) to a tensor of the same shape; anything else would broadcast into the streams."""
    if not isinstance(f_out, torch.Tensor):
        raise TypeError(f"{op}: the sublayer must return a torch.Tensor, got {type(f_out).__name__}")
    if f_out.shape != u.shape:
        raise ValueError(f"{op}: the sublayer must return the shape of its input H_pre x, {tuple(u.shape)}, "
                         f"got {tuple(f_out.shape)}")


def mhc_layer(x: torch.Tensor, phi: torch.Tensor, alpha: torch.Tensor, b: torch.Tensor, sublayer, *,
              t_max: int = 20, sinkhorn_eps: float = 0.0, pre_eps: float = 0.0, post_scale: float = 2.0,
              rms_eps: float = 1e-20, res_layout: str = "row_major") -> torch.Tensor:
    """x_{l+1} (..., n, C) from x_l (..., n, C), P Eq. 3. Defaults are the `paper` preset."""
    validate_layer(x, phi, alpha, b, sublayer, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout)
    y = mhc_layer_unchecked(x, phi, alpha, b, sublayer, t_max=t_max, sinkhorn_eps=sinkhorn_eps, pre_eps=pre_eps,
                            post_scale=post_scale, rms_eps=rms_eps, res_layout=res_layout)
    _checks.check_result("the output", y, OP, "the map logits alpha * (x_bar @ phi) / r + b, the sublayer output or "
                         f"the mixed streams overflow {y.dtype}")
    return y
