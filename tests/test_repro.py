"""mhc_repro: the copy data, HC's initialisation equals the residual network, the gains are the reference's
amax_gain, and a few-step smoke run of each mode writes finite metrics and the three figures."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")

import mhc_ref  # noqa: E402
from mhc_backends.torch.pipeline.model import build_lm  # noqa: E402
from mhc_repro.data import SEP, copy_batch  # noqa: E402
from mhc_repro.gains import gains, layer_maps  # noqa: E402
from mhc_repro.train import Config  # noqa: E402

TINY = Config(depth=4, width=16, heads=2, vocab=11, seq=9, batch=3, steps=3, threads=1)


def test_copy_batch_repeats_the_first_half():
    inputs, targets, mask = copy_batch(torch.Generator().manual_seed(0), 4, 9, 11)
    full = torch.cat([inputs, targets[:, -1:]], dim=1)  # (B, 10): a_1..a_5 SEP a_1..a_5 minus nothing
    h = 5
    assert torch.equal(full[:, :h], full[:, h + 1:]) and (full[:, h] == SEP).all()
    assert torch.equal(targets[mask].view(4, h), full[:, h + 1:])  # the loss sees exactly the copied tokens
    with pytest.raises(ValueError, match="seq must be odd"):
        copy_batch(torch.Generator(), 1, 8, 11)


def test_hc_at_init_is_the_residual_network():
    """HC Eq. 14: theta = 0, b_res = I, b_post = 1, b_pre = e_l: every stream carries the residual state."""
    inputs, _, _ = copy_batch(torch.Generator().manual_seed(1), 3, TINY.seq, TINY.vocab)
    with torch.no_grad():
        hc = build_lm(TINY.lm("hc"), seed=5).double()(inputs)
        res = build_lm(TINY.lm("residual"), seed=5).double()(inputs)
    # the sum collapse gives n x h_L; the final RMSNorm removes the factor up to its eps
    torch.testing.assert_close(hc, res, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["hc", "mhc"])
def test_gains_are_the_reference_amax_gain(mode):
    model = build_lm(TINY.lm(mode), seed=2).double()
    for p in model.parameters():  # move off the initialisation so that the maps are not trivial
        p.data.add_(0.3 * torch.randn_like(p))
    inputs, _, _ = copy_batch(torch.Generator().manual_seed(3), 2, TINY.seq, TINY.vocab)
    h_res = layer_maps(model, inputs)  # (L, B, T, n, n)
    got = gains(h_res)
    ref = mhc_ref.amax_gain(h_res.numpy())
    np.testing.assert_allclose(got["layer_gain_fwd"], ref["forward_gain"], rtol=1e-12)
    np.testing.assert_allclose(got["composite_gain_bwd_by_layer"], ref["composite_backward_gain"], rtol=1e-12)
    assert got["composite_gain_fwd"] == pytest.approx(max(ref["composite_forward_gain"]), rel=1e-12)


def test_smoke_run_writes_metrics_and_figures(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mhc_repro", "--steps", "3", "--depth", "4", "--width", "16",
                        "--n", "4", "--batch", "2", "--seq", "9", "--threads", "1", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {"config", "modes"} and set(metrics["modes"]) == {"residual", "hc", "mhc"}
    for mode, m in metrics["modes"].items():
        assert len(m["loss"]) == len(m["grad_norm"]) == 3
        assert all(math.isfinite(v) for v in m["loss"] + m["grad_norm"]), mode
        for key in ("composite_gain_fwd", "composite_gain_bwd"):
            assert math.isfinite(m[key]) and m[key] > 0
        assert len(m["layer_gain_fwd"]) == len(m["layer_gain_bwd"]) == 4
    # mHC's doubly-stochastic maps keep every composite gain at 1 up to the Sinkhorn truncation
    assert metrics["modes"]["mhc"]["composite_gain_fwd"] == pytest.approx(1.0, abs=1e-6)
    for png in ("loss_grad_norm.png", "amax_gain.png", "h_res_heatmaps.png"):
        assert (tmp_path / png).stat().st_size > 10_000, png


def test_bad_arguments_name_the_flag():
    r = subprocess.run([sys.executable, "-m", "mhc_repro", "--depth", "5"], capture_output=True, text=True)
    assert r.returncode == 2 and "depth" in r.stderr
    r = subprocess.run([sys.executable, "-m", "mhc_repro", "--modes", "mhc,foo"], capture_output=True, text=True)
    assert r.returncode == 2 and "--modes" in r.stderr
