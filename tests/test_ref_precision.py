"""The float64 reference Sinkhorn (forward and VJP) against a 60-digit oracle at logit scales 1 to 1e4 (issue 9 Sec. 1).

Oracle: `mp_oracle`, the linear iteration and its linear-domain reverse pass in mpmath (independent of the
reference's log-domain code), itself checked against central differences in the same precision.

Metrics, per (n, n) matrix, Frobenius norms:
- values:    |H - H*| / |H*|;
- gradients: |d - d*| / (|d*| + |G * H*|). The second term is the size of the cotangent entering the iteration
  (d u^K = G * H); without it a gradient that cancels to 1e-30 (exp(-|L|) terms at large scales) would have to be
  matched to 1e-13 of itself, below the float64 resolution of the terms that cancel.
Logits: `normal` is scale * N(0, 1); `ties` is scale * {-1, 0, 1} + N(0, 1) (the issue's case), where whole rows of
exp(L) sit ~scale below others and every step's rounding is visible.
"""

from __future__ import annotations

import mp_oracle as mp
import numpy as np
import pytest

from mhc_ref import sinkhorn, sinkhorn_vjp
from mhc_spec.table import load

SPEC = load()
PRESETS = {name: (SPEC.op_options("sinkhorn", name)["t_max"], SPEC.op_options("sinkhorn", name)["eps"])
           for name in ("paper", "deepseek_v4")}
SCALES = (1.0, 30.0, 1e3, 1e4)
TOL = 1e-14  # issue 9 asks for 1e-13; measured <= 3e-16 (the pre-fix formula: up to 1.9e-13 at |L| = 1e4)


def logits(rng, kind: str, scale: float, shape) -> np.ndarray:
    if kind == "normal":
        return scale * rng.standard_normal(shape)
    return scale * rng.integers(-1, 2, shape) + rng.standard_normal(shape)


def rel(a, b) -> np.ndarray:
    return np.linalg.norm(a - b, axis=(-2, -1)) / np.linalg.norm(b, axis=(-2, -1))


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("kind", ("normal", "ties"))
@pytest.mark.parametrize("n", (2, 4))
def test_sinkhorn_matches_60_digits(preset, scale, kind, n, rng):
    t_max, eps = PRESETS[preset]
    L = logits(rng, kind, scale, (4, n, n))
    G = rng.standard_normal((4, n, n))
    H_star = mp.batched(mp.sinkhorn_mp, L, t_max=t_max, eps=eps)
    d_star = mp.batched(mp.sinkhorn_vjp_mp, L, G, t_max=t_max, eps=eps)
    H = sinkhorn(L, preset=preset)
    d = sinkhorn_vjp(L, G, preset=preset)["logits"]
    tol = TOL
    err_h = rel(H, H_star)
    err_d = np.linalg.norm(d - d_star, axis=(-2, -1)) / (
        np.linalg.norm(d_star, axis=(-2, -1)) + np.linalg.norm(G * H_star, axis=(-2, -1)))
    assert err_h.max() <= tol, f"values: worst relative error {err_h.max():.3g} > {tol:.3g}"
    assert err_d.max() <= tol, f"gradients: worst relative error {err_d.max():.3g} > {tol:.3g}"


def test_issue_minimal_case():
    """issue 9: (d * L).sum() for seed 503 at scale 1e3, deepseek_v4; 0.024078497613033 before the fix."""
    rng = np.random.default_rng(503)
    L = 1000 * rng.integers(-1, 2, (4, 4)) + rng.standard_normal((4, 4))
    G = rng.standard_normal((4, 4))
    d = sinkhorn_vjp(L.T, G.T, preset="deepseek_v4")["logits"].T
    exact = 0.024078497557417651  # mp_oracle at 60 digits (0.024078497557418 in the issue, 80 digits)
    t_max, eps = PRESETS["deepseek_v4"]
    d_star = mp.sinkhorn_vjp_mp(L.T, G.T, t_max, eps)
    exact_sum = sum((d_star[j][i] * mp.mpf(L[i, j]) for i in range(4) for j in range(4)), mp.mpf(0))
    assert abs(float(exact_sum) - exact) < 1e-17
    # |L| |d| ~ 1e3 sets the scale of the sum's rounding; the pre-fix error was 5.6e-11
    assert abs((d * L).sum() - exact) <= TOL * np.abs(L).max() * np.linalg.norm(d) + 1e-15


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("scale", (1.0, 1e3))
def test_oracle_vjp_is_its_own_derivative(preset, scale, rng):
    """The oracle's reverse pass equals central differences of its forward (h = 1e-25 at 60 digits)."""
    t_max, eps = PRESETS[preset]
    L = logits(rng, "ties", scale, (3, 3))
    G = rng.standard_normal((3, 3))
    assert mp.check_vjp_by_differences(L, G, t_max, eps) < 1e-30


