"""The Flax NNX modules of the `jax` backend: MHC in its four modes against the functional ops and the plain
residual network, a jitted training step with nnx, the head collapse, the DeepSeek loader, and impl="pallas"."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
nnx = pytest.importorskip("flax.nnx")
jnp = jax.numpy

from mhc_backends.jax import CollapseStreams, ExpandStreams, MHC, collapse_streams, functional, hc_coeffs  # noqa: E402,I001


class Lin(nnx.Module):
    def __init__(self, C, rngs):
        self.w = nnx.Param(jax.random.normal(rngs.params(), (C, C)) / C)

    def __call__(self, u):
        return jnp.tanh(u @ self.w[...])


def test_mhc_mode_equals_the_functional_layer(rng):
    n, C = 4, 6
    layer = MHC(Lin(C, nnx.Rngs(0)), n=n, dim=C, preset="deepseek_v4", rngs=nnx.Rngs(1))
    x = jnp.asarray(rng.standard_normal((2, 3, n, C)), jnp.float32)
    params = {k: getattr(layer, k)[...] for k in ("phi", "alpha", "b")}
    want = functional.mhc_layer(params, x, layer.sublayer, preset="deepseek_v4")
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(want), rtol=0, atol=1e-6)
    h_pre, h_post, h_res = layer.maps(x)
    assert h_res.shape == (2, 3, n, n) and h_pre.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(h_res.sum(-1)), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match=r"MHC: x must have shape \(\.\.\., n, C\) = \(\.\.\., 4, 6\)"):
        layer(x[..., :5])


def test_residual_mode_is_the_plain_residual_network(rng):
    n, C, L = 3, 4, 3
    subs = [Lin(C, nnx.Rngs(k)) for k in range(L)]
    layers = [MHC(s, n=n, dim=C, mode="residual") for s in subs]
    h = jnp.asarray(rng.standard_normal((5, C)), jnp.float32)
    x = ExpandStreams(n)(h)
    x = x * jnp.asarray([1.0] + [0.0] * (n - 1))[:, None]  # the residual state lives in stream 0
    plain = h
    for s, layer in zip(subs, layers):
        x, plain = layer(x), plain + s(plain)
    np.testing.assert_array_equal(np.asarray(CollapseStreams(n)(x)), np.asarray(plain))


def test_fixed_and_hc_modes(rng):
    n, C = 3, 4
    x = jnp.asarray(rng.standard_normal((2, n, C)), jnp.float32)
    sub = Lin(C, nnx.Rngs(0))
    y = MHC(sub, n=n, dim=C, mode="fixed")(x)
    np.testing.assert_allclose(np.asarray(y), np.asarray(x + sub(x.mean(-2))[..., None, :]), rtol=0, atol=1e-6)
    hc = MHC(sub, n=n, dim=C, mode="hc", layer_index=4)
    maps = hc.maps(x)
    want = hc_coeffs(x, *hc.params())
    for a, b in zip(maps, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(maps[0][0]), np.eye(n)[4 % n], atol=0.02)  # HC Eq. 14: b_pre = e_{k mod n}


def test_training_step_with_nnx_jit_reduces_the_loss(rng):
    n, C = 4, 8
    model = nnx.Sequential(ExpandStreams(n), MHC(Lin(C, nnx.Rngs(0)), n=n, dim=C, rngs=nnx.Rngs(1)),
                           MHC(Lin(C, nnx.Rngs(2)), n=n, dim=C, rngs=nnx.Rngs(3)),
                           CollapseStreams(n, C, mode="head", rngs=nnx.Rngs(4)))
    h = jnp.asarray(rng.standard_normal((16, C)), jnp.float32)
    target = jnp.roll(h, 1, axis=-1)

    @nnx.jit
    def step(model):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(h) - target) ** 2))(model)
        nnx.update(model, jax.tree.map(lambda p, g: p - 0.1 * g, nnx.state(model, nnx.Param),
                                       nnx.state(grads, nnx.Param)))
        return loss

    losses = [float(step(model)) for _ in range(5)]
    assert losses[-1] < losses[0] and all(np.isfinite(losses))


def test_head_collapse_and_deepseek_loader(rng):
    n, C = 4, 3
    width = n * n + 2 * n
    layer = MHC(Lin(C, nnx.Rngs(0)), n=n, dim=C, preset="deepseek_v4", rngs=nnx.Rngs(1))
    fn, scale, base = (jnp.asarray(a, jnp.float32) for a in
                       (rng.standard_normal((width, n * C)), rng.uniform(0.5, 1, 3), rng.standard_normal(width)))
    layer.load_deepseek(fn, scale, base)
    np.testing.assert_array_equal(np.asarray(layer.phi[...]), np.asarray(fn.T))
    with pytest.raises(ValueError, match="load_deepseek: DeepSeek's comb layout needs res_layout='col_major'"):
        MHC(Lin(C, nnx.Rngs(0)), n=n, dim=C, rngs=nnx.Rngs(1)).load_deepseek(fn, scale, base)
    head = CollapseStreams(n, C, mode="head", preset="deepseek_v4", rngs=nnx.Rngs(2))
    hf, hs, hb = (jnp.asarray(a, jnp.float32) for a in
                  (rng.standard_normal((n, n * C)), rng.uniform(0.5, 1, 1), rng.standard_normal(n)))
    head.load_deepseek(hf, hs, hb)
    x = jnp.asarray(rng.standard_normal((2, n, C)), jnp.float32)
    want = collapse_streams(x, hf.T, hs, hb, mode="head", rms_eps=1e-6, pre_eps=1e-6)
    np.testing.assert_allclose(np.asarray(head(x)), np.asarray(want), rtol=0, atol=1e-6)


def test_pallas_impl_matches_jnp(rng):
    n, C = 4, 8
    x = jnp.asarray(rng.standard_normal((2, n, C)), jnp.float32)
    ref = MHC(Lin(C, nnx.Rngs(0)), n=n, dim=C, rngs=nnx.Rngs(1))
    pallas = MHC(Lin(C, nnx.Rngs(0)), n=n, dim=C, impl="pallas", rngs=nnx.Rngs(1))
    try:
        y = pallas(x)
    except NotImplementedError as e:  # the Pallas kernels are another package's; say why if they are absent
        pytest.skip(str(e))
    np.testing.assert_allclose(np.asarray(y), np.asarray(ref(x)), rtol=0, atol=1e-5)


def test_remat_policy_over_mhc_modules_keeps_only_block_input_and_sublayer_outputs():
    """jax.checkpoint(policy=functional.remat_policy) over a block of MHC modules (nnx.remat takes the same policy):
    the residuals that carry the token axes
    are the block input and one sublayer output per layer (plus the loss's own), not the maps or Sinkhorn states."""
    import contextlib
    import io

    C, n, L = 8, 4, 3
    layers = [MHC(nnx.Linear(C, C, use_bias=False, rngs=nnx.Rngs(k)), n=n, dim=C, rngs=nnx.Rngs(10 + k))
              for k in range(L)]
    x = jnp.ones((3, 5, n, C)) * jnp.arange(C) / C

    def residual_lines(remat):
        def run(x):
            for layer in layers:
                x = layer(x)
            return x

        f = jax.checkpoint(run, policy=functional.remat_policy) if remat else run
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            jax.ad_checkpoint.print_saved_residuals(lambda x: jnp.sum(f(x) ** 2), x)
        return [line for line in out.getvalue().splitlines() if "[3,5," in line]

    kept = residual_lines(True)
    assert sum("named 'mhc_f_out'" in line for line in kept) == L
    assert len(kept) == L + 2, kept  # + the argument x and the loss's f(x)
    assert len(residual_lines(False)) > 5 * L
    nnx_f = nnx.remat(lambda layer, x: layer(x), policy=functional.remat_policy)
    np.testing.assert_allclose(np.asarray(nnx_f(layers[0], x)), np.asarray(layers[0](x)), rtol=0, atol=1e-6)
