"""The params-pytree API of the `jax` backend: `init` as the reference's init, `mhc_layer(params, x, f)` equal to the
op under jit / vmap / grad, `mhc_stack` (lax.scan over stacked params) equal to a Python loop of layers, the
selective recompute (per-block jax.checkpoint) giving equal gradients while the saved residuals follow the memory
model of P Sec. 4.3.2, and the DeepSeek-V4 converter against the reference's."""

from __future__ import annotations

import contextlib
import io
import math
import re

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy

import mhc_ref  # noqa: E402
import mhc_ref.deepseek  # noqa: E402
from mhc_backends.jax import deepseek, functional, mhc_layer  # noqa: E402


@pytest.mark.parametrize("preset", ["paper", "deepseek_v4"])
def test_init_is_the_reference_init(preset):
    n, C = 4, 3
    p = functional.init(jax.random.PRNGKey(0), n, C, preset, scheme="near_identity")
    ref = mhc_ref.init.mhc_init(n, C, scheme="near_identity")
    b_ref = ref["b"].copy()
    if preset == "deepseek_v4":  # the res entries in col_major order
        b_ref[2 * n:] = ref["b"][2 * n:].reshape(n, n).T.reshape(-1)
    np.testing.assert_allclose(np.asarray(p["b"]), b_ref, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(p["alpha"]), ref["alpha"])
    assert p["phi"].shape == (n * C, n * n + 2 * n) and p["phi"].dtype == jnp.float32
    assert 0.01 < float(jnp.std(p["phi"])) < 0.04


def test_layer_under_jit_vmap_grad_equals_the_op(rng):
    n, C = 3, 4
    params = functional.init(jax.random.PRNGKey(1), n, C, "deepseek_v4", phi_std=0.5)
    w = jnp.asarray(rng.standard_normal((C, C)) / 2, jnp.float32)
    x = jnp.asarray(rng.standard_normal((2, 5, n, C)), jnp.float32)
    f = lambda u: jnp.tanh(u @ w)  # noqa: E731
    opts = functional.resolve_options("deepseek_v4", {}, "test")
    want = mhc_layer(x, params["phi"], params["alpha"], params["b"], f, **opts)
    jitted = jax.jit(lambda p, x: functional.mhc_layer(p, x, f, preset="deepseek_v4"))
    np.testing.assert_allclose(np.asarray(jitted(params, x)), np.asarray(want), rtol=0, atol=1e-6)
    mapped = jax.vmap(lambda xr: functional.mhc_layer(params, xr, f, preset="deepseek_v4"))(x)
    np.testing.assert_allclose(np.asarray(mapped), np.asarray(want), rtol=0, atol=1e-6)
    loss = lambda p: jnp.sum(jnp.cos(functional.mhc_layer(p, x, f, preset="deepseek_v4")))  # noqa: E731
    g = jax.jit(jax.grad(loss))(params)
    d = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape), a.dtype), params)
    step = lambda s: loss(jax.tree.map(lambda a, b: a + s * b, params, d))  # noqa: E731
    fd = (step(1e-2) - step(-1e-2)) / 2e-2
    lin = sum(float(jnp.sum(a * b)) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(d)))
    np.testing.assert_allclose(lin, float(fd), rtol=2e-2)
    with pytest.raises(ValueError, match=r"mhc_layer: phi must have shape"):
        functional.mhc_layer(params, x[..., :2], f)
    with pytest.raises(TypeError, match=r"mhc_layer: unknown options \['tmax'\]"):
        functional.mhc_layer(params, x, f, tmax=3)


def stack_case(rng, L=4, n=4, C=8, tokens=(3, 5)):
    params = functional.stack_init(jax.random.PRNGKey(2), L, n, C, phi_std=0.3)
    w = jnp.asarray(rng.standard_normal((L, C, C)) / math.sqrt(C), jnp.float32)
    x = jnp.asarray(rng.standard_normal(tokens + (n, C)), jnp.float32)
    return params, w, x


def linear(w, u):
    return u @ w


def test_scan_stack_equals_a_loop_of_layers_and_recompute_keeps_gradients(rng):
    params, w, x = stack_case(rng)
    loop = x
    for l in range(4):
        loop = functional.mhc_layer(jax.tree.map(lambda a, l=l: a[l], params), loop, lambda u, l=l: linear(w[l], u))
    scanned = functional.mhc_stack(params, x, linear, w)
    np.testing.assert_allclose(np.asarray(scanned), np.asarray(loop), rtol=0, atol=2e-6)

    def loss(params, w, x, r):
        return jnp.sum(jnp.sin(functional.mhc_stack(params, x, linear, w, recompute_every=r)))

    g0 = jax.grad(loss, argnums=(0, 1, 2))(params, w, x, None)
    for r in (1, 3, "auto"):
        g1 = jax.grad(loss, argnums=(0, 1, 2))(params, w, x, r)
        for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def saved_activation_bytes(fn, *args, tokens=(3, 5)):
    """Bytes of the residuals jax.vjp keeps that carry the token axes (parameters excluded), read from
    jax.ad_checkpoint.print_saved_residuals (public API: 'f32[3,5,4,8] from ...' lines)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        jax.ad_checkpoint.print_saved_residuals(fn, *args)
    total, sizes = 0, {"f32": 4, "f64": 8, "bf16": 2, "f16": 2}
    for line in out.getvalue().splitlines():
        m = re.match(r"(\w+)\[([\d,]*)\]", line)
        dims = tuple(int(d) for d in m.group(2).split(",") if d)
        if any(dims[i:i + 2] == tokens for i in range(len(dims))):
            total += sizes[m.group(1)] * math.prod(dims)
    return total


@pytest.mark.parametrize("recompute", [1, 2, 4])
def test_recompute_saves_what_the_memory_model_says(rng, recompute):
    """With a linear F: stored = x_{l0} (nC) per block + f_l (C) per layer, exactly (F's input u_l is recomputed by
    the mHC ops); without recompute the mHC part keeps far more (x_l, maps, Sinkhorn states)."""
    n, C, L, tokens = 4, 8, 4, 15
    params, w, x = stack_case(rng, L, n, C)
    fn = lambda r: lambda p, w, x: jnp.sum(functional.mhc_stack(p, x, linear, w, recompute_every=r))  # noqa: E731
    plain = saved_activation_bytes(fn(None), params, w, x)
    got = saved_activation_bytes(fn(recompute), params, w, x)
    want = 4 * tokens * (n * C * math.ceil(L / recompute) + C * L)
    assert got == want, (got, want)
    assert got < plain / 3, (got, plain)


def test_deepseek_converter_matches_the_reference(rng):
    n, C = 4, 2
    width = n * n + 2 * n
    fn, scale, base = rng.standard_normal((width, n * C)), rng.uniform(0.5, 1, 3), rng.standard_normal(width)
    ours = deepseek.from_deepseek(*(jnp.asarray(a, jnp.float32) for a in (fn, scale, base)))
    ref = mhc_ref.deepseek.from_deepseek(fn, scale, base)
    for k in ("phi", "alpha", "b"):
        np.testing.assert_allclose(np.asarray(ours[k]), ref[k], rtol=1e-6)
    back = deepseek.to_deepseek(ours)
    np.testing.assert_allclose(np.asarray(back["fn"]), fn, rtol=1e-6)
    with pytest.raises(ValueError, match="from_deepseek: fn must have n\\*n\\+2\\*n rows"):
        deepseek.from_deepseek(jnp.zeros((7, 8)), jnp.zeros(3), jnp.zeros(7))
