"""The nn.Module API: shapes, the mode switch against the NumPy reference stack (mHC, HC baseline, fixed maps, plain
residual), initialisations, mixed precision, state-dict keys, the DeepSeek-V4 loaders (against mhc_ref.deepseek and
against a direct transcription of DeepSeek's hc_pre / hc_post / hc_head formulas) and a torch.compile smoke test."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

import mhc_ref
from mhc_backends.torch import MHC, CollapseStreams, ExpandStreams, MHCStack
from mhc_backends.torch.deepseek import load_deepseek_block, to_deepseek
from mhc_backends.torch.mhc_layer import probe_sublayer

if not torch.cuda.is_available():  # torch.compile below imports triton; keep the torch-triton kernels runnable on CPU
    os.environ.setdefault("TRITON_INTERPRET", "1")

HC_NAMES = ("theta_pre", "theta_post", "theta_res", "alpha", "b_pre", "b_post", "b_res")


class Probe(nn.Module):
    """The spec's probe sublayer F(u) = tanh(rmsnorm(u) @ w_sub), as a module."""

    def __init__(self, w_sub):
        super().__init__()
        self.w_sub = nn.Parameter(torch.as_tensor(w_sub))

    def forward(self, u):
        return probe_sublayer(u, self.w_sub)


def T(a):
    return torch.tensor(np.asarray(a), dtype=torch.float64)


def build(mode, n, C, L, rng, preset="paper", **kw):
    """A torch model and the matching mhc_ref.model.Stack with the same (random, non-trivial) parameters."""
    ws = [rng.standard_normal((C, C)) / np.sqrt(C) for _ in range(L)]
    layers = [MHC(Probe(T(w)), n=n, dim=C, mode=mode, preset=preset, layer_index=k, **kw) for k, w in enumerate(ws)]
    params = []
    for k, layer in enumerate(layers):
        layer.double().reset_parameters()  # initialise in float64 so HC Eq. 14's alpha = 0.01 is exact
        if mode == "mhc":
            p = mhc_ref.mhc_init(n, C, rng=rng)
            p["b"] = p["b"] + 0.5 * rng.standard_normal(p["b"].shape)
            p["alpha"] = rng.uniform(0.3, 1.0, 3)
            p["phi"] = 0.2 * rng.standard_normal(p["phi"].shape)
        elif mode == "hc":
            p = mhc_ref.hc_init(n, C, k)
            for name in HC_NAMES:  # HC Eq. 14 with theta = 0 gives constant maps; perturb to exercise everything
                assert torch.equal(getattr(layer, name).detach(), T(p[name])), name
                p[name] = p[name] + 0.3 * rng.standard_normal(p[name].shape)
        else:
            p = {}
        with torch.no_grad():
            for name, v in p.items():
                getattr(layer, name).copy_(T(v))
        params.append(p)
    ref = mhc_ref.Stack(n=n, sublayers=[mhc_ref.ProbeSublayer(w) for w in ws], params=params, mode=mode,
                        preset=preset)
    return layers, ref


def run(layers, n, h, recompute=None):
    model = nn.Sequential(ExpandStreams(n), MHCStack(layers, recompute_every=recompute), CollapseStreams(n))
    ht = T(h).requires_grad_()
    y = model(ht)
    return model, ht, y


@pytest.mark.parametrize("mode, preset", [("mhc", "paper"), ("mhc", "deepseek_v4"), ("hc", "paper"),
                                          ("fixed", "paper"), ("residual", "paper")])
def test_stack_matches_reference_stack(rng, mode, preset):
    n, C, L = 4, 6, 3
    layers, ref = build(mode, n, C, L, rng, preset)
    h = rng.standard_normal((2, 3, C))
    model, ht, y = run(layers, n, h)
    y_ref, _ = ref.forward(h)
    np.testing.assert_allclose(y.detach().numpy(), y_ref, rtol=0, atol=1e-12)
    g = rng.standard_normal(y.shape)
    y.backward(T(g))
    want = ref.vjp(h, g)
    np.testing.assert_allclose(ht.grad.numpy(), want["h"], rtol=1e-10, atol=1e-12)
    for layer, gl in zip(layers, want["layers"]):
        for name, gw in gl.items():
            got = (layer.sublayer.w_sub if name == "w_sub" else getattr(layer, name)).grad
            np.testing.assert_allclose(got.numpy(), gw, rtol=1e-9, atol=1e-11, err_msg=f"{mode} {name}")


