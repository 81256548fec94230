"""Sinkhorn-Knopp projection of exp(logits), P Eq. 9, in the log domain (eager PyTorch, autograd backward).

    M^0 = exp(L);  M^t = T_r(T_c(M^{t-1})), t = 1..t_max;  H_res = M^{t_max}      (column first, row last)

With eps > 0 (DeepSeek-V4): H = T_r^eps(T_c(exp L) + eps), then t_max - 1 times T_r^eps(T_c^eps(.)), where
T^eps divides by (sum + eps). In the log domain u = log M every normalisation is
`(u - m) - log(sum exp(u - m))` with m = max u (the eps term taken relative to the log-sum, as in
`mhc_ref.sinkhorn`) and `+ eps` is `logaddexp(u, log eps)`: the same function as the linear iteration, but it never
overflows, so logits of +-1e4 give finite outputs and gradients, and no step rounds at the scale of |m|.

Layout: the iteration runs on (n, n, N) with the tokens last and contiguous, so each of the 2 t_max steps is one
vectorised pass over all tokens (one `log_softmax` when eps = 0), not ~10 small ops on (N, n, n) tiles whose
reductions run over 4 strided elements; H_res is made contiguous in (..., n, n) again for the mixing `bmm`.

The gradient is autograd through the unrolled loop, i.e. the exact VJP of the truncated iteration (P Sec. 4.3.1),
not the implicit gradient at convergence. 16-bit logits are computed in float32 and the result is cast back.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from .. import _contract
from . import _checks

OP = "sinkhorn"


def _normalise_eps(v: torch.Tensor, dim: int, log_eps: float) -> torch.Tensor:
    """v - log(sum_dim exp(v) + eps), to full precision at any |v| (the rule of `mhc_ref.sinkhorn._normalise`)."""
    m = v.amax(dim=dim, keepdim=True).detach()  # any shift gives the same function; detached, it has no grad
    s = torch.exp(v - m).sum(dim=dim, keepdim=True)  # the column or row sums, 1 <= s <= n
    out = (v - m) - torch.log(s)
    a = m + torch.log(s)  # log of the sum; compared with log eps and used inside log1p(exp(.)) only
    eps_side = v - log_eps - torch.log1p(torch.exp(torch.clamp(a - log_eps, max=0.0)))  # a < log eps
    sum_side = out - torch.log1p(torch.exp(torch.clamp(log_eps - a, max=0.0)))  # a >= log eps
    return torch.where(a < log_eps, eps_side, sum_side)


class LogSoftmaxIteration(torch.autograd.Function):
    """The eps = 0 iteration, 2 t_max `log_softmax` steps on v (n, n, N) alternating dim 0 (column) and dim 1
    (row), saving only every seg-th state (seg ~ sqrt(2 t_max)): the backward replays one segment at a time and
    runs log_softmax's own backward kernel through it, so the values and gradients are bitwise those of autograd
    through the steps, while ~2 sqrt(2 t_max) instead of 2 t_max states of (n, n, N) are kept (1.75 instead of 10
    MiB for 4096 tokens at n = 4). One backward only."""

    @staticmethod
    def forward(ctx, v, t_max):
        steps = 2 * t_max
        seg = max(1, round(math.sqrt(steps)))
        checkpoints = []
        for k in range(steps):
            if k % seg == 0:
                checkpoints.append(v)
            v = torch.log_softmax(v, dim=k % 2)
        ctx.save_for_backward(*checkpoints)
        ctx.steps, ctx.seg = steps, seg
        return v

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        for c, v in reversed(list(enumerate(ctx.saved_tensors))):
            start, end = c * ctx.seg, min((c + 1) * ctx.seg, ctx.steps)
            outs = []
            for k in range(start, end):  # replay the segment from its checkpoint
                v = torch.log_softmax(v, dim=k % 2)
                outs.append(v)
            for k in reversed(range(start, end)):
                g = torch._log_softmax_backward_data(g, outs[k - start], k % 2, g.dtype)
        return g, None


def sinkhorn_tokens_last(v: torch.Tensor, t_max: int, eps: float) -> torch.Tensor:
    """The iteration on log-domain logits v (n, n, N): H's row index i on dim 0, its column index j on dim 1,
    tokens last, so every step is one vectorised pass over all tokens. Returns log H_res (n, n, N). No validation.

    A column step (normalise over i, dim 0) and a row step (over j, dim 1) with eps = 0 are one `log_softmax`
    each, which computes `(v - m) - log(sum exp(v - m))`, the precision rule, with a one-kernel backward."""
    if eps == 0:
        return LogSoftmaxIteration.apply(v, t_max)  # column, row, column, ..., row: 2 t_max log_softmax steps
    log_eps = math.log(eps)
    v = torch.log_softmax(v, dim=0)  # the first column step is an exact softmax over each column
    v = torch.logaddexp(v, torch.full_like(v, log_eps))  # + eps
    v = _normalise_eps(v, 1, log_eps)
    for _ in range(t_max - 1):
        v = _normalise_eps(_normalise_eps(v, 0, log_eps), 1, log_eps)
    return v


def to_tokens_last(logits: torch.Tensor) -> torch.Tensor:
    """(..., n, n) -> (n, n, N) contiguous, N = the product of the leading dims."""
    n = logits.shape[-1]
    return logits.reshape(math.prod(logits.shape[:-2]), n, n).permute(1, 2, 0).contiguous()


def from_tokens_last(v: torch.Tensor, lead: tuple[int, ...]) -> torch.Tensor:
    """(n, n, N) -> (..., n, n) contiguous: the layout the mixing bmm reads without a per-matrix loop."""
    n = v.shape[0]
    return v.permute(2, 0, 1).contiguous().reshape(*lead, n, n)  # reshape alone may return a strided view


def sinkhorn_log(u: torch.Tensor, t_max: int, eps: float) -> torch.Tensor:
    """The iteration on log-domain logits u (..., n, n) in u's dtype; returns log H_res (..., n, n)."""
    return from_tokens_last(sinkhorn_tokens_last(to_tokens_last(u), t_max, eps), tuple(u.shape[:-2]))


def validate(logits, t_max, eps, op: str = OP) -> None:
    _checks.check_tensor("logits", logits, op, ndim_min=2)
    _contract.square_dim("logits", logits, op)
    _checks.check_option("t_max", t_max, op)  # the table's range: 1 <= t_max <= max
    _checks.check_option("eps", eps, op)


def sinkhorn(logits: torch.Tensor, *, t_max: int = 20, eps: float = 0.0) -> torch.Tensor:
    """H_res (..., n, n) = Sinkhorn-Knopp(exp(logits (..., n, n))), P Eq. 9; same dtype as logits."""
    validate(logits, t_max, eps)
    cd = _checks.compute_dtype(logits.dtype)
    v = sinkhorn_tokens_last(to_tokens_last(logits.to(cd)), t_max, eps)  # (n, n, N)
    return from_tokens_last(torch.exp(v), tuple(logits.shape[:-2])).to(logits.dtype)
