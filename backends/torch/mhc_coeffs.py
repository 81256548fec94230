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

import math

import torch
from torch.autograd.function import once_differentiable

from .. import _contract
from . import _checks
from .sinkhorn import from_tokens_last, sinkhorn_tokens_last

OP = "mhc_coeffs"
LAYOUTS = ("row_major", "col_major")
OVERFLOW = "the residual logits alpha[2] * (x_bar @ phi) / r + b overflow the compute dtype (phi, alpha or b too large)"


def mat(v: torch.Tensor, n: int, layout: str) -> torch.Tensor:
    """(..., n*n) -> (..., n, n) in the named layout."""
    H = v.unflatten(-1, (n, n))  # row_major: H[i, j] = v[i*n + j]
    return H if layout == "row_major" else H.transpose(-1, -2)


def validate(x, phi, alpha, b, op: str = OP) -> tuple[int, int]:
    n, C = _checks.check_stream_state("x", x, op)
    _checks.check_tensor("phi", phi, op, scan=False)
    shapes = _contract.coeffs_shapes(x, phi, op)
    _contract.check_all(_checks.check_like_x, x, {"phi": phi, "alpha": alpha, "b": b}, shapes, op)
    return n, C


def validate_options(op, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout):
    """Each option against its spec-table entry (type, finite, min / max)."""
    for name, v in (("t_max", t_max), ("sinkhorn_eps", sinkhorn_eps), ("pre_eps", pre_eps),
                    ("post_scale", post_scale), ("rms_eps", rms_eps)):
        _checks.check_option(name, v, op)
    _checks.check_choice("res_layout", res_layout, LAYOUTS, op)


# Exponent bound of the unscaled projection: with every row's scale t (a power of two >= max|x_bar| / 2) inside
# [2^-E, 2^E], x_bar^2 neither overflows nor underflows and x_bar @ w (checked finite) equals t * (y @ w) exactly.
UNSCALED_EXPONENT = {torch.float32: 40, torch.float64: 480}


def unscaled_ok(t: torch.Tensor) -> bool:
    """Whether x_bar can be used in place of y = x_bar / t, bit for bit (scaling by a power of two is exact within
    the range). Decided on the host from t's range: free on the CPU; on other devices (a host sync per layer) and
    while torch.compile traces (which fuses the scaling anyway) the always-safe scaled path runs."""
    e = UNSCALED_EXPONENT.get(t.dtype)
    if e is None or t.device.type != "cpu" or t.numel() == 0 or torch.compiler.is_compiling():
        return False
    lo, hi = torch.aminmax(t)
    return 2.0 ** -e <= float(lo) and float(hi) <= 2.0 ** e


def project(x_bar: torch.Tensor, w: torch.Tensor, rms_eps: float, scan: tuple[str, str] | None = None):
    """(m, t, rho): m = (x_bar @ w) / r with r = t rho = sqrt(mean(x_bar^2) + rms_eps), x_bar (..., D), w (D, k).

    t = 2^e >= max|x_bar| / 2 (`_checks.rms_scale`) makes y = x_bar / t exact and rho = sqrt(|y|^2 / D +
    rms_eps / t^2) free of overflow (x of 1e20 in float32). Where t's range allows (`unscaled_ok`, the CPU), y is
    never built: |x_bar| / t and (x_bar @ w) / t are |y| and y @ w bit for bit, and the forward reads x_bar three
    times (amax/amin, norm, matmul) with no full-size temporary. `scan`: see `_checks.rms_scale`."""
    D = x_bar.shape[-1]
    t = _checks.rms_scale(x_bar, rms_eps, scan)  # (..., 1)
    if unscaled_ok(t):
        p = torch.matmul(x_bar, w).div_(t)  # (..., k) = y @ w
        if bool(torch.isfinite(p).all()):  # x_bar @ w may overflow where y @ w does not (w near the dtype's max)
            norm = torch.linalg.vector_norm(x_bar, dim=-1, keepdim=True).div_(t)  # = |y|
            rho = torch.sqrt(norm ** 2 / D + (math.sqrt(rms_eps) / t) ** 2)
            return p.div_(rho), t, rho
    y = x_bar / t  # (..., D), |y| <= 2
    rho = torch.sqrt(torch.linalg.vector_norm(y, dim=-1, keepdim=True) ** 2 / D + (math.sqrt(rms_eps) / t) ** 2)
    return torch.matmul(y, w) / rho, t, rho  # exactly (x_bar @ w) / r: t is a power of two


