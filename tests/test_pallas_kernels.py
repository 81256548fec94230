"""The jax-pallas kernels against the float64 reference `mhc_ref`, forward and backward, and against themselves.

On CPU the kernels run in Pallas' interpreter (interpret=True: the kernel bodies execute as XLA ops), so shapes are
small; every distinct shape and option set compiles once (~1-3 s), so the cases are few and chosen to cover: n not a
power of two, tokens not a multiple of the block (and more than one block), C not a multiple of the channel block,
both presets (row_major / col_major, eps = 0 / > 0). Oracles: mhc_ref in float64 (float64 kernels must match it to
rounding; 16-bit within the spec's per-class ceilings), the VJP of the jnp ops (backward="reference"), bitwise
reruns, and the GPU lowering of pallas_call (Triton IR, built on CPU without a GPU).
"""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import mhc_ref  # noqa: E402
from mhc_backends.jax import kernels as K  # noqa: E402
from mhc_spec.table import load  # noqa: E402

cfg = importlib.import_module("mhc_backends.jax.kernels.config")
kcoeffs = importlib.import_module("mhc_backends.jax.kernels.mhc_coeffs")

SPEC = load()
BACKWARDS = ("pallas", "reference")
DT = {"float64": jnp.float64, "float32": jnp.float32, "bfloat16": jnp.bfloat16}


def x64():
    return jax.enable_x64(True)


def up(a) -> np.ndarray:
    """The exact values of an array, as float64 NumPy (converted by NumPy: no x64 switch needed)."""
    return np.asarray(a).astype(np.float64)


def allowed(op: str, dtype: str, kind: str, want) -> float:
    """float64: 1e-13 of the output scale (rounding only: the kernels do the reference's math in another order);
    other dtypes: the spec's ceiling of the op's tolerance class."""
    scale = max(1.0, float(np.max(np.abs(want))) if np.size(want) else 0.0)
    return (1e-13 if dtype == "float64" else SPEC.tolerance_ceiling(op, dtype, kind)) * scale


def check(op, dtype, kind, got, want, label=""):
    err = float(np.max(np.abs(up(got) - want))) if np.size(want) else 0.0
    tol = allowed(op, dtype, kind, want)
    assert err <= tol, f"{op} {kind} {label}: max_err={err:.3g} > allowed {tol:.3g} [{dtype}]"


def grads(fn, args, cots, backward):
    """Outputs of fn(*args, backward=...) and d sum(out * cot) / d args (every argument)."""
    def loss(*a):
        outs = fn(*a, backward=backward)
        outs = outs if isinstance(outs, tuple) else (outs,)
        return sum(jnp.sum(o.astype(jnp.float64 if o.dtype == jnp.float64 else jnp.float32) * c)
                   for o, c in zip(outs, cots))

    return fn(*args), jax.grad(loss, argnums=tuple(range(len(args))))(*args)


def as_jnp(dtype, *arrays):
    return [jnp.asarray(a, DT[dtype]) for a in arrays]


def coeff_inputs(rng, lead, n, C, scale=1.0):
    width = n * n + 2 * n
    return (rng.standard_normal((*lead, n, C)), rng.standard_normal((n * C, width)) / np.sqrt(n * C),
            rng.uniform(0.5, 2.0, 3), scale * rng.standard_normal(width))


# ---------------------------------------------------------------------------------------------------------------
# Each kernel in float64 against mhc_ref, both backwards
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,t_max,eps", [(3, 20, 0.0), (4, 5, 1e-6), (1, 1, 1e-6)])
def test_sinkhorn_float64(rng, n, t_max, eps):
    L, g = rng.standard_normal((7, n, n)) * 3, rng.standard_normal((7, n, n))
    want = mhc_ref.sinkhorn(L, t_max, eps)
    want_d = mhc_ref.sinkhorn_vjp(L, g, t_max, eps)["logits"]
    fn = lambda a, **k: K.sinkhorn(a, t_max=t_max, eps=eps, **k)  # noqa: E731
    with x64():
        for bw in BACKWARDS:
            h, (dl,) = grads(fn, as_jnp("float64", L), [jnp.asarray(g)], bw)
            check("sinkhorn", "float64", "forward", h, want)
            check("sinkhorn", "float64", "gradient", dl, want_d, bw)


