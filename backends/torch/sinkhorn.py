"""Sinkhorn-Knopp projection of exp(logits), P Eq. 9, in the log domain (eager PyTorch, autograd backward).

    M^0 = exp(L);  M^t = T_r(T_c(M^{t-1})), t = 1..t_max;  H_res = M^{t_max}      (column first, row last)

With eps > 0 (DeepSeek-V4): H = T_r^eps(T_c(exp L) + eps), then t_max - 1 times T_r^eps(T_c^eps(.)), where
T^eps divides by (sum + eps). In the log domain u = log M every normalisation is
`(u - m) - log(sum exp(u - m))` with m = max u (the eps term taken relative to the log-sum, as in
`mhc_ref.sinkhorn`) and `+ eps` is `logaddexp(u, log eps)`: the same function as the linear iteration, but it never
overflows, so logits of +-1e4 give finite outputs and gradients, and no step rounds at the scale of |m|.

The gradient is autograd through the unrolled loop, i.e. the exact VJP of the truncated iteration (P Sec. 4.3.1),
not the implicit gradient at convergence. 16-bit logits are computed in float32 and the result is cast back.
"""

from __future__ import annotations

import math

import torch

from . import _checks

OP = "sinkhorn"


def sinkhorn_log(u: torch.Tensor, t_max: int, eps: float) -> torch.Tensor:
    """The iteration on log-domain logits u (..., n, n) in u's dtype; returns log H_res. No validation."""
    log_eps = math.log(eps) if eps > 0 else None

    def normalise(u, dim, with_eps):
        # (u - m) - log s, never u - (m + log s): the latter rounds at the scale of |m| (issue 9 Sec. 1)
        m = u.amax(dim=dim, keepdim=True).detach()  # any shift gives the same function; detached, it has no grad
        s = torch.exp(u - m).sum(dim=dim, keepdim=True)  # the column (dim=-2) or row (dim=-1) sums, 1 <= s <= n
        out = (u - m) - torch.log(s)
        if not with_eps:
            return out
        a = m + torch.log(s)  # log of the sum; compared with log eps and used inside log1p(exp(.)) only
        eps_side = u - log_eps - torch.log1p(torch.exp(torch.clamp(a - log_eps, max=0.0)))  # a < log eps
        sum_side = out - torch.log1p(torch.exp(torch.clamp(log_eps - a, max=0.0)))  # a >= log eps
        return torch.where(a < log_eps, eps_side, sum_side)

    u = normalise(u, -2, False)  # the first column step is an exact softmax over each column
    if log_eps is not None:
        u = torch.logaddexp(u, torch.full_like(u, log_eps))  # + eps
    u = normalise(u, -1, log_eps is not None)
    for _ in range(t_max - 1):
        u = normalise(u, -2, log_eps is not None)
        u = normalise(u, -1, log_eps is not None)
    return u


def validate(logits, t_max, eps, op: str = OP) -> None:
    _checks.check_tensor("logits", logits, op, ndim_min=2)
    if logits.shape[-1] != logits.shape[-2]:
        raise ValueError(f"{op}: logits must be square in its last two dims (..., n, n), got shape "
                         f"{tuple(logits.shape)}")
    if logits.shape[-1] < 1:
        raise ValueError(f"{op}: logits must be (..., n, n) with n >= 1, got shape {tuple(logits.shape)}")
    _checks.check_option("t_max", t_max, op)  # the table's range: 1 <= t_max <= max
    _checks.check_option("eps", eps, op)


def sinkhorn(logits: torch.Tensor, *, t_max: int = 20, eps: float = 0.0) -> torch.Tensor:
    """H_res (..., n, n) = Sinkhorn-Knopp(exp(logits (..., n, n))), P Eq. 9; same dtype as logits."""
    validate(logits, t_max, eps)
    cd = _checks.compute_dtype(logits.dtype)
    return torch.exp(sinkhorn_log(logits.to(cd), t_max, eps)).to(logits.dtype)
