"""Bad input at the torch edge: a ValueError/TypeError that names the tensor and what was expected, never a crash
deep inside or a silent wrong result. Non-contiguous inputs are valid for the eager ops (same result)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mhc_backends.torch import (
    MHC,
    CollapseStreams,
    MHCStack,
    collapse_streams,
    mhc_coeffs,
    mhc_layer,
    mhc_post_res,
    mhc_pre,
    set_check_finite,
    sinkhorn,
)
from mhc_backends.torch._checks import check_contiguous

n, C = 4, 8
W = n * n + 2 * n


def good(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return {"x": torch.randn(2, 3, n, C, generator=g, dtype=dtype), "phi": 0.1 * torch.randn(n * C, W, generator=g,
            dtype=dtype), "alpha": torch.full((3,), 0.5, dtype=dtype), "b": torch.zeros(W, dtype=dtype)}


def coeffs(**over):
    a = {**good(), **over}
    return mhc_coeffs(a["x"], a["phi"], a["alpha"], a["b"])


def nan_at(t, idx=0, value=float("nan")):
    t = t.clone()
    t.view(-1)[idx] = value
    return t


BAD = [  # (id, call, exception, words the message must contain)
    ("phi_device", lambda: coeffs(phi=good()["phi"].to("meta")), ValueError, ["phi", "device", "cpu"]),
    ("x_f32_phi_f64", lambda: coeffs(phi=good(torch.float64)["phi"]), TypeError, ["phi", "torch.float32", "float64"]),
    ("x_f64_phi_f32", lambda: coeffs(x=good(torch.float64)["x"]), TypeError, ["phi", "float64"]),
    ("x_bf16_phi_f16", lambda: coeffs(x=good()["x"].bfloat16(), phi=good()["phi"].half()), TypeError, ["phi"]),
    ("n_mismatch", lambda: coeffs(x=torch.randn(2, 3, 8)), ValueError, ["phi", "n*C", "(24, 15)", "(32, 24)"]),
    ("phi_columns", lambda: coeffs(phi=torch.randn(n * C, 20)), ValueError, ["phi", "24", "n = 4"]),
    ("alpha_shape", lambda: coeffs(alpha=torch.ones(2)), ValueError, ["alpha", "(3,)", "(2,)"]),
    ("b_shape", lambda: coeffs(b=torch.zeros(W + 1)), ValueError, ["b", "(24,)", "(25,)"]),
    ("x_nan", lambda: coeffs(x=nan_at(good()["x"])), ValueError, ["x", "finite", "1 NaN"]),
    ("phi_inf", lambda: coeffs(phi=nan_at(good()["phi"], 5, float("inf"))), ValueError, ["phi", "finite"]),
    ("x_int", lambda: coeffs(x=torch.ones(2, n, C, dtype=torch.int64)), TypeError, ["x", "float dtype", "int64"]),
    ("x_numpy", lambda: coeffs(x=good()["x"].numpy()), TypeError, ["x", "torch.Tensor", "ndarray"]),
    ("x_1d", lambda: coeffs(x=torch.ones(C)), ValueError, ["x", "at least 2 dims"]),
    ("zero_token_rms0", lambda: mhc_coeffs(torch.zeros(2, n, C), *list(good().values())[1:], rms_eps=0.0),
     ValueError, ["all zero", "rms_eps"]),
    ("t_max_0", lambda: sinkhorn(torch.zeros(3, 3), t_max=0), ValueError, ["t_max", ">= 1"]),
    ("t_max_float", lambda: sinkhorn(torch.zeros(3, 3), t_max=2.0), TypeError, ["t_max", "int"]),
    ("eps_negative", lambda: sinkhorn(torch.zeros(3, 3), eps=-1e-6), ValueError, ["eps", ">= 0"]),
    ("logits_not_square", lambda: sinkhorn(torch.zeros(3, 4)), ValueError, ["logits", "square", "(3, 4)"]),
    ("res_layout", lambda: mhc_coeffs(*good().values(), res_layout="rows"), ValueError, ["res_layout", "col_major"]),
    ("h_pre_lead", lambda: mhc_pre(good()["x"], torch.ones(3, n)), ValueError, ["h_pre", "(2, 3, 4)", "(3, 4)"]),
    ("h_pre_device", lambda: mhc_pre(good()["x"], torch.ones(2, 3, n, device="meta")), ValueError,
     ["h_pre", "device"]),
    ("f_out_dtype", lambda: mhc_post_res(good()["x"], torch.ones(2, 3, C, dtype=torch.float64), torch.ones(2, 3, n),
                                         torch.ones(2, 3, n, n)), TypeError, ["f_out", "float32", "float64"]),
    ("h_res_n", lambda: mhc_post_res(good()["x"], torch.ones(2, 3, C), torch.ones(2, 3, n), torch.ones(2, 3, 3, 3)),
     ValueError, ["h_res", "(2, 3, 4, 4)"]),
    ("w_sub_shape", lambda: mhc_layer(*good().values(), torch.ones(C, C + 1)), ValueError, ["w_sub", "(8, 8)"]),
    ("sublayer_type", lambda: mhc_layer(*good().values(), 3.0), TypeError, ["sublayer", "callable"]),
    ("head_missing", lambda: collapse_streams(good()["x"], mode="head"), ValueError, ["phi_head", "None"]),
    ("head_in_sum", lambda: collapse_streams(good()["x"], torch.ones(n * C, n)), ValueError, ["phi_head", "head"]),
    ("collapse_mode", lambda: collapse_streams(good()["x"], mode="mean"), ValueError, ["mode", "sum", "head"]),
]


def layer(**kw):
    return MHC(nn.Linear(C, C), n=n, dim=C, **kw)


BAD_MODULE = [
    ("x_wrong_n", lambda: layer()(torch.randn(2, 3, C)), ValueError, ["x", "(..., 4, 8)", "(2, 3, 8)"]),
    ("x_wrong_C", lambda: layer()(torch.randn(2, n, C + 1)), ValueError, ["x", "(..., 4, 8)"]),
    ("x_f64_params_f32", lambda: layer()(torch.randn(2, n, C, dtype=torch.float64)), TypeError,
     ["float64", "float32"]),
    ("x_nan", lambda: layer()(nan_at(torch.randn(2, n, C))), ValueError, ["x", "finite"]),
    ("x_device", lambda: layer()(torch.randn(2, n, C, device="meta")), ValueError, ["device", "meta", "cpu"]),
    ("sublayer_shape", lambda: MHC(nn.Linear(C, 2 * C), n=n, dim=C)(torch.randn(2, n, C)), ValueError,
     ["sublayer", "(2, 8)", "(2, 16)"]),
    ("dim_missing", lambda: MHC(nn.Linear(C, C), n=n), ValueError, ["dim"]),
    ("mode", lambda: layer(mode="mHC"), ValueError, ["mode", "residual"]),
    ("impl", lambda: layer(impl="cuda"), ValueError, ["impl", "triton"]),
    ("init", lambda: layer(init="identity"), ValueError, ["init", "near_identity"]),
    ("preset", lambda: layer(preset="v4"), ValueError, ["preset", "deepseek_v4"]),
    ("unknown_option", lambda: layer(tmax=3), TypeError, ["tmax", "t_max"]),
    ("bad_option", lambda: layer(t_max=0), ValueError, ["t_max"]),
    ("deepseek_needs_col_major", lambda: layer().load_deepseek(torch.zeros(W, n * C), torch.ones(3), torch.zeros(W)),
     ValueError, ["col_major", "deepseek_v4"]),
    ("deepseek_fn_shape", lambda: layer(preset="deepseek_v4").load_deepseek(torch.zeros(W, n * C + 1),
                                                                           torch.ones(3), torch.zeros(W)),
     ValueError, ["fn", "n*C"]),
    ("head_dim", lambda: CollapseStreams(n, mode="head"), ValueError, ["dim"]),
    ("stack_mixed_n", lambda: MHCStack([layer(), MHC(nn.Linear(C, C), n=2, dim=C)]), ValueError, ["same n"]),
    ("stack_recompute", lambda: MHCStack([layer()], recompute_every=-1), ValueError, ["recompute_every"]),
]


@pytest.mark.parametrize("call, exc, words", [b[1:] for b in BAD + BAD_MODULE], ids=[b[0] for b in BAD + BAD_MODULE])
def test_bad_input(call, exc, words):
    """Functional ops and modules: the exception type, and a message naming the argument and the expected value."""
    with pytest.raises(exc) as info:
        call()
    for w in words:
        assert w in str(info.value), f"{w!r} not in message: {info.value}"


def test_non_contiguous_inputs_give_the_contiguous_result():
    a = good(torch.float64)
    x_nc = a["x"].transpose(-1, -2).contiguous().transpose(-1, -2)  # same values, strides (.., 1, n)
    phi_nc = a["phi"].t().contiguous().t()
    assert not x_nc.is_contiguous() and not phi_nc.is_contiguous()
    want = mhc_coeffs(*a.values())
    got = mhc_coeffs(x_nc, phi_nc, a["alpha"], a["b"])
    for w, g in zip(want, got):  # a transposed phi may take another BLAS path: equal to rounding, not bitwise
        torch.testing.assert_close(g, w, rtol=0, atol=1e-15)
    stride0 = a["x"][:, :1].expand(2, n, n, C)  # a broadcast (stride-0) stream axis
    torch.testing.assert_close(mhc_pre(stride0, want[0][:, :1].expand(2, n, n).contiguous()),
                               mhc_pre(stride0.contiguous(), want[0][:, :1].expand(2, n, n).contiguous()))
    with pytest.raises(ValueError, match="x must be contiguous"):
        check_contiguous("x", x_nc, "kernel")


def test_finite_scan_can_be_switched_off():
    previous = set_check_finite(False)
    try:
        out = coeffs(x=nan_at(good()["x"]))
        assert bool(torch.isnan(out[0][0, 0]).all())
    finally:
        set_check_finite(previous)
    with pytest.raises(ValueError):
        coeffs(x=nan_at(good()["x"]))


def test_large_logits_do_not_trip_the_checks():
    g = torch.Generator().manual_seed(1)
    L = (1e4 * torch.randn(5, n, n, generator=g)).requires_grad_()
    out = sinkhorn(L)
    out[..., 0].sum().backward()
    assert bool(torch.isfinite(out).all()) and bool(torch.isfinite(L.grad).all())
