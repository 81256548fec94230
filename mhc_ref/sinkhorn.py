"""Sinkhorn-Knopp projection onto (approximately) doubly-stochastic matrices, P Eq. 9.

    M^0 = exp(L)
    M^t = T_r(T_c(M^{t-1})),  t = 1..t_max        T_c: divide each column by its sum, T_r: each row
    H_res = M^{t_max}

Column first, row last: the row sums of H_res are exact. With eps > 0 (DeepSeek-V4) the first column step is an
exact softmax followed by `+ eps`, and every later division is by `(sum + eps)`:

    H = T_r^eps(T_c(exp L) + eps), then t_max - 1 times T_r^eps(T_c^eps(.))

The iteration is evaluated in the log domain, u = log M, where T_c is `u - logsumexp_over_rows(u)` and `+ eps` is
`logaddexp(u, log eps)`. It is the same function as the linear iteration (not an approximation) and it never
overflows or divides 0 by 0, so logits of magnitude 1e4 give exact, finite results.

The VJP is the exact reverse of the truncated iteration (P Sec. 4.3.1), not the implicit gradient at convergence.
"""

from __future__ import annotations

import numpy as np

from ._common import check_array, compute_dtype_of, options

OP = "sinkhorn"


def _normalise(u: np.ndarray, axis: int, log_eps: float | None) -> np.ndarray:
    """u - log(sum_axis exp(u) + eps): one T_c / T_r step in the log domain, to full precision at any |u|.

    With m = max u and s = sum exp(u - m) (1 <= s <= n) the result is `(u - m) - log s`, never `u - (m + log s)`:
    `m + log s` rounds at the scale of |m| (1e-13 absolute at |m| = 1e3), and that error would reach every entry.
    The eps term is taken relative to the log-sum a = m + log s, on whichever side of log eps it lies:
        a <  log eps:  u - log eps - log1p(exp(a - log eps))       (eps dominates; u is below log eps as well)
        a >= log eps:  (u - m) - log s - log1p(exp(log eps - a))   (exp(log eps - a) <= 1, cannot overflow)
    """
    m = np.max(u, axis=axis, keepdims=True)
    s = np.sum(np.exp(u - m), axis=axis, keepdims=True)
    out = (u - m) - np.log(s)
    if log_eps is None:
        return out
    a = m + np.log(s)  # only compared with log eps and inside log1p(exp(.)), where its rounding is harmless
    eps_side = u - log_eps - np.log1p(np.exp(np.minimum(a - log_eps, 0.0)))
    sum_side = out - np.log1p(np.exp(np.minimum(log_eps - a, 0.0)))
    return np.where(a < log_eps, eps_side, sum_side)


def _steps(t_max: int, eps: float) -> list[tuple[str, bool]]:
    """The iteration as a list of (kind, with_eps): kind is 'col', 'row' or 'add_eps'."""
    steps: list[tuple[str, bool]] = [("col", False)]
    if eps > 0:
        steps.append(("add_eps", True))
    steps.append(("row", eps > 0))
    for _ in range(t_max - 1):
        steps += [("col", eps > 0), ("row", eps > 0)]
    return steps


def _validate(logits: np.ndarray, op: str = OP) -> None:
    check_array("logits", logits, 2, op)
    if logits.shape[-1] != logits.shape[-2]:
        raise ValueError(f"{op}: logits must be square in its last two dims (..., n, n), got shape {logits.shape}")
    if logits.shape[-1] < 1:
        raise ValueError(f"{op}: logits must be (..., n, n) with n >= 1, got shape {logits.shape}")


def _forward_states(logits: np.ndarray, t_max: int, eps: float) -> list[np.ndarray]:
    """Log-domain states u^0 = L, ..., u^K after every step of `_steps` (length K + 1)."""
    log_eps = float(np.log(eps)) if eps > 0 else None
    states = [logits]
    u = logits
    for kind, with_eps in _steps(t_max, eps):
        le = log_eps if with_eps else None
        if kind == "col":
            u = _normalise(u, axis=-2, log_eps=le)  # (..., n, n): divide by column sums
        elif kind == "row":
            u = _normalise(u, axis=-1, log_eps=le)  # divide by row sums
        else:
            u = np.logaddexp(u, u.dtype.type(log_eps))  # M + eps
        states.append(u)
    return states


def sinkhorn(logits, t_max=None, eps=None, *, preset=None, compute_dtype="float64"):
    """H_res = Sinkhorn-Knopp(exp(logits)), P Eq. 9; logits (..., n, n) -> (..., n, n).

    `t_max` (number of column/row pairs, >= 1) and `eps` default to the preset's values (`paper`: 20, 0).
    """
    _validate(logits)
    opts = options(OP, preset, {"t_max": t_max, "eps": eps})
    dt = compute_dtype_of(compute_dtype)
    states = _forward_states(logits.astype(dt), opts["t_max"], opts["eps"])
    return np.exp(states[-1])  # (..., n, n)


def sinkhorn_vjp(logits, g_h_res, t_max=None, eps=None, *, preset=None, compute_dtype="float64"):
    """{logits: d(loss)/d(logits)} given g_h_res = d(loss)/d(H_res): the exact reverse of the unrolled iteration.

    Per log-domain step u' = u - log(sum_k exp(u_k) + eps) along an axis:  du = du' - p * sum(du'),
    p = exp(u) / (sum + eps);  for u' = logaddexp(u, log eps):  du = du' * exp(u) / (exp(u) + eps);
    for the output H = exp(u^K):  du^K = g ⊙ H.  In the linear domain these are the brief's per-step rules
    dM_ij = (dY_ij - sum_k dY_ik Y_ik) / r_i.
    """
    _validate(logits, OP + "_vjp")
    check_array("g_h_res", g_h_res, 2, OP + "_vjp")
    if g_h_res.shape != logits.shape:
        raise ValueError(f"{OP}_vjp: g_h_res must have shape {logits.shape}, got {g_h_res.shape}")
    opts = options(OP, preset, {"t_max": t_max, "eps": eps})
    dt = compute_dtype_of(compute_dtype)
    t_max, eps = opts["t_max"], opts["eps"]
    states = _forward_states(logits.astype(dt), t_max, eps)
    log_eps = float(np.log(eps)) if eps > 0 else None
    du = g_h_res.astype(dt) * np.exp(states[-1])
    steps = _steps(t_max, eps)
    for k in reversed(range(len(steps))):
        kind, u = steps[k][0], states[k]
        if kind == "add_eps":
            du = du * np.exp(-np.logaddexp(0, dt.type(log_eps) - u))  # exp(u) / (exp(u) + eps) = 1/(1 + eps e^-u)
            continue
        axis = -2 if kind == "col" else -1
        p = np.exp(states[k + 1])  # exp(u) / (sum + eps): the step's own output, no recomputed denominator
        du = du - p * np.sum(du, axis=axis, keepdims=True)
    return {"logits": du}  # (..., n, n)