@pytest.mark.parametrize("preset,lead,n,C", [("paper", (2, 5), 3, 5), ("deepseek_v4", (70,), 4, 6)])
def test_mhc_coeffs_float64(rng, preset, lead, n, C):
    """n = 3 (padded tile), 10 tokens (one partial block) and 70 tokens (two blocks, the second partial)."""
    o = SPEC.op_options("mhc_coeffs", preset)
    x, phi, alpha, b = coeff_inputs(rng, lead, n, C)
    gs = (rng.standard_normal((*lead, n)), rng.standard_normal((*lead, n)), rng.standard_normal((*lead, n, n)))
    want = mhc_ref.mhc_coeffs(x, phi, alpha, b, **o)
    want_d = mhc_ref.mhc_coeffs_vjp(x, phi, alpha, b, *gs, **o)
    fn = lambda *a, **k: K.mhc_coeffs(*a, **o, **k)  # noqa: E731
    with x64():
        for bw in BACKWARDS:
            outs, ds = grads(fn, as_jnp("float64", x, phi, alpha, b), [jnp.asarray(g) for g in gs], bw)
            for got, w in zip(outs, want):
                check("mhc_coeffs", "float64", "forward", got, w, preset)
            for name, d in zip(("x", "phi", "alpha", "b"), ds):
                check("mhc_coeffs", "float64", "gradient", d, want_d[name], f"{preset} d{name} {bw}")


def test_mhc_pre_and_post_res_float64(rng):
    """n = 3, 10 tokens, C = 37 (not a multiple of the channel block)."""
    lead, n, C = (2, 5), 3, 37
    x, f = rng.standard_normal((*lead, n, C)), rng.standard_normal((*lead, C))
    hp, hq, hr = (rng.standard_normal((*lead, n)), rng.standard_normal((*lead, n)),
                  rng.standard_normal((*lead, n, n)))
    gy, gz = rng.standard_normal((*lead, C)), rng.standard_normal((*lead, n, C))
    want_pre, want_pre_d = mhc_ref.mhc_pre(x, hp), mhc_ref.mhc_pre_vjp(x, hp, gy)
    want_post, want_post_d = mhc_ref.mhc_post_res(x, f, hq, hr), mhc_ref.mhc_post_res_vjp(x, f, hq, hr, gz)
    with x64():
        for bw in BACKWARDS:
            y, ds = grads(K.mhc_pre, as_jnp("float64", x, hp), [jnp.asarray(gy)], bw)
            check("mhc_pre", "float64", "forward", y, want_pre)
            for name, d in zip(("x", "h_pre"), ds):
                check("mhc_pre", "float64", "gradient", d, want_pre_d[name], f"d{name} {bw}")
            z, ds = grads(K.mhc_post_res, as_jnp("float64", x, f, hq, hr), [jnp.asarray(gz)], bw)
            check("mhc_post_res", "float64", "forward", z, want_post)
            for name, d in zip(("x", "f_out", "h_post", "h_res"), ds):
                check("mhc_post_res", "float64", "gradient", d, want_post_d[name], f"d{name} {bw}")


def test_mhc_layer_float64_matches_reference_and_finite_differences(rng):
    """The composed layer (probe sublayer) against mhc_ref.mhc_layer, and its gradient against central finite
    differences of the kernel forward itself along a random direction."""
    o = SPEC.op_options("mhc_layer", "deepseek_v4")
    lead, n, C = (5,), 3, 4
    x, phi, alpha, b = coeff_inputs(rng, lead, n, C)
    w = rng.standard_normal((C, C)) / np.sqrt(C)
    with x64():
        got = K.mhc_layer(*as_jnp("float64", x, phi, alpha, b, w), **o)
    check("mhc_layer", "float64", "forward", got, mhc_ref.mhc_layer(x, phi, alpha, b, w, **o))
    g, v = rng.standard_normal((*lead, n, C)), rng.standard_normal((*lead, n, C))
    with x64():
        loss = lambda xx: jnp.sum(K.mhc_layer(xx, *as_jnp("float64", phi, alpha, b, w), **o) * g)  # noqa: E731
        d = jax.grad(loss)(jnp.asarray(x))
        h = 1e-6
        fd = float((loss(jnp.asarray(x + h * v)) - loss(jnp.asarray(x - h * v))) / (2 * h))
        dv = float(jnp.sum(d * jnp.asarray(v)))
    assert abs(dv - fd) <= 1e-7 * max(1.0, abs(fd))  # central differences: O(h^2) truncation + O(ulp / h) rounding


