"""The jnp ops of the `jax` backend against the float64 NumPy reference: values and jax.vjp gradients, both presets,
the backend contract, x64 scoping (importing or calling the backend never flips jax's global flag), trace-time
input checks under jit, the NaN/Inf switch, Sinkhorn at logits of +-1e4 in every dtype, and 16-bit precision."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy

import mhc_ref  # noqa: E402
from mhc_backends import load_backend  # noqa: E402
from mhc_backends.jax import _checks, mhc_coeffs, mhc_layer, mhc_stack, sinkhorn  # noqa: E402

PRESETS = ("paper", "deepseek_v4")


@pytest.fixture(scope="module")
def be():
    return load_backend("jax")


def layer_inputs(rng, lead, n, C):
    width = n * n + 2 * n
    return (rng.standard_normal(lead + (n, C)), 0.3 * rng.standard_normal((n * C, width)),
            rng.uniform(0.2, 2.0, 3), rng.standard_normal(width), rng.standard_normal((C, C)) / np.sqrt(C))


def test_x64_stays_off():
    """Importing the backend leaves x64 off; a float64 call computes in float64 and leaves the global flag off."""
    code = (
        "import sys, numpy as np\n"
        "import mhc_backends.jax\n"
        "assert 'flax' not in sys.modules, 'importing mhc_backends.jax imported flax'\n"
        "from mhc_backends import load_backend\n"
        "be = load_backend('jax')\n"
        "import jax\n"
        "assert not jax.config.jax_enable_x64\n"
        "x = be.from_numpy(np.full((2, 3, 3), 0.1), 'float64')\n"
        "y = be.sinkhorn(x, t_max=3, eps=0.0)\n"
        "g = be.vjp('sinkhorn', [x], [x], t_max=3, eps=0.0)['logits']\n"
        "assert x.dtype == y.dtype == g.dtype == np.float64, (x.dtype, y.dtype, g.dtype)\n"
        "assert abs(float(np.asarray(y)[0, 0, 0]) - 1 / 3) < 1e-15\n"
        "assert not jax.config.jax_enable_x64, 'the backend flipped the global x64 flag'\n"
        "assert jax.numpy.ones(2).dtype == np.float32\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("preset", PRESETS)
def test_layer_and_coeffs_match_reference_float64(be, rng, preset, spec):
    opts = spec.op_options("mhc_layer", preset)
    arrays = layer_inputs(rng, (2, 3), 4, 8)
    native = [be.from_numpy(a, "float64") for a in arrays]
    y = be.mhc_layer(*native, **opts)
    np.testing.assert_allclose(np.asarray(y), mhc_ref.mhc_layer(*arrays, **opts), rtol=0, atol=1e-12)
    for got, want in zip(be.mhc_coeffs(*native[:4], **opts), mhc_ref.mhc_coeffs(*arrays[:4], **opts)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-12)
    g = rng.standard_normal(arrays[0].shape)
    grads = be.vjp("mhc_layer", native, [be.from_numpy(g, "float64")], **opts)
    want = mhc_ref.mhc_layer_vjp(*arrays, g, **opts)
    for name in ("x", "phi", "alpha", "b", "w_sub"):
        np.testing.assert_allclose(np.asarray(grads[name]), want[name], rtol=1e-9, atol=1e-10, err_msg=name)


def test_stack_matches_reference_with_and_without_recompute(be, rng, spec):
    L, n, C = 3, 2, 4
    opts = spec.op_options("mhc_stack", "deepseek_v4")
    width = n * n + 2 * n
    arrays = (rng.standard_normal((5, n, C)), 0.3 * rng.standard_normal((L, n * C, width)),
              rng.uniform(0.2, 2.0, (L, 3)), rng.standard_normal((L, width)), rng.standard_normal((L, C, C)) / 2)
    native = [be.from_numpy(a, "float64") for a in arrays]
    g = rng.standard_normal(arrays[0].shape)
    want = mhc_ref.mhc_stack_vjp(*arrays, g, **opts)
    np.testing.assert_allclose(np.asarray(be.mhc_stack(*native, **opts)), mhc_ref.mhc_stack(*arrays, **opts),
                               rtol=0, atol=1e-12)
    with jax.enable_x64(True):
        for r in (None, 2):
            grads = jax.grad(lambda *a, r=r: jnp.sum(mhc_stack(*a, **opts, recompute_every=r) * g),
                             argnums=(0, 1, 2, 3, 4))(*native)
            for name, got in zip(("x", "phi", "alpha", "b", "w_sub"), grads):
                np.testing.assert_allclose(np.asarray(got), want[name], rtol=1e-9, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16", "float16"])
def test_sinkhorn_large_logits_finite_values_and_gradients(be, rng, dtype):
    logits = 1e4 * rng.standard_normal((3, 4, 4))
    x = be.from_numpy(logits, dtype)
    for eps in (0.0, 1e-6):
        h = np.asarray(be.sinkhorn(x, t_max=20, eps=eps)).astype(np.float64)
        g = np.asarray(be.vjp("sinkhorn", [x], [x], t_max=20, eps=eps)["logits"]).astype(np.float64)
        assert np.isfinite(h).all() and np.isfinite(g).all()
        np.testing.assert_allclose(h.sum(-1), 1.0, atol=2e-2 if dtype in ("bfloat16", "float16") else 1e-5)


def test_16bit_activations_get_float32_maps_and_mixing(rng, spec):
    """bf16 x with float32 params: maps_dtype=float32 keeps the maps in float32, and they equal the float32
    computation on the same (bf16-rounded) x; the layer output is bf16 and close to the float64 reference."""
    opts = spec.op_options("mhc_layer", "paper")
    x, phi, alpha, b, w = layer_inputs(rng, (4,), 4, 8)
    xb = jnp.asarray(x, jnp.bfloat16)
    p32 = [jnp.asarray(a, jnp.float32) for a in (phi, alpha, b)]
    maps = mhc_coeffs(xb, *p32, maps_dtype=jnp.float32, **opts)
    ref32 = mhc_coeffs(xb.astype(jnp.float32), *p32, **opts)
    for got, want in zip(maps, ref32):
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-6)
    y = mhc_layer(xb, *p32, jnp.asarray(w, jnp.bfloat16), **opts)
    assert y.dtype == jnp.bfloat16
    want = mhc_ref.mhc_layer(np.asarray(xb.astype(jnp.float32), np.float64), phi.astype(np.float32).astype(float),
                             alpha.astype(np.float32).astype(float), b.astype(np.float32).astype(float),
                             np.asarray(jnp.asarray(w, jnp.bfloat16).astype(jnp.float32), np.float64), **opts)
    np.testing.assert_allclose(np.asarray(y.astype(jnp.float32)), want, rtol=0, atol=0.1)


def test_shape_and_dtype_errors_name_the_argument_at_trace_time(rng):
    """Under jit the static checks raise while tracing, with the reference's wording; the NaN scan needs data."""
    x, phi, alpha, b, _ = (jnp.asarray(a, jnp.float32) for a in layer_inputs(rng, (2,), 3, 4))
    f = jax.jit(lambda x, phi: mhc_coeffs(x, phi, alpha, b))
    with pytest.raises(ValueError, match=r"mhc_coeffs: phi must have shape \(n\*C, n\*n\+2\*n\) = \(12, 15\)"):
        f(x, phi[:-1])
    with pytest.raises(TypeError, match=r"mhc_coeffs: alpha must have dtype float32 to match x \(float32\), got "
                                        r"float16"):
        mhc_coeffs(x, phi, alpha.astype(jnp.float16), b)
    with pytest.raises(ValueError, match="mhc_coeffs: t_max must be >= 1, got 0"):
        mhc_coeffs(x, phi, alpha, b, t_max=0)
    with pytest.raises(TypeError, match="sinkhorn: logits must be a jax.Array"):
        sinkhorn([[0.0]])
    bad = x.at[0, 0, 0].set(jnp.nan)
    with pytest.raises(ValueError, match="mhc_coeffs: x must be finite, got 1 NaN/Inf entries"):
        mhc_coeffs(bad, phi, alpha, b)
    assert np.isnan(np.asarray(f(bad, phi)[0])).any()  # under jit: no data to scan, documented
    previous = _checks.set_check_finite(False)
    try:
        assert np.isnan(np.asarray(mhc_coeffs(bad, phi, alpha, b)[0])).any()
    finally:
        _checks.set_check_finite(previous)