@pytest.mark.parametrize("n", [1, 3])
def test_residual_mode_is_exactly_x_plus_f(rng, n):
    """Same call sites, mode="residual": the collapsed output equals the plain loop h <- h + F(h) bit for bit."""
    C, L = 5, 3
    subs = [Probe(T(rng.standard_normal((C, C)))) for _ in range(L)]
    layers = [MHC(s, n=n, mode="residual") for s in subs]
    h = T(rng.standard_normal((4, C)))
    y = nn.Sequential(ExpandStreams(n), *layers, CollapseStreams(n))(h)
    want = h
    for s in subs:
        want = want + s(want)
    assert torch.equal(y, want)
    assert set(layers[0].state_dict()) == {"_extra_state", "sublayer.w_sub"}  # no map parameters


def test_prenorm_init_with_replicated_input_is_a_prenorm_residual_network(rng):
    """init="prenorm" (phi = 0, b_pre = -ln(n-1), b_post = 0): every stream equals the residual network's state."""
    n, C, L = 4, 6, 3
    subs = [Probe(T(rng.standard_normal((C, C)))) for _ in range(L)]
    layers = [MHC(s, n=n, dim=C, init="prenorm").double() for s in subs]
    h = T(rng.standard_normal((3, C)))
    x = ExpandStreams(n)(h)
    for layer in layers:
        x = layer(x)
    want = h
    for s in subs:
        want = want + s(want)
    for k in range(n):
        torch.testing.assert_close(x[:, k], want, rtol=0, atol=1e-12)


def test_default_init_matches_reference_biases():
    for n in (1, 2, 4):
        for scheme in ("default", "near_identity", "prenorm"):
            layer = MHC(nn.Identity(), n=n, dim=3, init=scheme)
            ref = mhc_ref.mhc_init(n, 3, scheme=scheme)
            np.testing.assert_allclose(layer.b.detach().numpy(), ref["b"], rtol=1e-7, err_msg=scheme)
            np.testing.assert_array_equal(layer.alpha.detach().numpy(), np.float32(ref["alpha"]))
            assert (layer.phi.detach().abs().sum() == 0) == (scheme == "prenorm")
    std = MHC(nn.Identity(), n=4, dim=64).phi.detach().std().item()
    assert 0.015 < std < 0.025


def test_near_identity_init_in_col_major_is_still_near_identity():
    for preset in ("paper", "deepseek_v4"):
        layer = MHC(nn.Identity(), n=4, dim=3, init="near_identity", preset=preset)
        h_res = layer.maps(torch.randn(2, 4, 3))[2]
        assert (torch.diagonal(h_res, dim1=-2, dim2=-1) > 0.99).all()


def test_state_dict_keys_and_fp32_parameters():
    n, C = 4, 8
    sub = nn.Linear(C, C)
    m = MHC(sub, n=n, dim=C)
    assert set(m.state_dict()) == {"phi", "alpha", "b", "_extra_state", "sublayer.weight", "sublayer.bias"}
    assert m.phi.shape == (n * C, n * n + 2 * n) and m.alpha.shape == (3,) and m.b.shape == (n * n + 2 * n,)
    hc = MHC(nn.Linear(C, C), n=n, dim=C, mode="hc", layer_index=5)
    assert set(hc.state_dict()) - {"sublayer.weight", "sublayer.bias", "_extra_state"} == set(HC_NAMES)
    assert torch.equal(hc.b_pre.detach(), torch.eye(n)[5 % n])
    head = CollapseStreams(n, C, mode="head")
    assert set(head.state_dict()) == {"phi_head", "alpha_head", "b_head", "_extra_state"}
    m.bfloat16()
    head.bfloat16()
    assert m.phi.dtype == m.alpha.dtype == m.b.dtype == head.phi_head.dtype == torch.float32
    assert sub.weight.dtype == torch.bfloat16
    m.double()
    assert m.phi.dtype == torch.float64