def _coeff_case(rng, scale, n=4, C=2, T=2):
    """x, phi, alpha, b whose residual logits are scale * {-1, 0, 1} + O(1) (the issue's tie structure)."""
    x = rng.standard_normal((T, n, C))
    phi = rng.standard_normal((n * C, n * n + 2 * n)) / np.sqrt(n * C)
    b = rng.standard_normal(n * n + 2 * n)
    b[2 * n:] += scale * rng.integers(-1, 2, n * n)
    return x, phi, np.array([0.7, 0.9, 1.0]), b


def _check_grads(fn, args, grads, cotangent, tol, rng):
    """alpha and b: every entry by central differences, norm-wise; x, phi, w_sub: two random directions v each,
    |<g, v> - D_v| <= tol |g| |v|."""
    for name, g in grads.items():
        if name in ("alpha", "b"):
            fd = np.array([mp.directional_derivative(fn, args, {name: e}, cotangent) for e in np.eye(g.size)])
            err = np.linalg.norm(g - fd) / np.linalg.norm(fd)
        else:
            err = 0.0
            for _ in range(2):
                v = rng.standard_normal(g.shape)
                fd = mp.directional_derivative(fn, args, {name: v}, cotangent)
                err = max(err, abs(float((g * v).sum()) - fd) / (np.linalg.norm(g) * np.linalg.norm(v)))
        assert err <= tol, f"d{name}: relative error {err:.3g} > {tol:.3g}"


def _coeff_tolerance(scale):
    """1e-13, plus the float64 rounding of the logits z = alpha m + b themselves (2^-53 |z|, 1.1e-12 at |z| = 1e4):
    the oracle takes z exactly from x, phi, alpha, b, the reference rounds it once before the Sinkhorn."""
    return 1e-13 + 2.0**-53 * scale


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("scale", (1.0, 1e3, 1e4))
def test_coeffs_gradients_at_large_logits(preset, scale, rng):
    from mhc_ref import mhc_coeffs_vjp

    opts = SPEC.op_options("mhc_coeffs", preset)
    x, phi, alpha, b = _coeff_case(rng, scale)
    T, n, _ = x.shape
    gp, gq, gr = rng.standard_normal((T, n)), rng.standard_normal((T, n)), rng.standard_normal((T, n, n))
    grads = mhc_coeffs_vjp(x, phi, alpha, b, gp, gq, gr, preset=preset)
    cot = [v for t in range(T) for v in [*gp[t], *gq[t], *gr[t].ravel()]]
    _check_grads(lambda x, phi, alpha, b: mp.mhc_coeffs_mp(x, phi, alpha, b, opts),
                 dict(x=x, phi=phi, alpha=alpha, b=b), grads, cot, _coeff_tolerance(scale), rng)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("scale", (1.0, 1e3, 1e4))
def test_layer_gradients_at_large_logits(preset, scale, rng):
    from mhc_ref import mhc_layer_vjp

    opts = SPEC.op_options("mhc_layer", preset)
    x, phi, alpha, b = _coeff_case(rng, scale)
    C = x.shape[-1]
    w = rng.standard_normal((C, C)) / np.sqrt(C)
    gy = rng.standard_normal(x.shape)
    grads = mhc_layer_vjp(x, phi, alpha, b, w, gy, preset=preset)
    probe_eps = SPEC.conformance["probe_rms_eps"]
    _check_grads(lambda x, phi, alpha, b, w_sub: mp.mhc_layer_mp(x, phi, alpha, b, w_sub, opts, probe_eps),
                 dict(x=x, phi=phi, alpha=alpha, b=b, w_sub=w), grads, gy.ravel().tolist(), _coeff_tolerance(scale),
                 rng)
