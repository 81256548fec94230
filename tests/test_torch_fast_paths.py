"""The eager torch ops' fast paths (issue 11): the hand-written backwards against finite differences, the
tokens-last Sinkhorn against the float64 reference, the one-pass finiteness scan against torch.isfinite, where the
scan runs, and the temporaries each op allocates against the bytes-moved model (allocator events, not timings)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import mhc_ref  # noqa: E402
from mhc_backends.torch import _checks, set_check_finite  # noqa: E402
from mhc_backends.torch.mhc_coeffs import Projection  # noqa: E402
from mhc_backends.torch.mhc_post_res import mhc_post_res_unchecked  # noqa: E402
from mhc_backends.torch.sinkhorn import sinkhorn_tokens_last, to_tokens_last  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.workloads import peak_bytes  # noqa: E402


def f64(*shape, seed=0):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_post_res_backward_matches_finite_differences():
    N, n, C = 3, 4, 5
    args = [f64(N, n, C, seed=1), f64(N, C, seed=2), f64(N, n, seed=3), f64(N, n, n, seed=4)]
    args = [a.requires_grad_(True) for a in args]
    assert torch.autograd.gradcheck(mhc_post_res_unchecked, args)
    assert torch.autograd.gradgradcheck(mhc_post_res_unchecked, args)


@pytest.mark.parametrize("scale", [1.0, 1e20])
def test_projection_backward_matches_finite_differences(scale):
    """Including |x| = 1e20, where x^2 and 1/r^2 leave float32's range (the backward builds dx in the scaled copy)."""
    x = (f64(3, 2, 4, seed=5) * scale).requires_grad_(True)  # (tokens, n, C)
    w = f64(8, 6, seed=6).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: Projection.apply(a / scale, b, 1e-20), (x, w))
    x32, w32 = x.detach().float().requires_grad_(True), w.detach().float().requires_grad_(True)
    g = f64(3, 6, seed=7)
    got = torch.autograd.grad(Projection.apply(x32, w32, 1e-20), (x32, w32), g.float())
    want = torch.autograd.grad(Projection.apply(x, w, 1e-20), (x, w), g)
    for u, v in zip(got, want):
        assert torch.isfinite(u).all()
        torch.testing.assert_close(u.double(), v, rtol=1e-4, atol=1e-6 * float(v.abs().max()))


@pytest.mark.parametrize("eps", [0.0, 1e-6])
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_tokens_last_sinkhorn_matches_reference(eps, offset):
    L = f64(7, 4, 4, seed=8) * 3 + offset
    v = sinkhorn_tokens_last(to_tokens_last(L), 20, eps)  # (n, n, N)
    got = torch.exp(v).permute(2, 0, 1).numpy()
    want = mhc_ref.sinkhorn(L.numpy(), 20, eps)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-13)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_finite_flag_agrees_with_isfinite(dtype):
    for bad in (None, float("nan"), float("inf"), -float("inf")):
        t = torch.randn(5, 7).to(dtype)
        if bad is not None:
            t[3, 2] = bad
        assert bool(_checks.finite_flag(t)) == bool(torch.isfinite(t).all())


def test_scan_modes():
    cpu, other = torch.zeros(2), torch.zeros(2, device="meta")  # any non-CPU device follows the CUDA rule
    previous = set_check_finite("auto")
    try:
        assert _checks.check_finite_enabled(cpu, hot=True) and _checks.check_finite_enabled(other)
        assert not _checks.check_finite_enabled(other, hot=True)  # modules: no per-layer host sync off the CPU
        set_check_finite(True)
        assert _checks.check_finite_enabled(other, hot=True)
        set_check_finite(False)
        assert not _checks.check_finite_enabled(cpu)
        with pytest.raises(ValueError, match="mode"):
            set_check_finite("sometimes")
    finally:
        set_check_finite(previous)


def test_post_res_allocates_only_its_output_and_gradients():
    """Forward: the output only. Forward+backward with a second consumer of x: x's gradient is accumulated in
    place (the mixing bmm's dx is a built-in result), so the peak is y + dx + the other consumer's dx + df."""
    N, n, C = 256, 4, 64
    x, f, hp, hr = torch.randn(N, n, C), torch.randn(N, C), torch.rand(N, n), torch.rand(N, n, n)
    assert peak_bytes(lambda: mhc_post_res_unchecked(x, f, hp, hr)) == x.nbytes
    xg, fg = x.clone().requires_grad_(True), f.clone().requires_grad_(True)
    g = torch.randn(N, n, C)

    def step():
        y = mhc_post_res_unchecked(xg, fg, hp, hr) + 2 * xg  # x has a second consumer, as in a layer
        return torch.autograd.grad(y, (xg, fg), g)

    small = hp.nbytes + hr.nbytes + 64 * 1024
    assert peak_bytes(step) <= 4 * x.nbytes + 2 * f.nbytes + small


def test_projection_forward_makes_one_scaled_copy():
    x, w = torch.randn(256, 4, 64), torch.randn(4 * 64, 24)
    out = 256 * 24 * 4
    assert peak_bytes(lambda: Projection.apply(x, w, 1e-20)) <= x.nbytes + 4 * out + 64 * 1024
