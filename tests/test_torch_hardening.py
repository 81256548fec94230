"""No silent wrong answers (issue 9 Sec. 3), for the reference and the eager torch ops side by side: the table's t_max
bound, non-finite options, empty inputs, overflow-safe RMS, all-zero tokens and streams, overflowing logits, a
wrong-shaped sublayer output. Each case is a named ValueError / TypeError or a correct result, the same in both."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_torch_ops import _op_inputs

import mhc_ref
from mhc_backends import load_backend
from mhc_backends.torch import hc_coeffs, mhc_coeffs, mhc_layer, sinkhorn
from mhc_spec.table import load

SPEC = load()
T_MAX_MAX = SPEC.options["t_max"].max
NB, TB = load_backend("numpy"), load_backend("torch")


def coeff_args(rng, lead=(2,), n=4, C=3, dtype=np.float64):
    x = rng.standard_normal(lead + (n, C))
    phi = rng.standard_normal((n * C, n * n + 2 * n)) / np.sqrt(n * C)
    return [a.astype(dtype) for a in (x, phi, rng.uniform(0.5, 1.5, 3), rng.standard_normal(n * n + 2 * n))]


def tt(arrays, dtype=torch.float64):
    return [torch.tensor(a, dtype=dtype) for a in arrays]


# -- t_max has a documented maximum, read from the table ------------------------------------------------------------
def test_t_max_has_a_table_maximum():
    assert T_MAX_MAX is not None and T_MAX_MAX >= 20 * max(SPEC.preset(p)["t_max"] for p in ("paper", "deepseek_v4"))


@pytest.mark.parametrize("call", [
    lambda t: mhc_ref.sinkhorn(np.zeros((4, 4)), t_max=t),
    lambda t: sinkhorn(torch.zeros(4, 4), t_max=t),
    lambda t: mhc_ref.mhc_coeffs(*coeff_args(np.random.default_rng(0)), t_max=t),
    lambda t: mhc_coeffs(*tt(coeff_args(np.random.default_rng(0))), t_max=t),
    lambda t: mhc_layer(*tt(coeff_args(np.random.default_rng(0))), torch.eye(3, dtype=torch.float64), t_max=t),
], ids=["ref_sinkhorn", "torch_sinkhorn", "ref_coeffs", "torch_coeffs", "torch_layer"])
def test_t_max_above_the_maximum_is_refused_at_once(call):
    with pytest.raises(ValueError, match=f"t_max must be <= {T_MAX_MAX}"):
        call(10**9)  # without the bound: hangs or exhausts memory
    assert call(T_MAX_MAX) is not None  # the bound itself is allowed


# -- +inf / NaN option values -----------------------------------------------------------------------------------------
FLOAT_OPTIONS = {"sinkhorn": ["eps"], "mhc_coeffs": ["sinkhorn_eps", "pre_eps", "post_scale", "rms_eps"],
                 "mhc_layer": ["sinkhorn_eps", "pre_eps", "post_scale", "rms_eps"], "hc_coeffs": ["rms_eps"],
                 "collapse_streams": ["rms_eps", "pre_eps"]}


@pytest.mark.parametrize("op, name", [(op, name) for op, names in FLOAT_OPTIONS.items() for name in names])
@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_non_finite_options_are_refused_like_the_reference(op, name, value, rng):
    ins, _ = _op_inputs(op, rng)
    opts = SPEC.op_options(op, "paper", **({"mode": "head"} if op == "collapse_streams" else {}))
    opts[name] = value
    for backend in (NB, TB):
        args = [backend.from_numpy(a, "float64") for a in ins]
        with pytest.raises(ValueError, match=f"{op}: {name} must be finite"):
            backend.call(op, args, **opts)


# -- empty inputs ------------------------------------------------------------------------------------------------------
EMPTY_OK = [op for op in SPEC.ops if op != "amax_gain"]


@pytest.mark.parametrize("op", EMPTY_OK)
def test_zero_tokens_give_empty_results_and_zero_parameter_gradients(op, rng):
    """Empty leading dims: empty outputs of the right shape; parameter gradients are sums over no tokens, i.e. 0."""
    lead = (0,) if op != "amax_gain" else ()
    ins, opts = _op_inputs(op, rng, lead=(2, 0) if op != "mhc_stack" else lead)
    opts = opts if opts is not None else SPEC.op_options(op, "paper",
                                                         **({"mode": "head"} if op == "collapse_streams" else {}))
    want = NB.call(op, ins, **opts)
    for backend in (TB,):
        got = backend.call(op, [backend.from_numpy(a, "float64") for a in ins], **opts)
        pairs = zip(want, got) if isinstance(want, (list, tuple)) else [(want, got)]
        for w, g in pairs:
            assert tuple(g.shape) == w.shape and w.size == 0
        if not SPEC.op(op).differentiable:
            continue
        outs = want if isinstance(want, (list, tuple)) else [want]
        cots = [np.zeros(np.shape(w)) for w in outs]
        g_want = NB.vjp(op, ins, cots, **opts)
        g_got = backend.vjp(op, [backend.from_numpy(a, "float64") for a in ins],
                            [backend.from_numpy(c, "float64") for c in cots], **opts)
        for k, w in g_want.items():
            assert tuple(g_got[k].shape) == w.shape and not np.any(w) and not torch.any(g_got[k]), k


@pytest.mark.parametrize("backend", [NB, TB], ids=["numpy", "torch"])
def test_amax_gain_of_zero_tokens_or_layers_is_refused(backend):
    for shape in ((3, 0, 4, 4), (0, 2, 4, 4)):
        with pytest.raises(ValueError, match="amax_gain: h_res must hold at least one layer, one token"):
            backend.call("amax_gain", [backend.from_numpy(np.zeros(shape), "float64")])


@pytest.mark.parametrize("call", [
    lambda m: m.mhc_coeffs(np.zeros((2, 4, 0)), np.zeros((0, 24)), np.ones(3), np.zeros(24)),
    lambda m: m.mhc_pre(np.zeros((2, 0, 3)), np.zeros((2, 0))),
    lambda m: m.mhc_post_res(np.zeros((2, 4, 0)), np.zeros((2, 0)), np.ones((2, 4)), np.ones((2, 4, 4))),
    lambda m: m.collapse_streams(np.zeros((2, 4, 0))),
    lambda m: m.expand_streams(np.zeros((2, 0)), n=4),
    lambda m: m.sinkhorn(np.zeros((2, 0, 0))),
    lambda m: m.hc_coeffs(np.zeros((2, 0, 3)), *[np.zeros(s) for s in [(3,), (3,), (0, 3), (3,), (0,), (0,), (0, 0)]]),
], ids=["coeffs_C0", "pre_n0", "post_res_C0", "collapse_C0", "expand_C0", "sinkhorn_n0", "hc_n0"])
def test_zero_width_is_a_named_error(call):
    """C = 0 or n = 0: a ValueError naming the argument, in the reference and in torch."""
    import mhc_backends.torch as mt

    class Torch:  # the same calls on float64 tensors
        def __getattr__(self, name):
            fn = getattr(mt, name)
            return lambda *a, **k: fn(*[torch.tensor(v, dtype=torch.float64) for v in a], **k)

    for module in (mhc_ref, Torch()):
        with pytest.raises(ValueError, match=r"(>= 1|n >= 1|C >= 1)"):
            call(module)


# -- overflow: RMS computed scale-safely -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, k", [(torch.float32, 66), (torch.bfloat16, 100), (torch.float64, 665),
                                      (torch.float32, -80), (torch.float64, -700)])
def test_maps_are_scale_invariant_at_extreme_magnitudes(dtype, k, rng):
    """rms_eps = 0: mhc_coeffs(2^k x) = mhc_coeffs(x) (spec invariant `scale_invariance`), here at |x| ~ 1e20
    (float32), 1e30 (bfloat16), 1e200 (float64) and tiny ones, where x*x overflows or underflows. With a power-of-two
    scale the two calls see the same x / t, so the maps agree exactly; the gradient w.r.t. x scales by 2^-k."""
    x, phi, alpha, b = coeff_args(rng)
    pdt = torch.float32 if dtype == torch.bfloat16 else dtype
    xt = torch.tensor(x, dtype=dtype)
    p = [torch.tensor(a, dtype=pdt) for a in (phi, alpha, b)]
    big = (xt * 2.0**k).requires_grad_(True)
    small = xt.clone().requires_grad_(True)
    got, want = mhc_coeffs(big, *p, rms_eps=0.0), mhc_coeffs(small, *p, rms_eps=0.0)
    for g, w in zip(got, want):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    cot = [torch.tensor(rng.standard_normal(w.shape), dtype=w.dtype) for w in want]
    sum((g * c).sum() for g, c in zip(got, cot)).backward()
    sum((w * c).sum() for w, c in zip(want, cot)).backward()
    assert torch.isfinite(big.grad).all()
    torch.testing.assert_close(big.grad.double() * 2.0**k, small.grad.double(), rtol=1e-2 if pdt != dtype else 1e-12,
                               atol=0)
    ref = mhc_ref.mhc_coeffs(x * 2.0**k if dtype == torch.float64 else x, phi, alpha, b, rms_eps=0.0)
    for r, w in zip(ref, want):
        atol = 1e-12 if dtype == torch.float64 else 1e-2
        np.testing.assert_allclose(w.detach().double().numpy(), r, rtol=0, atol=atol)


def test_reference_maps_at_1e200_match_the_unscaled_ones(rng):
    x, phi, alpha, b = coeff_args(rng)
    for s in (1e200, 2.0**1000, 1e-200):
        for got, want in zip(mhc_ref.mhc_coeffs(x * s, phi, alpha, b, rms_eps=0.0),
                             mhc_ref.mhc_coeffs(x, phi, alpha, b, rms_eps=0.0)):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)
        g = mhc_ref.mhc_coeffs_vjp(x * s, phi, alpha, b, None, None, np.ones((2, 4, 4)) * rng.standard_normal((4, 4)),
                                   rms_eps=0.0)
        assert all(np.all(np.isfinite(v)) for v in g.values())


# -- all-zero tokens and streams ---------------------------------------------------------------------------------------
def hc_params(n=4, C=3):
    return [np.full(s, 0.1) for s in [(C,), (C,), (n, C), (3,), (n,), (n,), (n, n)]]


def test_hc_coeffs_all_zero_stream_with_rms_eps_zero_is_refused(rng):
    """Per-stream RMSNorm: one all-zero stream (not token) is enough for 0/0."""
    x = rng.standard_normal((2, 4, 3))
    x[1, 2] = 0
    with pytest.raises(ValueError, match="hc_coeffs: x has a stream whose C entries are all zero"):
        mhc_ref.hc_coeffs(x, *hc_params(), rms_eps=0.0)
    with pytest.raises(ValueError, match="hc_coeffs: x has a stream whose C entries are all zero"):
        hc_coeffs(*tt([x] + hc_params()), rms_eps=0.0)
    assert np.all(np.isfinite(mhc_ref.hc_coeffs(x, *hc_params(), rms_eps=1e-20)[2]))


@pytest.mark.parametrize("rms_eps, refused", [(1e-100, True), (1e-50, False), (0.0, True)])
def test_tiny_rms_eps_in_float32(rms_eps, refused, rng):
    """In float32 the RMS floor is sqrt(rms_eps) (the scale-safe RMS never forms rms_eps itself): 1e-50 gives a
    finite r = 1e-25 and correct maps (the biases, m = 0); 1e-100 has sqrt 0 there, so the zero-token rule applies."""
    x, phi, alpha, b = coeff_args(rng, dtype=np.float32)
    x[0] = 0
    ref = lambda: mhc_ref.mhc_coeffs(x, phi, alpha, b, rms_eps=rms_eps, compute_dtype="float32")  # noqa: E731
    eager = lambda: mhc_coeffs(*tt([x, phi, alpha, b], torch.float32), rms_eps=rms_eps)  # noqa: E731
    for call in (ref, eager):
        if refused:
            with pytest.raises(ValueError, match="all zero"):
                call()
        else:
            maps = call()
            h_pre = maps[0][0] if isinstance(maps[0], np.ndarray) else maps[0][0].numpy()
            np.testing.assert_allclose(h_pre, 1 / (1 + np.exp(-b[:4])), rtol=1e-6)  # m = 0: sigmoid of the bias


# -- overflowing logits, sublayer output shape -------------------------------------------------------------------------
def test_overflowing_logits_name_mhc_coeffs(rng):
    x, phi, alpha, b = coeff_args(rng)
    alpha[2] = 1e308
    with pytest.raises(ValueError, match=r"mhc_coeffs: the map logits alpha \* \(x_bar @ phi\) / r \+ b overflow"):
        mhc_ref.mhc_coeffs(x, phi, alpha, b)
    with pytest.raises(ValueError, match=r"mhc_coeffs: H_res has \d+ NaN/Inf entries although every input is finite"):
        mhc_coeffs(*tt([x, phi, alpha, b]))


@pytest.mark.parametrize("out_shape", [(1, 3), (3,), (2, 1)])
def test_eager_layer_refuses_a_wrong_shaped_sublayer_output(out_shape, rng):
    x, phi, alpha, b = tt(coeff_args(rng))
    with pytest.raises(ValueError, match=r"mhc_layer: the sublayer must return the shape of its input H_pre x"):
        mhc_layer(x, phi, alpha, b, lambda u: torch.ones(out_shape, dtype=u.dtype))


# -- float16: a value that does not fit is a named error, not inf ---------------------------------------------------
def test_float16_zero_token_gradient_overflow_is_named(rng):
    """Paper preset (rms_eps = 1e-20): at an all-zero token dm/dx = 1/sqrt(rms_eps) = 1e10, beyond float16."""
    x, phi, alpha, b = coeff_args(rng)
    x[0] = 0
    xt = torch.tensor(x, dtype=torch.float16, requires_grad=True)
    maps = mhc_coeffs(xt, *tt([phi, alpha, b], torch.float32), maps_dtype=torch.float32)
    loss = sum((m * torch.tensor(rng.standard_normal(m.shape), dtype=torch.float32)).sum() for m in maps)
    with pytest.raises(ValueError, match=r"the gradient w.r.t. x \(mhc_coeffs\) overflows float16"):
        loss.backward()
    xb = torch.tensor(x, dtype=torch.bfloat16, requires_grad=True)  # the same in bfloat16 is finite
    maps = mhc_coeffs(xb, *tt([phi, alpha, b], torch.float32), maps_dtype=torch.float32)
    sum(m.sum() for m in maps).backward()
    assert torch.isfinite(xb.grad).all()


def test_float16_premix_overflow_is_named():
    from mhc_backends.torch import mhc_post_res, mhc_pre

    x = torch.full((2, 4, 3), 3e4, dtype=torch.float16)  # each stream fits; their sum does not
    with pytest.raises(ValueError, match="mhc_pre: the sublayer input H_pre x overflows float16"):
        mhc_pre(x, torch.ones(2, 4))
    with pytest.raises(ValueError, match="mhc_post_res: the mixed streams .* overflows float16"):
        mhc_post_res(x, torch.zeros(2, 3, dtype=torch.float16), torch.ones(2, 4), torch.ones(2, 4, 4))
    assert torch.isfinite(mhc_pre(x, torch.full((2, 4), 0.5))).all()  # 6e4 fits


# -- modules: parameters, configuration in the state dict, DeepSeek loader names ---------------------------------------
def _mhc(mode="mhc", preset="paper", **kw):
    from torch import nn

    from mhc_backends.torch import MHC

    return MHC(nn.Linear(3, 3).double(), n=4, dim=3, mode=mode, preset=preset, **kw).double()


@pytest.mark.parametrize("mode, name", [("mhc", "phi"), ("mhc", "alpha"), ("mhc", "b"), ("hc", "theta_res"),
                                        ("hc", "b_res"), ("head", "phi_head"), ("head", "b_head")])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_module_parameters_are_named(mode, name, bad, rng):
    from mhc_backends.torch import CollapseStreams

    m = CollapseStreams(4, 3, mode="head").double() if mode == "head" else _mhc(mode)
    with torch.no_grad():
        getattr(m, name).view(-1)[0] = bad
    with pytest.raises(ValueError, match=f"{type(m).__name__}: {name} must be finite, got 1 NaN/Inf"):
        m(torch.tensor(rng.standard_normal((2, 4, 3))))


@pytest.mark.parametrize("kw", [{"alpha_init": math.inf}, {"alpha_init": math.nan}, {"phi_std": math.inf},
                                {"res_offdiag": math.nan}])
def test_non_finite_init_values_are_refused(kw):
    from mhc_backends.torch import CollapseStreams

    name = next(iter(kw))
    with pytest.raises(ValueError, match=f"MHC: {name} must be finite"):
        _mhc(**kw)
    if name != "res_offdiag":
        with pytest.raises(ValueError, match=f"CollapseStreams: {name} must be finite"):
            CollapseStreams(4, 3, mode="head", **kw)


def test_module_zero_token_with_rms_eps_zero_is_refused():
    m = _mhc(rms_eps=0.0)
    with pytest.raises(ValueError, match="MHC: x has a token whose n\\*C entries are all zero"):
        m(torch.zeros(2, 4, 3, dtype=torch.float64))


def test_state_dict_carries_the_configuration_and_refuses_another(rng):
    paper, ds = _mhc(preset="paper"), _mhc(preset="deepseek_v4")
    sd = paper.state_dict()
    assert sd["_extra_state"]["preset"] == "paper" and sd["_extra_state"]["res_layout"] == "row_major"
    with pytest.raises(ValueError, match="saved by a module with another configuration.*res_layout: saved 'row_major'"):
        ds.load_state_dict(sd)
    with pytest.raises(ValueError, match="t_max: saved 20, this module 10"):
        _mhc(t_max=10).load_state_dict(sd)
    with pytest.raises(ValueError, match="mode: saved 'mhc', this module 'hc'"):
        _mhc(mode="hc").load_state_dict(sd, strict=False)
    x = torch.tensor(rng.standard_normal((2, 4, 3)))
    twin = _mhc(preset="paper")
    twin.load_state_dict(sd)  # same configuration: loads, same outputs
    assert torch.equal(twin(x), paper(x))
    old = {k: v for k, v in sd.items() if k != "_extra_state"}  # saved before the entry existed
    ds.load_state_dict(old)
    assert torch.equal(ds.phi, paper.phi)


def test_load_deepseek_names_its_own_arguments():
    from mhc_backends.torch import CollapseStreams
    from mhc_backends.torch.deepseek import load_deepseek, load_deepseek_head

    m = _mhc(preset="deepseek_v4").float()
    with pytest.raises(ValueError, match=r"load_deepseek: fn must have shape \(24, 12\) for this .* got \(24, 8\)"):
        load_deepseek(m, torch.randn(24, 8), torch.ones(3), torch.zeros(24))
    head = CollapseStreams(4, 3, mode="head", preset="deepseek_v4")
    with pytest.raises(ValueError, match=r"load_deepseek_head: hc_head_fn must have shape \(4, 12\)"):
        load_deepseek_head(head, torch.randn(4, 8), torch.ones(1), torch.zeros(4))


def test_rms_near_the_largest_finite_value(rng):
    """|x| close to the dtype's max: the scale t stays finite (a power of two <= max|x|), so r is right, not NaN."""
    from mhc_backends.torch import _checks
    from mhc_ref._common import rms

    x = np.array([[6e4, 3e4, -6.5e4]])
    np.testing.assert_allclose(rms(x.astype(np.float16), 0.0)[0, 0], np.sqrt(np.mean(x**2)), rtol=2e-3)
    xt = torch.tensor([[3e38, -3.3e38, 1e38]])
    _, t, rho = _checks.rms(xt, 0.0)
    np.testing.assert_allclose(float(t * rho), np.sqrt(np.mean(np.array([3e38, 3.3e38, 1e38]) ** 2)), rtol=1e-6)