@pytest.mark.parametrize("mode", ["mhc", "hc"])
def test_bfloat16_activations_with_fp32_maps(rng, mode):
    """bf16 model (fp32 mHC parameters): output dtype bf16, close to the float64 model on the same weights."""
    n, C = 4, 16
    torch.manual_seed(0)
    model = nn.Sequential(ExpandStreams(n), *[MHC(Probe(torch.randn(C, C) / 4), n=n, dim=C, mode=mode)
                                              for _ in range(2)], CollapseStreams(n))
    h = torch.randn(3, 5, C)
    y64 = model.double()(h.double())
    y16 = model.bfloat16()(h.bfloat16())
    assert y16.dtype == torch.bfloat16 and model[1].alpha.dtype == torch.float32
    err = (y16.double() - y64).abs().max().item()
    assert err < 0.1 * y64.abs().max().item(), err
    y16.float().sum().backward()
    assert model[1].alpha.grad.dtype == torch.float32 and bool(torch.isfinite(model[1].alpha.grad).all())


def test_autocast_keeps_maps_in_fp32():
    n, C = 4, 8
    layer = MHC(nn.Linear(C, C), n=n, dim=C)
    x = torch.randn(2, n, C)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        maps = layer.maps(x)
        y = layer(x)
    assert all(m.dtype == torch.float32 for m in maps)
    assert bool(torch.isfinite(y).all())
    torch.testing.assert_close(maps[2], layer.maps(x)[2], rtol=0, atol=0)


def test_shapes_and_modes_share_call_sites():
    n, C = 3, 8
    h = torch.randn(2, 7, C)
    for mode in ("mhc", "hc", "fixed", "residual"):
        model = nn.Sequential(ExpandStreams(n), MHC(nn.Linear(C, C), n=n, dim=C, mode=mode), CollapseStreams(n))
        x = model[0](h)
        assert x.shape == (2, 7, n, C) and model[1](x).shape == (2, 7, n, C) and model(h).shape == (2, 7, C)


def _ds_reference(x, fn, scale, base, f, eps=1e-6, iters=20):
    """DeepSeek-V4 hc_pre / hc_post as the reference notes write them (comb[src, dst], softmax first)."""
    n = x.shape[-2]
    xf = x.flatten(-2)
    mixes = (xf @ fn.T) * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)
    pre = torch.sigmoid(mixes[..., :n] * scale[0] + base[:n]) + eps
    post = 2 * torch.sigmoid(mixes[..., n:2 * n] * scale[1] + base[n:2 * n])
    comb = torch.softmax((mixes[..., 2 * n:] * scale[2] + base[2 * n:]).unflatten(-1, (n, n)), dim=-1) + eps
    comb = comb / (comb.sum(-2, keepdim=True) + eps)
    for _ in range(iters - 1):
        comb = comb / (comb.sum(-1, keepdim=True) + eps)
        comb = comb / (comb.sum(-2, keepdim=True) + eps)
    layer_input = (pre.unsqueeze(-1) * x).sum(-2)
    y = f(layer_input)
    out = post.unsqueeze(-1) * y.unsqueeze(-2) + torch.einsum("...sd,...sc->...dc", comb, x)
    return out


def test_deepseek_loader_reproduces_deepseek_formulas(rng):
    n, C = 4, 8
    W = n * n + 2 * n
    fn, scale, base = T(0.2 * rng.standard_normal((W, n * C))), T(rng.uniform(0.2, 1, 3)), T(rng.standard_normal(W))
    w = T(rng.standard_normal((C, C)) / 3)
    layer = MHC(Probe(w), n=n, dim=C, preset="deepseek_v4").double().load_deepseek(fn, scale, base)
    x = T(rng.standard_normal((2, 3, n, C)))
    want = _ds_reference(x, fn, scale, base, lambda u: probe_sublayer(u, w))
    torch.testing.assert_close(layer(x), want, rtol=0, atol=1e-12)
    p = mhc_ref.from_deepseek(fn.numpy(), scale.numpy(), base.numpy())
    np.testing.assert_allclose(layer(x).detach().numpy(), mhc_ref.mhc_layer(
        x.numpy(), p["phi"], p["alpha"], p["b"], w.numpy(), preset="deepseek_v4"), rtol=0, atol=1e-12)
    back = to_deepseek(layer.phi.detach(), layer.alpha.detach(), layer.b.detach())
    assert torch.equal(back["fn"], fn) and torch.equal(back["base"], base)


