"""The torch and jax backends share their shape rules (`mhc_backends._contract`) and DeepSeek layout checks
(`mhc_backends._deepseek`): the same bad call raises the same exception with the same message in both, and the
message names the argument, the expected shape and the one it got."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
jnp = pytest.importorskip("jax.numpy")

from mhc_backends.jax import deepseek as jax_deepseek  # noqa: E402
from mhc_backends.jax.backend import JaxBackend  # noqa: E402
from mhc_backends.torch import deepseek as torch_deepseek  # noqa: E402
from mhc_backends.torch.backend import TorchBackend  # noqa: E402

n, C, L = 3, 2, 2
W = n * n + 2 * n
rng = np.random.default_rng(0)


def r(*shape):
    return rng.standard_normal(shape)


X = r(2, n, C)
HEAD = dict(phi_head=r(n * C, n), alpha_head=r(1), b_head=r(n))
THETA = [r(C), r(C), r(n, C), r(3), r(n), r(n), r(n, n)]
STACK = [r(L, n * C, W), r(L, 3), r(L, W), r(L, C, C)]
OPTS = dict(t_max=5, sinkhorn_eps=0.0, pre_eps=0.0, post_scale=2.0, rms_eps=1e-20, res_layout="row_major")

# (id, op, inputs (numpy or None), options, words the message must contain)
BAD = [
    ("collapse-sum-with-head", "collapse_streams", [X, HEAD["phi_head"], None, None], dict(mode="sum"),
     ["phi_head", "mode='head'"]),
    ("collapse-head-missing", "collapse_streams", [X, HEAD["phi_head"], HEAD["alpha_head"], None], dict(mode="head"),
     ["b_head", f"({n},)", "None"]),
    ("collapse-head-shape", "collapse_streams", [X, r(n * C, n + 1), HEAD["alpha_head"], HEAD["b_head"]],
     dict(mode="head"), ["phi_head", f"({n * C}, {n})", f"({n * C}, {n + 1})"]),
    ("collapse-mode", "collapse_streams", [X, None, None, None], dict(mode="mean"), ["mode", "'mean'"]),
    ("hc-theta_res", "hc_coeffs", [X, *THETA[:2], r(n, C + 1), *THETA[3:]], dict(rms_eps=1e-20),
     ["theta_res", f"({n}, {C})", f"({n}, {C + 1})"]),
    ("stack-phi-2d", "mhc_stack", [X, r(n * C, W), *STACK[1:]], OPTS,
     ["phi", "(L, n*C, n*n+2*n)", f"({n * C}, {W})"]),
    ("stack-L0", "mhc_stack", [X, r(0, n * C, W), *STACK[1:]], OPTS, ["phi", "L >= 1"]),
    ("stack-w_sub", "mhc_stack", [X, *STACK[:3], r(L, C, C + 1)], OPTS, ["w_sub", f"({L}, {C}, {C})"]),
    ("coeffs-phi-cols", "mhc_coeffs", [X, r(n * C, W - 1), r(3), r(W)], OPTS, ["phi", f"n*n+2*n = {W}"]),
    ("pre-h_pre", "mhc_pre", [X, r(2, n + 1)], {}, ["h_pre", f"(2, {n})", f"(2, {n + 1})"]),
    ("post_res-h_res", "mhc_post_res", [X, r(2, C), r(2, n), r(2, n, n + 1)], {}, ["h_res", f"(2, {n}, {n})"]),
    ("sinkhorn-square", "sinkhorn", [r(2, n, n + 1)], dict(t_max=5, eps=0.0), ["logits", "square"]),
    ("x-empty-streams", "mhc_pre", [r(2, 0, C), r(2, 0)], {}, ["x", "n >= 1"]),
    ("expand-C0", "expand_streams", [r(2, 0)], dict(n=n), ["h", "C >= 1", "(2, 0)"]),
    ("gain-square", "amax_gain", [r(L, 2, n, n + 1)], {}, ["h_res", "square", f"({L}, 2, {n}, {n + 1})"]),
    ("gain-empty", "amax_gain", [r(L, 0, n, n)], {}, ["h_res", "one token", f"({L}, 0, {n}, {n})"]),
]


def _raised(backend, op, inputs, options):
    args = [None if a is None else backend.from_numpy(a, "float64") for a in inputs]
    with pytest.raises((ValueError, TypeError)) as info:
        backend.call(op, args, **options)
    return info.value


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_same_message_in_torch_and_jax(case):
    _, op, inputs, options, words = case
    t = _raised(TorchBackend("cpu"), op, inputs, options)
    j = _raised(JaxBackend(), op, inputs, options)
    assert type(t) is type(j) and str(t) == str(j), f"torch: {t!r}\njax:   {j!r}"
    assert str(t).startswith(f"{op}: ")
    for word in words:
        assert word in str(t), f"{word!r} not in {str(t)!r}"


DEEPSEEK_BAD = [  # (id, function, arguments, words)
    ("rows", "from_deepseek", [r(W + 1, n * C), r(3), r(W + 1)], ["fn", "n*n+2*n rows", str(W + 1)]),
    ("cols", "from_deepseek", [r(W, n * C + 1), r(3), r(W)], ["fn", f"n = {n}", f"({W}, {n * C + 1})"]),
    ("scale", "from_deepseek", [r(W, n * C), r(2), r(W)], ["scale", "(3,)", "(2,)"]),
    ("head-base", "head_from_deepseek", [r(n, n * C), r(1), r(n + 1)], ["hc_head_base", f"({n},)", f"({n + 1},)"]),
]


@pytest.mark.parametrize("case", DEEPSEEK_BAD, ids=[c[0] for c in DEEPSEEK_BAD])
def test_deepseek_converters_same_message(case):
    _, fn, args, words = case
    with pytest.raises(ValueError) as t:
        getattr(torch_deepseek, fn)(*(torch.tensor(a) for a in args))
    with pytest.raises(ValueError) as j:
        getattr(jax_deepseek, fn)(*(jnp.asarray(a) for a in args))
    assert str(t.value) == str(j.value)
    for word in words:
        assert word in str(t.value), f"{word!r} not in {str(t.value)!r}"


def test_vjp_arguments_checked_alike():
    """Backend.vjp_arguments: the same refusal of a wrong input or cotangent count in both backends."""
    for backend in (TorchBackend("cpu"), JaxBackend()):
        x, h = (backend.from_numpy(a, "float64") for a in (X, r(2, n)))
        with pytest.raises(ValueError, match=r"vjp\('mhc_pre'\): expected 2 inputs \['x', 'h_pre'\], got 1"):
            backend.vjp("mhc_pre", [x], [None])
        with pytest.raises(ValueError, match=r"vjp\('mhc_pre'\): expected 1 cotangents \['y'\], got 2"):
            backend.vjp("mhc_pre", [x, h], [None, None])
        with pytest.raises(NotImplementedError, match="amax_gain"):
            backend.vjp("amax_gain", [x], [None])
        assert set(backend.vjp("mhc_pre", [x, h], [None])) == {"x", "h_pre"}
