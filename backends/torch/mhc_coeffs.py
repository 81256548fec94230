"""The three mHC maps of each token, P Eqs. 7-9 in the fused form of Eqs. 14-19 (eager PyTorch):

    x_bar  = x.reshape(..., n*C)                    stream-major: x_bar[k*C + c] = x[k, c]
    r      = sqrt(mean(x_bar^2) + rms_eps)                                            (15)
    m      = (x_bar @ phi) / r                      phi (n*C, n^2+2n), columns [pre n | post n | res n^2]   (14, 16)
    H_pre  = sigmoid(alpha[0] m[:n]    + b[:n])    + pre_eps                          (17)
    H_post = post_scale * sigmoid(alpha[1] m[n:2n] + b[n:2n])                          (18)
    H_res  = sinkhorn(mat(alpha[2] m[2n:] + b[2n:]))                                   (19)

`mat` is row_major (H[i, j] = v[i*n + j], paper) or col_major (H[i, j] = v[j*n + i], DeepSeek's comb[src, dst]).
Precision: with 16-bit x the whole path (projection, RMS, sigmoids, Sinkhorn) runs in float32, as DeepSeek does;
phi, alpha, b may be float32 (the module keeps its parameters in float32) or x's dtype. The maps are returned in
`maps_dtype` (default: x's dtype, the backend contract; the modules ask for float32 and mix in float32).
"""

from __future__ import annotations

import torch

from . import _checks
from .sinkhorn import sinkhorn_log

OP = "mhc_coeffs"
LAYOUTS = ("row_major", "col_major")
OVERFLOW = "the residual logits alpha[2] * (x_bar @ phi) / r + b overflow the compute dtype (phi, alpha or b too large)"


def mat(v: torch.Tensor, n: int, layout: str) -> torch.Tensor:
    """(..., n*n) -> (..., n, n) in the named layout."""
    H = v.unflatten(-1, (n, n))  # row_major: H[i, j] = v[i*n + j]
    return H if layout == "row_major" else H.transpose(-1, -2)


def validate(x, phi, alpha, b, op: str = OP) -> tuple[int, int]:
    n, C = _checks.check_stream_state("x", x, op)
    width = n * n + 2 * n
    _checks.check_tensor("phi", phi, op, scan=False)
    if phi.dim() != 2 or phi.shape[0] != n * C:
        raise ValueError(f"{op}: phi must have shape (n*C, n*n+2*n) = ({n * C}, {width}) for x of shape "
                         f"{tuple(x.shape)} (n = {n}, C = {C}), got {tuple(phi.shape)}")
    if phi.shape[1] != width:
        raise ValueError(f"{op}: phi has {phi.shape[1]} columns, expected n*n+2*n = {width} for n = {n} "
                         f"(from x of shape {tuple(x.shape)})")
    _checks.check_like_x("phi", phi, x, (n * C, width), op)
    _checks.check_like_x("alpha", alpha, x, (3,), op)
    _checks.check_like_x("b", b, x, (width,), op, f" = (n*n+2*n,) for n = {n}")
    return n, C


def validate_options(op, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout):
    """Each option against its spec-table entry (type, finite, min / max)."""
    for name, v in (("t_max", t_max), ("sinkhorn_eps", sinkhorn_eps), ("pre_eps", pre_eps),
                    ("post_scale", post_scale), ("rms_eps", rms_eps)):
        _checks.check_option(name, v, op)
    _checks.check_choice("res_layout", res_layout, LAYOUTS, op)


class Projection(torch.autograd.Function):
    """m = (x_bar @ w) / r, r = sqrt(mean(x_bar^2) + rms_eps), with the analytic backward (two matmuls, one pass
    over x_bar, as P Sec. 4.3.1 fuses Eqs. 14-15):

        dp = g / r,   dr = -sum_k(g_k m_k) / r,   dx_bar = dp @ w^T + dr x_bar / (D r),   dw = x_bar^T dp

    r is computed scale-safely (`_checks.rms`). Saves x_bar, w, r and m (not autograd's chain of intermediates).
    The backward is itself differentiable.
    """

    @staticmethod
    def forward(ctx, x_bar, w, rms_eps):
        y, t, rho = _checks.rms(x_bar, rms_eps)  # r = t * rho, scaled so that x_bar^2 cannot overflow
        r = t * rho  # (..., 1)
        m = torch.matmul(y, w) / rho  # (..., k) = (x_bar @ w) / r, exactly so: t is a power of two
        ctx.save_for_backward(x_bar, w, r, m)
        return m

    @staticmethod
    def backward(ctx, g):
        x_bar, w, r, m = ctx.saved_tensors
        D, k = x_bar.shape[-1], w.shape[-1]
        dp = g / r  # (..., k)
        dr = -torch.sum(g * m, dim=-1, keepdim=True) / r  # (..., 1)
        dx_bar = torch.matmul(dp, w.t()) + dr * (x_bar / (D * r)) if ctx.needs_input_grad[0] else None
        dw = torch.matmul(x_bar.reshape(-1, D).t(), dp.reshape(-1, k)) if ctx.needs_input_grad[1] else None
        return dx_bar, dw, None


def projection(x: torch.Tensor, w: torch.Tensor, rms_eps: float) -> torch.Tensor:
    """m = (x_bar @ w) / r, P Eqs. 14-16 before scale and bias; x (..., n, C), w (n*C, k) -> (..., k)."""
    return Projection.apply(x.flatten(-2), w, rms_eps)  # x_bar (..., n*C), stream-major


def mhc_coeffs_unchecked(x, phi, alpha, b, *, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout,
                         maps_dtype=None):
    n = x.shape[-2]
    cd = _checks.compute_dtype(x.dtype)
    alpha, b = alpha.to(cd), b.to(cd)
    m = projection(_checks.to_compute(x, "x (mhc_coeffs)"), phi.to(cd), rms_eps)  # (..., n^2 + 2n)
    h_pre = torch.sigmoid(alpha[0] * m[..., :n] + b[:n]) + pre_eps  # (..., n)
    h_post = post_scale * torch.sigmoid(alpha[1] * m[..., n:2 * n] + b[n:2 * n])  # (..., n)
    logits = mat(alpha[2] * m[..., 2 * n:] + b[2 * n:], n, res_layout)  # (..., n, n)
    h_res = torch.exp(sinkhorn_log(logits, t_max, sinkhorn_eps))  # (..., n, n)
    out = x.dtype if maps_dtype is None else maps_dtype
    return h_pre.to(out), h_post.to(out), h_res.to(out)


def mhc_coeffs(x: torch.Tensor, phi: torch.Tensor, alpha: torch.Tensor, b: torch.Tensor, *, t_max: int = 20,
               sinkhorn_eps: float = 0.0, pre_eps: float = 0.0, post_scale: float = 2.0, rms_eps: float = 1e-20,
               res_layout: str = "row_major", maps_dtype: torch.dtype | None = None):
    """(H_pre (..., n), H_post (..., n), H_res (..., n, n)) from x (..., n, C). Defaults are the `paper` preset."""
    validate(x, phi, alpha, b)
    validate_options(OP, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout)
    _checks.check_nonzero_tokens(x, rms_eps, OP)
    maps = mhc_coeffs_unchecked(x, phi, alpha, b, t_max=t_max, sinkhorn_eps=sinkhorn_eps, pre_eps=pre_eps,
                                post_scale=post_scale, rms_eps=rms_eps, res_layout=res_layout, maps_dtype=maps_dtype)
    _checks.check_result("H_res", maps[2], OP, OVERFLOW)
    return maps
