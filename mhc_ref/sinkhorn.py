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


# A log-domain state is carried as an unevaluated pair u = hi + lo (lo = 0 below float64). A row of exp(L) that sits
# ~|L| below the others is only resolved by the log domain, in states of magnitude ~|L|; one float64 holds them to
# ulp(|L|) / 2 (9e-13 at |L| = 1e4), so `lo` keeps what each rounding drops (TwoSum, Knuth) and every state keeps
# ~1e-16 absolute precision. The compute dtypes below float64 are the naive baseline of the tolerance rule (spec
# §10) and keep plain single-word states.
State = tuple[np.ndarray, np.ndarray]


def _add(u: State, c: np.ndarray) -> State:
    """u + c as a pair; in float64 the rounding error of hi + c moves into lo (exact TwoSum)."""
    hi, lo = u
    s = hi + c
    if s.dtype != np.float64:
        return s, lo
    bb = s - hi
    err = (hi - (s - bb)) + (c - bb)
    s2 = s + (err + lo)  # renormalise so that hi is the rounded value of the pair
    return s2, (s - s2) + (err + lo)


def _value(u: State) -> np.ndarray:
    return u[0] + u[1]


def _normalise(u: State, axis: int, log_eps: float | None) -> State:
    """u - log(sum_axis exp(u) + eps): one T_c / T_r step in the log domain, to full precision at any |u|.

    With m = max u and s = sum exp(u - m) (1 <= s <= n) the result is `(u - m) - log s`, never `u - (m + log s)`:
    `m + log s` rounds at the scale of |m| (1e-13 absolute at |m| = 1e3), and that error would reach every entry.
    The eps term is taken relative to the log-sum a = m + log s, on whichever side of log eps it lies:
        a <  log eps:  u - log eps - log1p(exp(a - log eps))       (eps dominates; u is below log eps as well)
        a >= log eps:  (u - m) - log s - log1p(exp(log eps - a))   (exp(log eps - a) <= 1, cannot overflow)
    """
    dt = u[0].dtype
    log_eps = None if log_eps is None else dt.type(log_eps)  # typed: a Python float would promote bfloat16
    zero = dt.type(0)
    m = np.max(u[0], axis=axis, keepdims=True)
    d = _add(u, -m)  # u - m, exact in float64
    s = np.sum(np.exp(_value(d)), axis=axis, keepdims=True)
    out = _add(d, -np.log(s))
    if log_eps is None:
        return out
    a = m + np.log(s)  # only compared with log eps and inside log1p(exp(.)), where its rounding is harmless
    eps_side = _add(_add(u, -log_eps), -np.log1p(np.exp(np.minimum(a - log_eps, zero))))
    sum_side = _add(out, -np.log1p(np.exp(np.minimum(log_eps - a, zero))))
    below = a < log_eps
    return np.where(below, eps_side[0], sum_side[0]), np.where(below, eps_side[1], sum_side[1])


def _add_eps(u: State, log_eps: float) -> State:
    """log(exp(u) + eps) = logaddexp(u, log eps), as the larger term plus log1p(exp(-|difference|))."""
    v = _value(u)
    log_eps = v.dtype.type(log_eps)  # typed: a Python float would promote bfloat16
    above = v >= log_eps
    c = np.log1p(np.exp(-np.abs(v - log_eps)))  # log1p(exp(.)) of the smaller term relative to the larger
    up = _add(u, c)
    down = _add((np.full_like(v, log_eps), np.zeros_like(v)), c)
    return np.where(above, up[0], down[0]), np.where(above, up[1], down[1])


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


def _forward_states(logits: np.ndarray, t_max: int, eps: float) -> list[State]:
    """Log-domain states u^0 = L, ..., u^K after every step of `_steps` (length K + 1), each a pair (hi, lo)."""
    log_eps = float(np.log(eps)) if eps > 0 else None
    u = (logits, np.zeros_like(logits))
    states = [u]
    for kind, with_eps in _steps(t_max, eps):
        le = log_eps if with_eps else None
        if kind == "col":
            u = _normalise(u, axis=-2, log_eps=le)  # (..., n, n): divide by column sums
        elif kind == "row":
            u = _normalise(u, axis=-1, log_eps=le)  # divide by row sums
        else:
            u = _add_eps(u, log_eps)  # M + eps
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
    return np.exp(_value(states[-1]))  # (..., n, n)


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
    du = g_h_res.astype(dt) * np.exp(_value(states[-1]))
    steps = _steps(t_max, eps)
    for k in reversed(range(len(steps))):
        kind, u = steps[k][0], _value(states[k])
        if kind == "add_eps":
            du = du * np.exp(-np.logaddexp(0, dt.type(log_eps) - u))  # exp(u) / (exp(u) + eps) = 1/(1 + eps e^-u)
            continue
        axis = -2 if kind == "col" else -1
        p = np.exp(_value(states[k + 1]))  # exp(u) / (sum + eps): the step's own output, no recomputed denominator
        du = du - p * np.sum(du, axis=axis, keepdims=True)
    return {"logits": du}  # (..., n, n)
