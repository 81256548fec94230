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
from mhc_backends.torch.mhc_coeffs import Projection, mhc_coeffs_unchecked  # noqa: E402
from mhc_backends.torch.mhc_layer import PreProjection, maps_and_pre  # noqa: E402
from mhc_backends.torch.mhc_post_res import mhc_post_res_unchecked  # noqa: E402
from mhc_backends.torch.mhc_pre import mhc_pre_unchecked  # noqa: E402
from mhc_backends.torch.sinkhorn import sinkhorn_tokens_last, to_tokens_last  # noqa: E402

coeffs_module = sys.modules["mhc_backends.torch.mhc_coeffs"]  # the package exports a function of that name
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1.0, 1e-6, 1e6])
def test_unscaled_projection_is_bitwise_the_scaled_one(dtype, scale, monkeypatch):
    """Where t's range allows, the projection reads x_bar itself instead of y = x_bar / t: the same bits forward
    and backward (scaling by a power of two is exact), checked against the scaled path forced by monkeypatch."""
    x = (f64(64, 4, 8, seed=11) * scale).to(dtype)
    x[3] *= 1e3  # rows of different scales
    w, g = f64(32, 24, seed=12).to(dtype), f64(64, 24, seed=13).to(dtype)

    def run():
        xr, wr = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        m = Projection.apply(xr, wr, 1e-20)
        return (m, *torch.autograd.grad(m, (xr, wr), g))

    assert coeffs_module.unscaled_ok(_checks.rms_scale(x.flatten(-2), 1e-20))
    fast = run()
    monkeypatch.setattr(coeffs_module, "unscaled_ok", lambda t: False)
    for a, b in zip(fast, run()):
        assert torch.equal(a, b)


def test_projection_forward_reads_x_without_a_copy():
    x, w = torch.randn(256, 4, 64), torch.randn(4 * 64, 24)
    out = 256 * 24 * 4
    assert peak_bytes(lambda: Projection.apply(x, w, 1e-20)) <= 4 * out + 64 * 1024


def test_pre_projection_backward_matches_finite_differences():
    N, n, C = 3, 2, 4
    k = n * n + 2 * n
    x, w = f64(N, n, C, seed=14).requires_grad_(True), f64(n * C, k, seed=15).requires_grad_(True)
    alpha, b = f64(3, seed=16).requires_grad_(True), f64(k, seed=17).requires_grad_(True)

    def f(x, w, alpha, b):
        z_post, z_res, u, x_mix = PreProjection.apply(x, w, alpha, b, 1e-20, 0.1)
        return z_post, z_res, u, x_mix * 1.0

    assert torch.autograd.gradcheck(f, (x, w, alpha, b))


def test_pre_projection_never_writes_to_its_cotangents():
    """torch.distributed.pipelining's zero-bubble schedules keep the cotangents a node received and replay its
    backward for the weights: the replay must see them unchanged and give the same gradients."""
    N, n, C = 5, 4, 3
    k = n * n + 2 * n
    args = [f64(N, n, C, seed=24), f64(n * C, k, seed=25), f64(3, seed=26), f64(k, seed=27)]
    args = [a.requires_grad_(True) for a in args]
    outs = PreProjection.apply(*args, 1e-20, 0.0)
    cots = [f64(*o.shape, seed=28 + i) for i, o in enumerate(outs)]
    kept = [c.clone() for c in cots]
    first = torch.autograd.grad(outs, args, cots, retain_graph=True)
    assert all(torch.equal(c, c0) for c, c0 in zip(cots, kept))
    second = torch.autograd.grad(outs, args, cots)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_layer_trains_under_a_zero_bubble_weight_pass():
    """The B/W split of torch.distributed.pipelining (stage_backward_input, then stage_backward_weight) on two eager
    layers gives the gradients of one plain backward."""
    from torch.distributed.pipelining._backward import stage_backward_input, stage_backward_weight

    from mhc_backends.torch.mhc_layer import mhc_layer_unchecked

    n, C = 4, 6
    k = n * n + 2 * n
    opts = dict(t_max=20, sinkhorn_eps=0.0, pre_eps=0.0, post_scale=2.0, rms_eps=1e-20, res_layout="row_major")
    params = [[f64(n * C, k, seed=30 + 4 * i) * 0.2, f64(3, seed=31 + 4 * i), f64(k, seed=32 + 4 * i),
               f64(C, C, seed=33 + 4 * i)] for i in range(2)]
    x0, g = f64(2, 3, n, C, seed=40), f64(2, 3, n, C, seed=41)
    grads = []
    for split in (False, True):
        ps = [[torch.nn.Parameter(p.clone()) for p in layer] for layer in params]
        x = x0.clone().requires_grad_(True)
        y = x
        for layer in ps:
            y = mhc_layer_unchecked(y, *layer, **opts)
        y = y.clone()  # a stage output is not a view (the pipeline's stages clone theirs)
        flat = [p for layer in ps for p in layer]
        if split:
            (dx,), groups = stage_backward_input([y], [g], [x], iter(flat))
            stage_backward_weight(iter(flat), groups)
            grads.append([dx] + [p.grad for p in flat])
        else:
            grads.append(list(torch.autograd.grad(y, [x] + flat, g)))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("res_layout", ["row_major", "col_major"])
def test_layer_node_matches_the_separate_ops(res_layout):
    """maps_and_pre (one node for every read of x) against mhc_coeffs + mhc_pre + mhc_post_res, float64."""
    N, n, C = 6, 4, 5
    opts = dict(t_max=20, sinkhorn_eps=1e-6, pre_eps=0.05, post_scale=2.0, rms_eps=1e-20, res_layout=res_layout)
    k = n * n + 2 * n
    leaves = [f64(N, n, C, seed=18), f64(n * C, k, seed=19) * 0.3, f64(3, seed=20), f64(k, seed=21)]
    w_sub, g = f64(C, C, seed=22), f64(N, n, C, seed=23)

    def fused(x, phi, alpha, b):
        u, h_post, h_res, x_mix = maps_and_pre(x, phi, alpha, b, **opts)
        return mhc_post_res_unchecked(x_mix, torch.tanh(u @ w_sub), h_post, h_res, out_dtype=x.dtype)

    def separate(x, phi, alpha, b):
        h_pre, h_post, h_res = mhc_coeffs_unchecked(x, phi, alpha, b, **opts)
        return mhc_post_res_unchecked(x, torch.tanh(mhc_pre_unchecked(x, h_pre) @ w_sub), h_post, h_res)

    results = []
    for fn in (fused, separate):
        args = [t.clone().requires_grad_(True) for t in leaves]
        y = fn(*args)
        results.append((y, *torch.autograd.grad(y, args, g)))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


def test_layer_backward_keeps_one_x_gradient_buffer():
    """The mixing's x-gradient is the buffer the projection and H_pre terms are added into: a layer step's peak is
    the output, one x-gradient and the sublayer's (..., C) tensors, not three x-gradients."""
    from mhc_backends.torch import MHC

    N, n, C = 512, 4, 64
    layer = MHC(torch.nn.Identity(), n=n, dim=C)
    x, g = torch.randn(N, n, C).requires_grad_(True), torch.randn(N, n, C)
    params = list(layer.parameters())
    step = lambda: torch.autograd.grad(layer(x), [x, *params], g)  # noqa: E731
    step()
    small = 8 * N * C * 4 + 256 * 1024  # (N, C) tensors (u, f, du, df, ...) and the maps
    assert peak_bytes(step) <= 2 * x.nbytes + small
