"""The eager torch ops against the float64 NumPy reference: values and autograd gradients, both presets, n = 1..16,
the backend contract (`TorchBackend.call` / `.vjp`), Sinkhorn at logits of +-1e4, and 16-bit precision handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mhc_ref
from mhc_backends import load_backend
from mhc_backends.torch import (
    amax_gain,
    collapse_streams,
    expand_streams,
    hc_coeffs,
    mhc_coeffs,
    mhc_layer,
    mhc_post_res,
    mhc_pre,
    sinkhorn,
)

PRESETS = ("paper", "deepseek_v4")


def T(a, dtype=torch.float64, grad=False):
    return torch.tensor(np.asarray(a), dtype=dtype).requires_grad_(grad)


def N(t):
    return t.detach().double().numpy()


def coeff_inputs(rng, lead, n, C, res_scale=1.0):
    x = rng.standard_normal(lead + (n, C))
    width = n * n + 2 * n
    phi = 0.3 * rng.standard_normal((n * C, width))
    return x, phi, rng.uniform(0.2, 2.0, 3), res_scale * rng.standard_normal(width)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 8, 16])
def test_mhc_coeffs_matches_reference_with_gradients(spec, rng, preset, n):
    opts = spec.op_options("mhc_coeffs", preset)
    x, phi, alpha, b = coeff_inputs(rng, (2, 3), n, 5)
    ref = mhc_ref.mhc_coeffs(x, phi, alpha, b, **opts)
    ins = [T(a, grad=True) for a in (x, phi, alpha, b)]
    out = mhc_coeffs(*ins, **opts)
    for o, r in zip(out, ref):
        np.testing.assert_allclose(N(o), r, rtol=0, atol=1e-12)
    gs = [rng.standard_normal(r.shape) for r in ref]
    grads = torch.autograd.grad(out, ins, [T(g) for g in gs])
    want = mhc_ref.mhc_coeffs_vjp(x, phi, alpha, b, *gs, **opts)
    for name, g in zip(("x", "phi", "alpha", "b"), grads):
        np.testing.assert_allclose(N(g), want[name], rtol=1e-9, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("eps", [0.0, 1e-6])
@pytest.mark.parametrize("t_max", [1, 2, 20])
def test_sinkhorn_gradient_is_the_exact_unrolled_one(rng, eps, t_max):
    """Near the identity the unrolled and the implicit gradient differ markedly; the reference is the unrolled one."""
    L = 6.0 * np.eye(5) + 0.5 * rng.standard_normal((3, 5, 5))
    g = rng.standard_normal(L.shape)
    lt = T(L, grad=True)
    out = sinkhorn(lt, t_max=t_max, eps=eps)
    np.testing.assert_allclose(N(out), mhc_ref.sinkhorn(L, t_max, eps), rtol=0, atol=1e-13)
    (dl,) = torch.autograd.grad(out, lt, T(g))
    np.testing.assert_allclose(N(dl), mhc_ref.sinkhorn_vjp(L, g, t_max, eps)["logits"], rtol=1e-9, atol=1e-12)


def test_sinkhorn_known_values():
    out = sinkhorn(T([[1.0, 0.0], [0.0, 1.0]]))
    np.testing.assert_allclose(N(out), [[0.731059, 0.268941], [0.268941, 0.731059]], atol=5e-7)
    assert torch.equal(sinkhorn(torch.zeros(4, 4, dtype=torch.float64)), torch.full((4, 4), 0.25, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("eps", [0.0, 1e-6])
def test_sinkhorn_large_logits_finite(rng, dtype, eps):
    L = T(1e4 * rng.standard_normal((2, 4, 4)), dtype=dtype, grad=True)
    out = sinkhorn(L, t_max=20, eps=eps)
    (g,) = torch.autograd.grad(out, L, torch.ones_like(out) + torch.randn_like(out))
    assert out.dtype == dtype and bool(torch.isfinite(out).all()) and bool(torch.isfinite(g).all())
    np.testing.assert_allclose(N(out).sum(-1), 1.0, atol=1e-2)  # row sums still 1 (bf16 rounding)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mhc_coeffs_large_inputs_finite(rng, dtype):
    x, phi, alpha, b = coeff_inputs(rng, (3,), 4, 8, res_scale=1e4)
    ins = [T(a, dtype=dtype, grad=True) for a in (x, phi, alpha, b)]
    out = mhc_coeffs(*ins)
    grads = torch.autograd.grad(sum(o.float().sum() for o in out) + out[2][..., 0].float().sum(), ins)
    assert all(bool(torch.isfinite(t).all()) for t in (*out, *grads))


@pytest.mark.parametrize("preset", PRESETS)
def test_mhc_layer_matches_reference_with_gradients(spec, rng, preset):
    opts = spec.op_options("mhc_layer", preset)
    x, phi, alpha, b = coeff_inputs(rng, (2, 3), 4, 6)
    w = rng.standard_normal((6, 6)) / 3
    ins = [T(a, grad=True) for a in (x, phi, alpha, b, w)]
    y = mhc_layer(*ins, **opts)
    np.testing.assert_allclose(N(y), mhc_ref.mhc_layer(x, phi, alpha, b, w, **opts), rtol=0, atol=1e-12)
    g = rng.standard_normal(y.shape)
    grads = torch.autograd.grad(y, ins, T(g))
    want = mhc_ref.mhc_layer_vjp(x, phi, alpha, b, w, g, **opts)
    for name, gr in zip(("x", "phi", "alpha", "b", "w_sub"), grads):
        np.testing.assert_allclose(N(gr), want[name], rtol=1e-9, atol=1e-10, err_msg=name)


def test_mhc_layer_with_a_module_sublayer(rng):
    x, phi, alpha, b = coeff_inputs(rng, (4,), 3, 5)
    lin = torch.nn.Linear(5, 5).double()
    y = mhc_layer(T(x), T(phi), T(alpha), T(b), lin)
    h_pre, h_post, h_res = mhc_coeffs(T(x), T(phi), T(alpha), T(b))
    want = mhc_post_res(T(x), lin(mhc_pre(T(x), h_pre)), h_post, h_res)
    torch.testing.assert_close(y, want, rtol=0, atol=1e-14)


def _op_inputs(op, rng, n=3, C=4, lead=(2, 3)):
    """Inputs in table order and the options (paper preset) for every spec op."""
    x = rng.standard_normal(lead + (n, C))
    if op == "sinkhorn":
        return [rng.standard_normal(lead + (n, n))], {"t_max": 20, "eps": 0.0}
    if op in ("mhc_coeffs", "mhc_layer"):
        ins = list(coeff_inputs(rng, lead, n, C))
        return ins + ([rng.standard_normal((C, C)) / 2] if op == "mhc_layer" else []), None
    if op == "mhc_stack":
        layers = [coeff_inputs(rng, lead, n, C) for _ in range(2)]
        return [layers[0][0]] + [np.stack([p[k] for p in layers]) for k in (1, 2, 3)] + \
            [rng.standard_normal((2, C, C)) / 2], None
    if op == "mhc_pre":
        return [x, rng.uniform(0, 1, lead + (n,))], {}
    if op == "mhc_post_res":
        return [x, rng.standard_normal(lead + (C,)), rng.uniform(0, 2, lead + (n,)),
                rng.uniform(0, 1, lead + (n, n))], {}
    if op == "hc_coeffs":
        p = mhc_ref.hc_init(n, C, 1)
        ps = [p[k] + 0.3 * rng.standard_normal(p[k].shape) for k in
              ("theta_pre", "theta_post", "theta_res", "alpha", "b_pre", "b_post", "b_res")]
        return [x] + ps, None
    if op == "expand_streams":
        return [rng.standard_normal(lead + (C,))], {"n": n}
    if op == "collapse_streams":
        return [x, rng.standard_normal((n * C, n)), np.array([0.7]), rng.standard_normal(n)], None
    if op == "amax_gain":
        return [rng.uniform(0, 1, (5,) + lead + (n, n))], {}
    raise AssertionError(op)


@pytest.mark.parametrize("preset", PRESETS)
def test_backend_contract_matches_numpy_backend(spec, rng, preset):
    """Every op through `load_backend('torch')`: values and `vjp` against the `numpy` backend in float64."""
    tb, nb = load_backend("torch"), load_backend("numpy")
    assert tb.claims("sinkhorn", "bfloat16", grad=True)
    for op in spec.ops:
        ins, opts = _op_inputs(op, rng)
        if opts is None:
            opts = spec.op_options(op, preset, **({"mode": "head"} if op == "collapse_streams" else {}))
        t_ins = [tb.from_numpy(a, "float64") for a in ins]
        want, got = nb.call(op, ins, **opts), tb.call(op, t_ins, **opts)
        if isinstance(want, dict):
            keys = sorted(want)
            want, got = [want[k] for k in keys], [got[k] for k in keys]
        want, got = (want, got) if isinstance(want, (list, tuple)) else ([want], [got])
        for w, g in zip(want, got):
            np.testing.assert_allclose(tb.to_numpy(g), w, rtol=0, atol=1e-12, err_msg=op)
        if not spec.op(op).differentiable:
            continue
        cots = [rng.standard_normal(np.shape(w)) for w in want]
        cots[0] = None if len(cots) > 1 else cots[0]  # a None cotangent means zero
        g_want = nb.vjp(op, ins, cots, **opts)
        g_got = tb.vjp(op, t_ins, [None if c is None else tb.from_numpy(c, "float64") for c in cots], **opts)
        assert set(g_got) == set(g_want), op
        for k in g_want:
            np.testing.assert_allclose(tb.to_numpy(g_got[k]), g_want[k], rtol=1e-9, atol=1e-10, err_msg=f"{op} {k}")


def test_from_numpy_round_trip_bfloat16():
    import ml_dtypes

    tb = load_backend("torch")
    a = np.array([1.0, -2.5, 3.140625], dtype=ml_dtypes.bfloat16)
    t = tb.from_numpy(a, "bfloat16")
    assert t.dtype == torch.bfloat16 and tb.to_numpy(t).dtype == a.dtype
    np.testing.assert_array_equal(tb.to_numpy(t), a)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_maps_in_float32(rng, dtype):
    """16-bit x with float32 parameters (the module's mixed precision): the maps are computed in float32, so they
    are as close to float64 as a float32 computation on the rounded x, and the returned dtype is as asked."""
    x, phi, alpha, b = coeff_inputs(rng, (8,), 4, 16)
    x16 = T(x, dtype=dtype)
    ref = mhc_ref.mhc_coeffs(N(x16), phi, alpha, b)  # float64 on the rounded input
    out32 = mhc_coeffs(x16, T(phi, torch.float32), T(alpha, torch.float32), T(b, torch.float32),
                       maps_dtype=torch.float32)
    out16 = mhc_coeffs(x16, T(phi, torch.float32), T(alpha, torch.float32), T(b, torch.float32))
    for o32, o16, r in zip(out32, out16, ref):
        assert o32.dtype == torch.float32 and o16.dtype == dtype
        np.testing.assert_allclose(N(o32), r, rtol=0, atol=2e-5)
    y = mhc_post_res(x16, T(x[..., 0, :], dtype), *out32[1:])
    assert y.dtype == dtype


def test_stream_ops_and_amax_gain(rng):
    h = T(rng.standard_normal((2, 5)))
    x = expand_streams(h, n=3)
    assert x.shape == (2, 3, 5) and x.is_contiguous() and all(torch.equal(x[:, k], h) for k in range(3))
    torch.testing.assert_close(collapse_streams(x), 3 * h, rtol=0, atol=1e-15)
    H = rng.uniform(0, 1, (4, 2, 3, 3))
    got, want = amax_gain(T(H)), mhc_ref.amax_gain(H)
    for k in want:
        np.testing.assert_allclose(N(got[k]), want[k], rtol=1e-13, err_msg=k)


def test_hc_coeffs_zero_theta_gives_bias(rng):
    p = {k: T(v) for k, v in mhc_ref.hc_init(4, 6, 2).items()}
    out = hc_coeffs(T(rng.standard_normal((3, 4, 6))), *(p[k] for k in
                    ("theta_pre", "theta_post", "theta_res", "alpha", "b_pre", "b_post", "b_res")))
    for o, k in zip(out, ("b_pre", "b_post", "b_res")):
        assert torch.equal(o, p[k].expand_as(o))
