"""A stack of L mHC layers: P Eq. 3 with the maps of Eqs. 7-9, applied L times around the probe sublayer.

    x_0 = x                                                                         (..., n, C)
    H_pre, H_post, H_res = mhc_coeffs(x_l; phi[l], alpha[l], b[l])                  P Eqs. 7-9
    x_{l+1} = H_res x_l + H_post^T F_l(H_pre x_l),  F_l(u) = tanh(rmsnorm(u) @ w_sub[l])    P Eq. 3
    y = x_L                                                                         (..., n, C)

The parameters of the L layers are stacked along a leading axis: phi (L, n*C, n*n+2*n), alpha (L, 3),
b (L, n*n+2*n), w_sub (L, C, C). This is the stream-space part of `mhc_ref.model.Stack` (no expand/collapse) as a
spec op, so that a depth-parallel backend (a pipeline over the L axis) is checked like any other.

VJP: the forward's L+1 states x_0..x_L are kept; going back from g_y = dL/dx_L, layer l's `mhc_layer_vjp` recomputes
its maps from x_l and returns dL/dx_l and layer l's parameter gradients, which fill row l of the stacked gradients.
"""

from __future__ import annotations

import numpy as np

from ._common import check_array, check_cotangent, check_stream_state, compute_dtype_of, options
from .mhc_layer import mhc_layer, mhc_layer_vjp

OP = "mhc_stack"


def validate(x, phi, alpha, b, w_sub, op: str = OP) -> tuple[int, int, int]:
    """(L, n, C) of a stack call, or a ValueError/TypeError naming the argument, the expected and the received shape."""
    x, n, C = check_stream_state("x", x, op)
    width = n * n + 2 * n
    check_array("phi", phi, 0, op)
    if phi.ndim != 3 or phi.shape[1:] != (n * C, width):
        raise ValueError(f"{op}: phi must have shape (L, n*C, n*n+2*n) = (L, {n * C}, {width}) for x of shape "
                         f"{x.shape}, got shape {phi.shape}")
    L = phi.shape[0]
    if L < 1:
        raise ValueError(f"{op}: phi must stack L >= 1 layers, got shape {phi.shape}")
    for name, value, shape, text in (("alpha", alpha, (L, 3), "(L, 3)"), ("b", b, (L, width), "(L, n*n+2*n)"),
                                     ("w_sub", w_sub, (L, C, C), "(L, C, C)")):
        check_array(name, value, 0, op)
        if value.shape != shape:
            raise ValueError(f"{op}: {name} must have shape {text} = {shape} (L = {L} from phi, n = {n}, C = {C} "
                             f"from x), got {value.shape}")
    return L, n, C


def _options(preset, given):
    return options(OP, preset, given)


def mhc_stack(x, phi, alpha, b, w_sub, *, preset=None, t_max=None, sinkhorn_eps=None, pre_eps=None,
              post_scale=None, rms_eps=None, res_layout=None, compute_dtype="float64"):
    """x_L (..., n, C) from x_0 (..., n, C): L mHC layers, layer l with the l-th row of every stacked parameter."""
    L, _, _ = validate(x, phi, alpha, b, w_sub)
    opts = _options(preset, dict(t_max=t_max, sinkhorn_eps=sinkhorn_eps, pre_eps=pre_eps, post_scale=post_scale,
                                 rms_eps=rms_eps, res_layout=res_layout))
    dt = compute_dtype_of(compute_dtype)
    for l in range(L):  # x_{l+1} = mhc_layer(x_l), in dt (the naive baseline rounds every state to dt)
        x = mhc_layer(x, phi[l], alpha[l], b[l], w_sub[l], compute_dtype=dt, **opts)
    return x.astype(dt)


def mhc_stack_vjp(x, phi, alpha, b, w_sub, g_y, *, preset=None, t_max=None, sinkhorn_eps=None, pre_eps=None,
                  post_scale=None, rms_eps=None, res_layout=None, compute_dtype="float64"):
    """Gradients {x, phi, alpha, b, w_sub}; the parameter gradients are stacked (L, ...) like the parameters."""
    L, _, _ = validate(x, phi, alpha, b, w_sub, OP + "_vjp")
    opts = _options(preset, dict(t_max=t_max, sinkhorn_eps=sinkhorn_eps, pre_eps=pre_eps, post_scale=post_scale,
                                 rms_eps=rms_eps, res_layout=res_layout))
    check_cotangent("g_y", g_y, x.shape, OP + "_vjp")
    dt = compute_dtype_of(compute_dtype)
    xs = [x.astype(dt)]  # x_0 .. x_{L-1}: the input of every layer
    for l in range(L - 1):
        xs.append(mhc_layer(xs[-1], phi[l], alpha[l], b[l], w_sub[l], compute_dtype=dt, **opts))
    g = g_y.astype(dt)  # dL/dx_{l+1}, walking back from x_L
    rows: list[dict] = [{}] * L
    for l in reversed(range(L)):
        rows[l] = mhc_layer_vjp(xs[l], phi[l], alpha[l], b[l], w_sub[l], g, compute_dtype=dt, **opts)
        g = rows[l]["x"]  # (..., n, C)
    grads = {"x": g.astype(dt)}
    for name in ("phi", "alpha", "b", "w_sub"):
        grads[name] = np.stack([row[name] for row in rows]).astype(dt)  # (L, ...)
    return grads