def project_backward(x_bar, w, t, rho, m, g, need_x: bool, need_w: bool, out: torch.Tensor | None = None):
    """(dx_bar, dw) of `project` for the cotangent g (N, k) of m, x_bar (N, D); dx_bar is a fresh (N, D) tensor, or
    `out` with dx_bar added to it in place (a caller's other x-gradient: one buffer instead of two):

        dp = g / r,   dr = -sum_k(g_k m_k) / r,   dx_bar = dp @ w^T + dr x_bar / (D r),   dw = x_bar^T dp

    The dr term is y * c with c = dr / (D rho) (in y, not x_bar, so that no factor underflows at large |x|); where
    c / t is exact (`unscaled_ok` and no underflow) it is x_bar * (c / t), the same bits in one pass. Then one addmm
    in place. dw as (dp^T x_bar)^T: the same product, read in the layout the CPU GEMM streams fastest."""
    D = x_bar.shape[-1]
    r = t * rho
    dp = g / r  # (N, k)
    dx = dw = None
    if need_x:
        c = -torch.sum(g * m, dim=-1, keepdim=True) / (r * (D * rho))  # dr / (D rho), (N, 1)
        scale = c / t
        exact = unscaled_ok(t) and bool(((scale.abs() >= torch.finfo(scale.dtype).tiny) | (c == 0)).all())
        if out is None:
            dx = torch.mul(x_bar, scale) if exact else torch.div(x_bar, t).mul_(c)  # = (x_bar / t) * c
        else:
            dx = out.addcmul_(x_bar, scale) if exact else out.add_(torch.div(x_bar, t).mul_(c))
        dx.addmm_(dp, w.t())  # y * c + dp @ w^T in the one buffer
    if need_w:
        dw = torch.matmul(dp.t(), x_bar).t().contiguous()  # (D, k)
    return dx, dw


class Projection(torch.autograd.Function):
    """m = (x_bar @ w) / r, r = sqrt(mean(x_bar^2) + rms_eps) (`project`), with the analytic backward
    (`project_backward`: two matmuls, P Sec. 4.3.1 fuses Eqs. 14-15). Saves x, w, t, rho and m. One backward only
    (`once_differentiable`): r and m are saved values, so a second differentiation through them would be silently
    incomplete."""

    @staticmethod
    def forward(ctx, x, w, rms_eps):
        m, t, rho = project(x.flatten(-2), w, rms_eps)  # x flattened here, so the graph holds no view of x
        ctx.save_for_backward(x, w, t, rho, m)
        return m

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, w, t, rho, m = ctx.saved_tensors
        D, k = x.shape[-2] * x.shape[-1], w.shape[-1]
        dx, dw = project_backward(x.reshape(-1, D), w, t.reshape(-1, 1), rho.reshape(-1, 1), m.reshape(-1, k),
                                  g.reshape(-1, k), *ctx.needs_input_grad[:2])
        return None if dx is None else dx.view(x.shape), dw, None


def projection(x: torch.Tensor, w: torch.Tensor, rms_eps: float) -> torch.Tensor:
    """m = (x_bar @ w) / r, P Eqs. 14-16 before scale and bias; x (..., n, C), w (n*C, k) -> (..., k)."""
    return Projection.apply(x, w, rms_eps)


def mhc_coeffs_unchecked(x, phi, alpha, b, *, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout,
                         maps_dtype=None):
    n = x.shape[-2]
    cd = _checks.compute_dtype(x.dtype)
    alpha, b = alpha.to(cd), b.to(cd)
    m = projection(_checks.to_compute(x, "x (mhc_coeffs)"), phi.to(cd), rms_eps)  # (..., n^2 + 2n)
    z_pre, z_post, z_res = map_logits(m, alpha, b, n)
    h_pre = torch.sigmoid(z_pre) + pre_eps  # (..., n)
    h_post, h_res = maps_from_logits(z_post, z_res, tuple(x.shape[:-2]), n, t_max=t_max, sinkhorn_eps=sinkhorn_eps,
                                     post_scale=post_scale, res_layout=res_layout)
    out = x.dtype if maps_dtype is None else maps_dtype
    return h_pre.to(out), h_post.to(out), h_res.to(out)


def map_logits(m, alpha, b, n):
    """(z_pre (..., n), z_post (..., n), z_res (..., n^2)): the scaled, biased logits alpha[k] m_k + b_k of Eqs.
    17-19 from the projection m (..., n^2 + 2n); alpha, b in m's dtype."""
    return (alpha[0] * m[..., :n] + b[:n], alpha[1] * m[..., n:2 * n] + b[n:2 * n],
            alpha[2] * m[..., 2 * n:] + b[2 * n:])


def maps_from_logits(z_post, z_res, lead, n, *, t_max, sinkhorn_eps, post_scale, res_layout):
    """(H_post (..., n), H_res (..., n, n)) from the scaled, biased logits z_post (..., n) and z_res (..., n^2)."""
    h_post = post_scale * torch.sigmoid(z_post)
    N = math.prod(lead)
    v = z_res.reshape(N, n * n).t().reshape(n, n, N)  # (n, n, N) view, tokens last: v[i, j] = z_res[i*n + j]
    if res_layout == "col_major":
        v = v.transpose(0, 1)
    v = sinkhorn_tokens_last(v.contiguous(), t_max, sinkhorn_eps)  # (n, n, N) log H_res, tokens contiguous
    return h_post, from_tokens_last(torch.exp(v), lead)  # H_res (..., n, n), contiguous for the mixing bmm


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
