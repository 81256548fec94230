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


# -- the coefficient path and one layer, forward only (gradients are checked by central differences) ------------------
def _sigmoid(z):
    return 1 / (1 + _CTX.exp(-z))


def mhc_coeffs_mp(x, phi, alpha, b, opts):
    """[(h_pre, h_post, H_res) per token] for x (T, n, C) (nested lists / arrays of mpf or float), P Eqs. 14-19."""
    T, n, C = len(x), len(x[0]), len(x[0][0])
    out = []
    for t in range(T):
        xb = [mpf(x[t][k][c]) for k in range(n) for c in range(C)]  # stream-major
        r = _CTX.sqrt(sum(v * v for v in xb) / (n * C) + mpf(opts["rms_eps"]))
        m = [sum(xb[i] * mpf(phi[i][j]) for i in range(n * C)) / r for j in range(n * n + 2 * n)]
        z = [mpf(alpha[0 if j < n else 1 if j < 2 * n else 2]) * m[j] + mpf(b[j]) for j in range(n * n + 2 * n)]
        h_pre = [_sigmoid(z[j]) + mpf(opts["pre_eps"]) for j in range(n)]
        h_post = [mpf(opts["post_scale"]) * _sigmoid(z[n + j]) for j in range(n)]
        v = z[2 * n:]
        L = [[v[i * n + j] if opts["res_layout"] == "row_major" else v[j * n + i] for j in range(n)]
             for i in range(n)]
        out.append((h_pre, h_post, sinkhorn_mp(L, opts["t_max"], opts["sinkhorn_eps"])))
    return out


def mhc_layer_mp(x, phi, alpha, b, w_sub, opts, probe_eps):
    """x_{l+1} (T, n, C) as mpf lists: H_res x + H_post^T F(H_pre x), F(u) = tanh(rmsnorm(u) @ w_sub)."""
    n, C = len(x[0]), len(x[0][0])
    out = []
    for t, (h_pre, h_post, H) in enumerate(mhc_coeffs_mp(x, phi, alpha, b, opts)):
        xt = [[mpf(x[t][k][c]) for c in range(C)] for k in range(n)]
        u = [sum(h_pre[k] * xt[k][c] for k in range(n)) for c in range(C)]
        r = _CTX.sqrt(sum(v * v for v in u) / C + mpf(probe_eps))
        f = [_CTX.tanh(sum(u[i] / r * mpf(w_sub[i][j]) for i in range(C))) for j in range(C)]
        out.append([[sum(H[i][k] * xt[k][c] for k in range(n)) + h_post[i] * f[c] for c in range(C)]
                    for i in range(n)])
    return out


def _flatten(tree) -> list:
    if isinstance(tree, (list, tuple)):
        return [v for item in tree for v in _flatten(item)]
    return [tree]


def directional_derivative(fn, args: dict, direction: dict, cotangent: list, h: float = 1e-25) -> float:
    """d/dt <cotangent, fn(args + t * direction)> at t = 0 by a central difference in 60 digits (error ~1e-40).

    `args` and `direction` map names to float64 arrays (direction may omit names); `fn(**args)` returns a nested list
    of mpf whose flattening matches `cotangent` (flat floats)."""
    hm = mpf(h)

    def moved(sign):
        out = {}
        for k, a in args.items():
            a = np.asarray(a, dtype=np.float64)
            d = np.asarray(direction.get(k, np.zeros_like(a)), dtype=np.float64)
            vals = [mpf(v) + sign * hm * mpf(dv) for v, dv in zip(a.ravel().tolist(), d.ravel().tolist())]
            out[k] = np.array(vals, dtype=object).reshape(a.shape).tolist()
        return out

    plus, minus = _flatten(fn(**moved(1))), _flatten(fn(**moved(-1)))
    g = [mpf(v) for v in cotangent]
    return float(sum((gi * (p - q) for gi, p, q in zip(g, plus, minus)), mpf(0)) / (2 * hm))
