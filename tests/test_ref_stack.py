"""The reference `mhc_stack` (L mHC layers, stacked parameters) against independent compositions: the model helper
`mhc_ref.model.Stack` (its own loop over mhc_coeffs / mhc_pre / mhc_post_res), the plain and the pre-norm residual
networks its invariants name, and the naive low-precision run it gives the tolerance rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mhc_ref import ProbeSublayer, expand_streams, mhc_init, mhc_stack, mhc_stack_vjp
from mhc_ref.model import Stack
from mhc_spec.table import load

SPEC = load()
INV = {name: inv["float64_atol"] for name, inv in SPEC.invariants.items()}


def stacked(rng, n, C, L, scheme="default"):
    """Stacked parameters {phi (L, n*C, m), alpha (L, 3), b (L, m), w_sub (L, C, C)} and their per-layer dicts."""
    layers = [mhc_init(n, C, scheme=scheme, rng=int(rng.integers(1 << 30))) for _ in range(L)]
    for p in layers:  # a larger phi and alpha than at init, so the maps depend on x
        p["phi"] = p["phi"] + rng.standard_normal(p["phi"].shape) / np.sqrt(n * C) * (scheme != "prenorm")
        p["alpha"] = rng.uniform(0.5, 1.5, 3)
    w_sub = 1.5 * rng.standard_normal((L, C, C)) / np.sqrt(C)
    params = {k: np.stack([p[k] for p in layers]) for k in ("phi", "alpha", "b")}
    return {**params, "w_sub": w_sub}, layers


@pytest.mark.parametrize("preset", list(SPEC.presets))
@pytest.mark.parametrize("n,L", [(1, 2), (3, 3), (4, 1)])
def test_stack_matches_model_stack(n, L, preset, rng):
    """Values and every gradient equal model.Stack's states x_L and per-layer gradients (g through the sum collapse
    is the cotangent replicated over the streams)."""
    C = 3
    p, layers = stacked(rng, n, C, L)
    h = rng.standard_normal((2, C))
    model = Stack(n=n, sublayers=[ProbeSublayer(w) for w in p["w_sub"]], params=layers, preset=preset)
    x0 = expand_streams(h, n)
    _, trace = model.forward(h)
    y = mhc_stack(x0, p["phi"], p["alpha"], p["b"], p["w_sub"], preset=preset)
    assert np.max(np.abs(y - trace["x"][L])) <= 1e-14 * max(1.0, np.max(np.abs(y)))
    g_h = rng.standard_normal((2, C))
    grads = mhc_stack_vjp(x0, p["phi"], p["alpha"], p["b"], p["w_sub"], np.repeat(g_h[:, None, :], n, axis=1),
                          preset=preset)
    want = model.vjp(h, g_h)
    assert np.allclose(grads["x"].sum(axis=-2), want["h"], rtol=1e-12, atol=1e-13)
    for l in range(L):
        for name in ("phi", "alpha", "b", "w_sub"):
            assert np.allclose(grads[name][l], want["layers"][l][name], rtol=1e-12, atol=1e-13), (l, name)


def residual_network(h, w_sub):
    """h_{l+1} = h_l + F_l(h_l), the plain pre-norm residual network around the probe sublayers."""
    for w in w_sub:
        h = h + ProbeSublayer(w).forward(h)[0]
    return h


@pytest.mark.parametrize("preset", list(SPEC.presets))
@pytest.mark.parametrize("n", [2, 3, 4])
def test_zero_phi_is_prenorm_network(n, preset, rng):
    """Invariant zero_phi_is_prenorm_network: the `prenorm` init (phi = 0, b_pre = -ln(n-1), b_post = 0) with a
    random b_res and a replicated input gives h_L in every stream (exact in `paper`, O(eps) in deepseek_v4)."""
    C, L = 5, 4
    p, _ = stacked(rng, n, C, L, scheme="prenorm")
    p["b"][:, 2 * n:] = rng.standard_normal((L, n * n))
    h = rng.standard_normal((2, 3, C))
    y = mhc_stack(expand_streams(h, n), **p, preset=preset)
    err = float(np.max(np.abs(y - residual_network(h, p["w_sub"])[..., None, :])))
    assert err <= (INV["zero_phi_is_prenorm_network"] if preset == "paper" else 1e-4), err


def test_n1_fixed_maps_is_residual(rng):
    """Invariant n1_fixed_maps_is_residual: n = 1, phi = 0, b_pre = 40, b_post = 0: bit-identical to x + F(x)."""
    C, L = 4, 3
    p, _ = stacked(rng, 1, C, L, scheme="prenorm")
    p["b"][:, 0], p["b"][:, 1] = 40.0, 0.0
    x = rng.standard_normal((2, 1, C))
    y = mhc_stack(x, **p, sinkhorn_eps=0.0, pre_eps=0.0)
    assert np.max(np.abs(y - residual_network(x, p["w_sub"]))) <= INV["n1_fixed_maps_is_residual"]


def test_one_layer_is_mhc_layer(rng):
    from mhc_ref import mhc_layer, mhc_layer_vjp

    p, _ = stacked(rng, 3, 2, 1)
    x, g = rng.standard_normal((2, 3, 2)), rng.standard_normal((2, 3, 2))
    one = {k: v[0] for k, v in p.items()}
    assert np.array_equal(mhc_stack(x, **p), mhc_layer(x, **one))
    grads, want = mhc_stack_vjp(x, *p.values(), g), mhc_layer_vjp(x, *one.values(), g)
    for k in want:
        assert np.array_equal(grads[k], want[k][None] if k != "x" else want[k]), k


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_compute_dtype_rounds_every_state(dtype, rng):
    """The naive baseline returns the dtype and differs from float64 by a rounding-sized amount, growing with L."""
    p, _ = stacked(rng, 2, 3, 3)
    x = rng.standard_normal((4, 2, 3))
    y64 = mhc_stack(x, **p)
    y = mhc_stack(x, **p, compute_dtype=dtype)
    assert y.dtype.name == dtype
    rel = float(np.max(np.abs(y.astype(np.float64) - y64))) / float(np.max(np.abs(y64)))
    eps = 2.0 ** -23 if dtype == "float32" else 2.0 ** -7
    assert 0 < rel <= 200 * eps, rel
    g = mhc_stack_vjp(x, *p.values(), np.ones_like(x), compute_dtype=dtype)
    assert all(v.dtype.name == dtype and np.all(np.isfinite(v.astype(np.float64))) for v in g.values())


def test_zero_layers_rejected():
    x = np.ones((2, 2, 3))
    with pytest.raises(ValueError, match="L >= 1"):
        mhc_stack(x, np.ones((0, 6, 8)), np.ones((0, 3)), np.ones((0, 8)), np.ones((0, 3, 3)))
    assert math.isfinite(float(mhc_stack(x, np.zeros((1, 6, 8)), np.ones((1, 3)), np.zeros((1, 8)),
                                         np.zeros((1, 3, 3))).sum()))
