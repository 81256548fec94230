"""The torch-triton kernels under issue 9: log-domain precision at large logits (against the 60-digit oracle), empty
inputs, the table's t_max bound, scale-safe RMS, tiny rms_eps, the sublayer output shape, and concurrent callers of the
interpreter. Interpreted on CPU (tiny shapes); on CUDA the same tests run compiled (float64 cases skipped there)."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
K = pytest.importorskip("mhc_backends.torch.kernels")  # before anything imports triton: it sets TRITON_INTERPRET

import mp_oracle as mp  # noqa: E402

import mhc_ref  # noqa: E402
from mhc_spec.table import load  # noqa: E402

SPEC = load()
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_float64 = pytest.mark.skipif(not K.interpret_mode(), reason="float64 kernels are claimed in the interpreter only")


def coeff_args(rng, lead=(2,), n=4, C=3, dtype=torch.float64, res_scale=0.0):
    x = rng.standard_normal(lead + (n, C))
    phi = rng.standard_normal((n * C, n * n + 2 * n)) / np.sqrt(n * C)
    b = rng.standard_normal(n * n + 2 * n)
    b[2 * n:] += res_scale * rng.integers(-1, 2, n * n)
    return [torch.tensor(a, device=DEVICE, dtype=dtype) for a in (x, phi, rng.uniform(0.5, 1.5, 3), b)]


@needs_float64
@pytest.mark.parametrize("preset", ["paper", "deepseek_v4"])
def test_sinkhorn_kernel_matches_60_digits_at_large_logits(preset, rng):
    """float64 kernel, logits 1e3 * {-1, 0, 1} + N(0, 1): values and VJP norm-wise within 1e-13 of the oracle
    (single-word log-domain states: about 2^-53 |L| = 1.1e-13 at most; measured 2.7e-14 with eps = 0, 1e-15 with
    eps > 0)."""
    opts = SPEC.op_options("sinkhorn", preset)
    L = 1e3 * rng.integers(-1, 2, (2, 4, 4)) + rng.standard_normal((2, 4, 4))
    G = rng.standard_normal((2, 4, 4))
    lt = torch.tensor(L, requires_grad=True)
    h = K.sinkhorn(lt, **opts)
    (h * torch.tensor(G)).sum().backward()
    H_star = mp.batched(mp.sinkhorn_mp, L, t_max=opts["t_max"], eps=opts["eps"])
    d_star = mp.batched(mp.sinkhorn_vjp_mp, L, G, t_max=opts["t_max"], eps=opts["eps"])
    norm = lambda a: np.linalg.norm(a, axis=(-2, -1))  # noqa: E731
    assert (norm(h.detach().numpy() - H_star) / norm(H_star)).max() <= 1e-13
    assert (norm(lt.grad.numpy() - d_star) / (norm(d_star) + norm(G * H_star))).max() <= 1e-13


@needs_float64
@pytest.mark.parametrize("preset", ["paper", "deepseek_v4"])
def test_coeffs_gradients_at_large_logits_match_the_reference(preset, rng):
    """Residual logits ~1e3: the fused kernel's float64 gradients agree with the reference (itself within 1e-13
    of 60 digits, tests/test_ref_precision.py) to 1e-12 relative, norm-wise per input."""
    opts = SPEC.op_options("mhc_coeffs", preset)
    args = coeff_args(rng, res_scale=1e3)
    for a in args:
        a.requires_grad_(True)
    maps = K.mhc_coeffs(*args, **opts)
    cots = [rng.standard_normal(tuple(m.shape)) for m in maps]
    sum((m * torch.tensor(c)).sum() for m, c in zip(maps, cots)).backward()
    want = mhc_ref.mhc_coeffs_vjp(*(a.detach().numpy() for a in args), *cots, **opts)
    for name, a in zip(("x", "phi", "alpha", "b"), args):
        err = np.linalg.norm(a.grad.numpy() - want[name]) / np.linalg.norm(want[name])
        assert err <= 1e-12, f"d{name}: {err:.3g}"


def test_zero_tokens_give_empty_results(rng):
    x, phi, alpha, b = coeff_args(rng, lead=(0, 3), dtype=torch.float32)
    x.requires_grad_(True)
    phi.requires_grad_(True)
    h_pre, h_post, h_res = K.mhc_coeffs(x, phi, alpha, b)
    assert h_pre.shape == (0, 3, 4) and h_res.shape == (0, 3, 4, 4)
    (h_pre.sum() + h_res.sum()).backward()
    assert x.grad.shape == x.shape and phi.grad.shape == phi.shape and not phi.grad.any()
    assert K.sinkhorn(torch.zeros(0, 4, 4, device=DEVICE)).shape == (0, 4, 4)
    assert K.mhc_pre(x.detach(), h_pre.detach()).shape == (0, 3, 3)
    y = K.mhc_post_res(x.detach(), torch.zeros(0, 3, 3, device=DEVICE), h_post.detach(), h_res.detach())
    assert y.shape == (0, 3, 4, 3)
    w = torch.eye(3, device=DEVICE)
    assert K.mhc_layer(x.detach(), phi.detach(), alpha, b, w).shape == x.shape


def test_zero_width_and_t_max_bound_are_named(rng):
    x, phi, alpha, b = coeff_args(rng, dtype=torch.float32)
    with pytest.raises(ValueError, match="x must be .* with n >= 1 and C >= 1"):
        K.mhc_coeffs(x[..., :0], phi[:0], alpha, b)
    with pytest.raises(ValueError, match=f"t_max must be <= {SPEC.options['t_max'].max}"):
        K.mhc_coeffs(x, phi, alpha, b, t_max=10**9)
    with pytest.raises(ValueError, match="sinkhorn: t_max must be <="):
        K.sinkhorn(torch.zeros(4, 4, device=DEVICE), t_max=10**9)
    for name in ("sinkhorn_eps", "pre_eps", "post_scale", "rms_eps"):
        with pytest.raises(ValueError, match=f"mhc_coeffs: {name} must be finite"):
            K.mhc_coeffs(x, phi, alpha, b, **{name: math.inf})


@pytest.mark.parametrize("dtype, k", [(torch.float32, 66), (torch.bfloat16, 100), (torch.float32, -80)])
def test_maps_are_scale_invariant_at_extreme_magnitudes(dtype, k, rng):
    """rms_eps = 0: maps of 2^k x equal those of x (the kernel scales by max|x| before squaring; x^2 would overflow
    at 1e19 in float32), to float32 rounding."""
    x, phi, alpha, b = coeff_args(rng, dtype=torch.float32)
    x = x.to(dtype)
    got = K.mhc_coeffs(x * 2.0**k, phi, alpha, b, rms_eps=0.0, maps_dtype=torch.float32)
    want = K.mhc_coeffs(x, phi, alpha, b, rms_eps=0.0, maps_dtype=torch.float32)
    for g, w in zip(got, want):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, rtol=0, atol=1e-6)


def test_tiny_rms_eps_in_float32_matches_eager(rng):
    """rms_eps = 1e-50 (0 in float32, sqrt 1e-25 is not): an all-zero token gives the bias maps, as eager torch."""
    import mhc_backends.torch as eager

    x, phi, alpha, b = coeff_args(rng, dtype=torch.float32)
    x[0] = 0
    got = K.mhc_coeffs(x, phi, alpha, b, rms_eps=1e-50)
    want = eager.mhc_coeffs(x, phi, alpha, b, rms_eps=1e-50)
    for g, w in zip(got, want):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="all zero"):
        K.mhc_coeffs(x, phi, alpha, b, rms_eps=1e-100)


def test_layer_refuses_a_wrong_shaped_sublayer_output(rng):
    x, phi, alpha, b = coeff_args(rng, dtype=torch.float32)
    with pytest.raises(ValueError, match="mhc_layer: the sublayer must return the shape of its input"):
        K.mhc_layer(x, phi, alpha, b, lambda u: torch.ones(1, 3, device=DEVICE))


def test_concurrent_callers_get_the_single_threaded_results(rng):
    """4 threads call forward and backward at once; each result equals the sequential one (before the launch lock,
    3 of 4 interpreted callers died)."""
    cases = [coeff_args(np.random.default_rng(i), dtype=torch.float32) for i in range(4)]

    def run(args):
        args = [a.clone().requires_grad_(True) for a in args]
        maps = K.mhc_coeffs(*args)
        sum(m.sum() * (i + 1) for i, m in enumerate(maps)).backward()
        return [m.detach() for m in maps] + [a.grad for a in args]

    want = [run(c) for c in cases]
    got, errors = [None] * 4, []

    def worker(i):
        try:
            got[i] = run(cases[i])
        except Exception as e:  # noqa: BLE001 - reported below with the thread's index
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            assert torch.equal(a, b)