def test_mhc_stack_float64(rng):
    """Three layers of the kernel layer against mhc_ref.mhc_stack, values and the gradient of every input."""
    o = SPEC.op_options("mhc_stack", "paper")
    L, n, C = 3, 3, 4
    x = rng.standard_normal((5, n, C))
    phi, alpha = rng.standard_normal((L, n * C, n * n + 2 * n)) / np.sqrt(n * C), rng.uniform(0.5, 2, (L, 3))
    b, w = rng.standard_normal((L, n * n + 2 * n)), rng.standard_normal((L, C, C)) / np.sqrt(C)
    g = rng.standard_normal((5, n, C))
    want_d = mhc_ref.mhc_stack_vjp(x, phi, alpha, b, w, g, **o)
    with x64():
        y, ds = grads(lambda *a, **k: K.mhc_stack(*a, **o, **k), as_jnp("float64", x, phi, alpha, b, w),
                      [jnp.asarray(g)], "pallas")
        check("mhc_stack", "float64", "forward", y, mhc_ref.mhc_stack(x, phi, alpha, b, w, **o))
        for name, d in zip(("x", "phi", "alpha", "b", "w_sub"), ds):
            check("mhc_stack", "float64", "gradient", d, want_d[name], f"d{name}")


# ---------------------------------------------------------------------------------------------------------------
# 16-bit and float32 within the spec's ceilings
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_low_precision_within_spec_ceilings(rng, dtype):
    o = SPEC.op_options("mhc_coeffs", "deepseek_v4")
    lead, n, C = (9,), 4, 8
    x, phi, alpha, b = coeff_inputs(rng, lead, n, C)
    xs = as_jnp(dtype, x, phi, alpha, b)
    x, phi, alpha, b = (up(a) for a in xs)  # the reference sees exactly the rounded inputs
    gs = (rng.standard_normal((*lead, n)), rng.standard_normal((*lead, n)), rng.standard_normal((*lead, n, n)))
    outs, ds = grads(lambda *a, **k: K.mhc_coeffs(*a, **o, **k), xs, [jnp.asarray(g, jnp.float32) for g in gs],
                     "pallas")
    assert all(a.dtype == DT[dtype] for a in (*outs, *ds))
    for got, w in zip(outs, mhc_ref.mhc_coeffs(x, phi, alpha, b, **o)):
        check("mhc_coeffs", dtype, "forward", got, w)
    want_d = mhc_ref.mhc_coeffs_vjp(x, phi, alpha, b, *gs, **o)
    for name, d in zip(("x", "phi", "alpha", "b"), ds):
        check("mhc_coeffs", dtype, "gradient", d, want_d[name], f"d{name}")
    hr = rng.dirichlet(np.ones(n), size=lead + (n,))
    f = rng.standard_normal((*lead, C))
    xj, fj, hj, hrj = as_jnp(dtype, x, f, rng.uniform(0, 2, (*lead, n)), hr)
    check("mhc_post_res", dtype, "forward", K.mhc_post_res(xj, fj, hj, hrj),
          mhc_ref.mhc_post_res(*(up(a) for a in (xj, fj, hj, hrj))))
    check("mhc_pre", dtype, "forward", K.mhc_pre(xj, hj), mhc_ref.mhc_pre(up(xj), up(hj)))


# ---------------------------------------------------------------------------------------------------------------
# Large logits, determinism, block-size invariance
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_logits_1e4_finite_values_and_gradients(rng, dtype):
    n = 4
    L = 1e4 * rng.integers(-1, 2, (6, n, n)) + rng.standard_normal((6, n, n))
    g = rng.standard_normal((6, n, n))
    for eps in (0.0, 1e-6):
        h, (dl,) = grads(lambda a, e=eps, **k: K.sinkhorn(a, eps=e, **k), as_jnp(dtype, L), [jnp.asarray(g)], "pallas")
        assert bool(jnp.all(jnp.isfinite(h))) and bool(jnp.all(jnp.isfinite(dl)))
        check("sinkhorn", dtype, "forward", h, mhc_ref.sinkhorn(up(as_jnp(dtype, L)[0]), 20, eps))
    o = SPEC.op_options("mhc_coeffs", "deepseek_v4")
    x, phi, alpha, b = coeff_inputs(rng, (5,), n, 4)
    b[2 * n:] = 1e4 * rng.integers(-1, 2, n * n)
    outs, ds = grads(lambda *a, **k: K.mhc_coeffs(*a, **o, **k), as_jnp(dtype, x, phi, alpha, b),
                     [jnp.ones((5, n)), jnp.ones((5, n)), jnp.asarray(rng.standard_normal((5, n, n)))], "pallas")
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in (*outs, *ds))


