"""A 60-digit oracle for the Sinkhorn-Knopp projection and the coefficient path, independent of the reference.

The reference iterates in the log domain in float64; this module runs the brief's *linear* iteration (exp, then
column and row divisions by `sum + eps`) in mpmath with 60 significant digits and arbitrary exponents, so exp(1e4)
neither overflows nor underflows and every rounding is ~1e-60 relative. Its VJP is an independent reverse pass in the
linear domain (brief Sec. 3):

    Y = M / (s + eps), s = sum_axis M:   dM = (dY - sum_axis(dY * Y)) / (s + eps)
    Y = M + eps:                         dM = dY
    M = exp(L):                          dL = dM * M

`check_vjp_by_differences` confirms the reverse pass itself against central differences in the same precision.
Inputs are float64 arrays (exact in mpmath); outputs are float64 arrays (rounded once, from ~60-digit values).
"""

from __future__ import annotations

import mpmath
import numpy as np

DIGITS = 60
_CTX = mpmath.MPContext()
_CTX.dps = DIGITS
mpf = _CTX.mpf


def _mat(a) -> list[list]:
    return [[mpf(v) for v in row] for row in a]  # float64 values are exact in mpf


def _col_step(M, e):
    n = len(M)
    s = [sum(M[i][j] for i in range(n)) + e for j in range(n)]
    return [[M[i][j] / s[j] for j in range(n)] for i in range(n)], s


def _row_step(M, e):
    n = len(M)
    s = [sum(M[i]) + e for i in range(n)]
    return [[M[i][j] / s[i] for j in range(n)] for i in range(n)], s


def _steps(t_max: int, eps: float) -> list[tuple[str, bool]]:
    steps = [("col", False)] + ([("add", True)] if eps > 0 else []) + [("row", eps > 0)]
    return steps + [("col", eps > 0), ("row", eps > 0)] * (t_max - 1)


def _forward(L, t_max: int, eps: float):
    """States M^0 = exp(L), ... after each step, and the divisors of each normalisation."""
    e_mp = mpf(eps)
    M = [[_CTX.exp(v) for v in row] for row in _mat(L)]
    states, divisors = [M], []
    for kind, with_eps in _steps(t_max, eps):
        e = e_mp if with_eps else mpf(0)
        if kind == "add":
            M, s = [[v + e_mp for v in row] for row in M], None
        elif kind == "col":
            M, s = _col_step(M, e)
        else:
            M, s = _row_step(M, e)
        states.append(M)
        divisors.append(s)
    return states, divisors


def sinkhorn_mp(L, t_max: int = 20, eps: float = 0.0):
    """H_res of one (n, n) logit matrix as a list of mpf rows."""
    return _forward(L, t_max, eps)[0][-1]


def sinkhorn_vjp_mp(L, G, t_max: int = 20, eps: float = 0.0):
    """d <G, H_res> / d L of one (n, n) matrix, as a list of mpf rows (G: float64 or mpf rows)."""
    states, divisors = _forward(L, t_max, eps)
    n = len(states[0])
    dY = _mat(G)
    for k, (kind, _) in reversed(list(enumerate(_steps(t_max, eps)))):
        Y, s = states[k + 1], divisors[k]
        if kind == "add":
            continue
        if kind == "col":
            c = [sum(dY[i][j] * Y[i][j] for i in range(n)) for j in range(n)]
            dY = [[(dY[i][j] - c[j]) / s[j] for j in range(n)] for i in range(n)]
        else:
            c = [sum(dY[i][j] * Y[i][j] for j in range(n)) for i in range(n)]
            dY = [[(dY[i][j] - c[i]) / s[i] for j in range(n)] for i in range(n)]
    M0 = states[0]
    return [[dY[i][j] * M0[i][j] for j in range(n)] for i in range(n)]


def to_f64(rows) -> np.ndarray:
    return np.array([[float(v) for v in row] for row in rows], dtype=np.float64)


def batched(fn, *arrays, **kw) -> np.ndarray:
    """Apply a one-matrix oracle over the leading dims of (..., n, n) float64 arrays."""
    lead = arrays[0].shape[:-2]
    flat = [a.reshape((-1,) + a.shape[-2:]) for a in arrays]
    out = [to_f64(fn(*(a[i] for a in flat), **kw)) for i in range(flat[0].shape[0])]
    return np.stack(out).reshape(lead + arrays[0].shape[-2:])


def check_vjp_by_differences(L, G, t_max: int, eps: float, h: float = 1e-25) -> float:
    """max |vjp - central difference| / max |vjp| of the oracle itself (~1e-30 at 60 digits)."""
    n = len(L)
    Lm, Gm = _mat(L), _mat(G)
    vjp = sinkhorn_vjp_mp(L, G, t_max, eps)
    hm = mpf(h)
    worst, scale = mpf(0), max(abs(v) for row in vjp for v in row)
    for i in range(n):
        for j in range(n):
            plus = [row[:] for row in Lm]
            minus = [row[:] for row in Lm]
            plus[i][j] += hm
            minus[i][j] -= hm
            hp, hm_ = sinkhorn_mp(plus, t_max, eps), sinkhorn_mp(minus, t_max, eps)
            fd = sum(Gm[a][b] * (hp[a][b] - hm_[a][b]) for a in range(n) for b in range(n)) / (2 * hm)
            worst = max(worst, abs(fd - vjp[i][j]))
    return float(worst / scale)