def test_deepseek_head_and_block_loader(rng):
    n, C = 4, 8
    fn, scale, base = T(rng.standard_normal((n, n * C))), T([0.7]), T(rng.standard_normal(n))
    head = CollapseStreams(n, C, mode="head", preset="deepseek_v4").double().load_deepseek(fn, scale, base)
    x = T(rng.standard_normal((3, n, C)))
    xf = x.flatten(-2)
    w = torch.sigmoid((xf @ fn.T) * torch.rsqrt(xf.square().mean(-1, keepdim=True) + 1e-6) * scale + base) + 1e-6
    torch.testing.assert_close(head(x), (w.unsqueeze(-1) * x).sum(-2), rtol=0, atol=1e-13)
    p = mhc_ref.head_from_deepseek(fn.numpy(), scale.numpy(), base.numpy())
    np.testing.assert_allclose(head(x).detach().numpy(), mhc_ref.collapse_streams(
        x.numpy(), p["phi_head"], p["alpha_head"], p["b_head"], mode="head", preset="deepseek_v4"), atol=1e-13)
    W = n * n + 2 * n
    sd = {f"layers.0.hc_{t}_{k}": torch.randn(*s) for t in ("attn", "ffn")
          for k, s in (("fn", (W, n * C)), ("scale", (3,)), ("base", (W,)))}
    attn, ffn = (MHC(nn.Identity(), n=n, dim=C, preset="deepseek_v4") for _ in range(2))
    load_deepseek_block(attn, ffn, sd, prefix="layers.0.")
    assert torch.equal(ffn.phi.detach(), sd["layers.0.hc_ffn_fn"].T)
    assert torch.equal(attn.b.detach(), sd["layers.0.hc_attn_base"])


def test_torch_compile_eager_path():
    """torch.compile (aot_eager: dynamo + AOT autograd, no codegen) on the eager path: same values and gradients."""
    torch._dynamo.reset()
    n, C = 4, 8
    torch.manual_seed(0)
    model = nn.Sequential(ExpandStreams(n), MHC(nn.Sequential(nn.RMSNorm(C), nn.Linear(C, C)), n=n, dim=C),
                          MHC(nn.Sequential(nn.RMSNorm(C), nn.Linear(C, C)), n=n, dim=C, mode="hc"),
                          CollapseStreams(n, C, mode="head"))
    h = torch.randn(2, 5, C)
    y = model(h)
    y.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    yc = compiled(h)
    yc.square().sum().backward()
    torch.testing.assert_close(yc, y, rtol=1e-5, atol=1e-6)
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)


def test_module_api_example_runs():
    """examples/module_api.py (the README's module example) runs and trains every parameter."""
    import runpy
    from pathlib import Path

    ns = runpy.run_path(str(Path(__file__).resolve().parents[1] / "examples" / "module_api.py"))
    model = ns["model"]
    assert ns["y"].shape == (2, 16, ns["C"])
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in model.parameters())


def test_triton_impl_matches_eager():
    """impl="triton" (the torch-triton kernels; Triton's interpreter on CPU) against impl="eager", with recompute."""
    pytest.importorskip("mhc_backends.torch.kernels")
    n, C = 2, 4
    h = torch.randn(2, C)
    results = []
    for impl in ("eager", "triton"):
        torch.manual_seed(0)
        layers = [MHC(nn.Linear(C, C), n=n, dim=C, impl=impl, layer_index=k) for k in range(2)]
        model = nn.Sequential(ExpandStreams(n), MHCStack(layers, recompute_every=2), CollapseStreams(n))
        y = model(h)
        y.square().sum().backward()
        results.append((y.detach(), [p.grad for p in model.parameters()]))
    (y0, g0), (y1, g1) = results
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-5)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_triton_impl_keeps_fp32_maps_for_bf16():
    """With bf16 activations both impls compute the maps in fp32 (DeepSeek's policy), so they agree to bf16 rounding
    of the outputs, and the maps themselves come back as float32 from either impl."""
    pytest.importorskip("mhc_backends.torch.kernels")
    n, C = 4, 8
    x = torch.randn(3, n, C).to(torch.bfloat16)
    torch.manual_seed(0)
    eager = MHC(nn.Linear(C, C), n=n, dim=C, impl="eager").to(torch.bfloat16)
    triton = MHC(nn.Linear(C, C), n=n, dim=C, impl="triton").to(torch.bfloat16)
    triton.load_state_dict(eager.state_dict())
    maps_e, maps_t = eager.maps(x), triton.maps(x)
    assert all(m.dtype == torch.float32 for m in (*maps_e, *maps_t))
    for a, b in zip(maps_t, maps_e):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(triton(x).float(), eager(x).float(), rtol=2e-2, atol=2e-2)