def test_deterministic_and_block_size_invariant(rng, monkeypatch):
    """Two runs are bitwise equal (no atomics; d phi / d alpha / d b reduce in a fixed order). A different block_t
    (tokens per program) does the same arithmetic per token; only the compiled code of the other tile shape may
    round a dot differently, so the results agree to a few float32 ulps."""
    o = SPEC.op_options("mhc_coeffs", "paper")
    x, phi, alpha, b = as_jnp("float32", *coeff_inputs(rng, (40,), 3, 8))
    gs = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in ((40, 3), (40, 3), (40, 3, 3))]

    def run():
        return grads(lambda *a, **k: K.mhc_coeffs(*a, **o, **k), (x, phi, alpha, b), gs, "pallas")

    first, second = run(), run()
    for a, c in zip(jax.tree.leaves(first), jax.tree.leaves(second)):
        assert np.array_equal(np.asarray(a), np.asarray(c))
    choose = cfg.choose
    monkeypatch.setattr(kcoeffs.cfg, "choose", lambda *a, **k: dataclasses.replace(choose(*a, **k), block_t=16))
    small = run()
    for a, c in zip(jax.tree.leaves(first), jax.tree.leaves(small)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=4e-7, atol=4e-7 * float(np.abs(a).max()))


# ---------------------------------------------------------------------------------------------------------------
# jax transformations, the switches, and the GPU lowering
# ---------------------------------------------------------------------------------------------------------------
def test_jit_and_grad_of_the_layer(rng):
    o = SPEC.op_options("mhc_layer", "paper")
    x, phi, alpha, b = as_jnp("float32", *coeff_inputs(rng, (2, 3), 4, 8))
    w = jnp.asarray(rng.standard_normal((8, 8)) / 3, jnp.float32)

    def loss(x, phi, alpha, b):
        return jnp.sum(K.mhc_layer(x, phi, alpha, b, w, **o) ** 2)

    eager = jax.grad(loss, argnums=(0, 1, 2, 3))(x, phi, alpha, b)
    jitted = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(x, phi, alpha, b)
    for a, c in zip(eager, jitted):
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda *a: K.mhc_layer(*a, w, **o))(x, phi, alpha, b)),
                               np.asarray(K.mhc_layer(x, phi, alpha, b, w, **o)), rtol=1e-6, atol=1e-6)


def test_switches_are_checked():
    L = jnp.zeros((2, 2))
    with pytest.raises(ValueError, match="backward must be one of"):
        K.sinkhorn(L, backward="autodiff")
    with pytest.raises(TypeError, match="interpret must be None or a bool"):
        K.sinkhorn(L, interpret="yes")


@pytest.mark.parametrize("n,dtype", [(3, "bfloat16"), (4, "float32")])
def test_kernels_lower_to_triton_for_cuda(n, dtype):
    """Forward and backward of every kernel lower through pallas_call's Triton path for a CUDA target (built on
    this CPU machine: it checks power-of-two tiles and supported primitives; PTX compilation needs a GPU)."""
    d, C, T = DT[dtype], 256, 64
    shapes = dict(x=(T, n, C), phi=(n * C, n * n + 2 * n), alpha=(3,), b=(n * n + 2 * n,), f=(T, C), h=(T, n),
                  hr=(T, n, n))
    s = {k: jax.ShapeDtypeStruct(v, d) for k, v in shapes.items()}
    sq = lambda out: sum(jnp.sum(o.astype(jnp.float32) ** 2) for o in jax.tree.leaves(out))  # noqa: E731
    cases = {
        "sinkhorn": (lambda L: K.sinkhorn(L, interpret=False), ("hr",)),
        "mhc_coeffs": (lambda *a: K.mhc_coeffs(*a, interpret=False), ("x", "phi", "alpha", "b")),
        "mhc_pre": (lambda *a: K.mhc_pre(*a, interpret=False), ("x", "h")),
        "mhc_post_res": (lambda *a: K.mhc_post_res(*a, interpret=False), ("x", "f", "h", "hr")),
    }
    for name, (fn, args) in cases.items():
        g = jax.grad(lambda *a, fn=fn: sq(fn(*a)), argnums=tuple(range(len(args))))
        text = jax.jit(g).trace(*(s[a] for a in args)).lower(lowering_platforms=("cuda",)).as_text()
        assert text.count("triton") >= 2, f"{name}: no Triton kernels in the CUDA lowering"