def test_ops_compose_with_vmap_and_grad(rng):
    x, phi, alpha, b, w = (jnp.asarray(a, jnp.float32) for a in layer_inputs(rng, (3, 2), 2, 4))
    per_row = jax.vmap(lambda xr: mhc_layer(xr, phi, alpha, b, w))(x)
    np.testing.assert_allclose(np.asarray(per_row), np.asarray(mhc_layer(x, phi, alpha, b, w)), rtol=0, atol=1e-6)
    g = jax.grad(lambda p: jnp.sum(jnp.sin(mhc_layer(x, p, alpha, b, w))))(phi)
    eps, d = 1e-2, jnp.asarray(rng.standard_normal(phi.shape), jnp.float32)
    fd = (jnp.sum(jnp.sin(mhc_layer(x, phi + eps * d, alpha, b, w)))
          - jnp.sum(jnp.sin(mhc_layer(x, phi - eps * d, alpha, b, w)))) / (2 * eps)
    np.testing.assert_allclose(float(jnp.sum(g * d)), float(fd), rtol=2e-2)


def test_spec_hardening_rules(rng):
    """Scale-safe RMS (x * 1e20 in float32 gives the maps of x), empty leading dims give empty results and zero
    parameter gradients, t_max above the table's max and n = 0 are refused, overflowing map logits are refused."""
    x, phi, alpha, b, _ = (jnp.asarray(a, jnp.float32) for a in layer_inputs(rng, (3,), 4, 8))
    for got, want in zip(mhc_coeffs(x * 1e20, phi, alpha, b), mhc_coeffs(x, phi, alpha, b)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-6)
    empty = jnp.zeros((0, 2, 4, 8), jnp.float32)
    assert [m.shape for m in mhc_coeffs(empty, phi, alpha, b)] == [(0, 2, 4), (0, 2, 4), (0, 2, 4, 4)]
    g = jax.grad(lambda p: jnp.sum(mhc_coeffs(empty, p, alpha, b)[2]))(phi)
    assert g.shape == phi.shape and not np.asarray(g).any()
    with pytest.raises(ValueError, match="mhc_coeffs: t_max must be <= 1000, got 1001"):
        mhc_coeffs(x, phi, alpha, b, t_max=1001)
    with pytest.raises(ValueError, match=r"sinkhorn: logits must be \(\.\.\., n, n\) with n >= 1"):
        sinkhorn(jnp.zeros((2, 0, 0)))
    with pytest.raises(ValueError, match="mhc_coeffs: output 2 overflows float32"):
        mhc_coeffs(x, 100 * phi, alpha * 1e38, b)
