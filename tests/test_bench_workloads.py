"""The module workloads of issue 11 (benchmarks/workloads.py, bench_workloads.py): the W2 stack is the model it
claims to be, every impl builds and steps, the peak-memory probe measures what it says, and report.py turns
workload results into the issue's targets. No timing is asserted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is a folder of the checkout
from benchmarks import report, workloads  # noqa: E402

TINY = workloads.StackConfig(B=2, T=8, C=16, heads=2, blocks=2, n=2)


def test_w2_is_four_blocks_of_attention_and_mlp_with_eight_layers():
    assert (workloads.W2.blocks, workloads.W2.layers, workloads.W2.C, workloads.W2.B, workloads.W2.T) == (
        4, 8, 256, 4, 256)
    model, shape = workloads.stack_model("torch", workloads.W2)
    from mhc_backends.torch import MHC

    layers = [m for m in model if isinstance(m, MHC)]
    assert len(layers) == 8 and shape == (4, 256, 256)
    assert [type(m.sublayer).__name__ for m in layers] == ["Attention", "MLP"] * 4


@pytest.mark.parametrize("impl", ["residual", "torch", "hyper-connections"])
def test_every_cpu_impl_steps(impl):
    try:
        model, shape = workloads.stack_model(impl, TINY)
    except NotImplementedError as e:  # the peer is not installed here
        pytest.skip(str(e))
    grads = workloads.training_step(model, shape)()
    assert grads[0].shape == shape and all(torch.isfinite(g).all() for g in grads if g is not None)


def test_attention_is_causal():
    """Changing a later token does not change an earlier token's output (the stack is a decoder)."""
    model, shape = workloads.stack_model("torch", TINY)
    x = torch.randn(shape)
    y = x.clone()
    y[:, -1] += 1.0
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.equal(a[:, :-1], b[:, :-1]) and not torch.equal(a[:, -1], b[:, -1])


def test_compiling_the_w2_stack_skips_on_cpu():
    with pytest.raises(NotImplementedError, match="W1"):
        workloads.check_impl("W2", "torch-compile", "cpu")
    with pytest.raises(NotImplementedError, match="interpreter"):
        workloads.check_impl("W1", "torch-triton", "cpu")


def test_peak_bytes_counts_live_tensors():
    mib = 1 << 20

    def fn():
        a = torch.empty(mib, dtype=torch.uint8)
        b = torch.empty(2 * mib, dtype=torch.uint8)  # a and b live together: 3 MiB
        del a, b
        c = torch.empty(mib, dtype=torch.uint8)  # after both are freed
        return c.numel()

    assert workloads.peak_bytes(fn) == 3 * mib


def test_report_turns_workload_results_into_targets(tmp_path):
    d = tmp_path / "results" / "box"
    d.mkdir(parents=True)
    (d / "machine.json").write_text(json.dumps({"machine": "box", "cpu": "c", "num_cpu": "2", "version": 1}))
    impls = ["'residual'", "'torch'", "'torch-compile'"]
    cols = ["result", "params", "version", "started_at", "duration"]
    results = {"bench_workloads.W1Layer.time_step": [[0.01, 0.03, 0.05], [impls], "v", 0, 1.0],
               "bench_workloads.W1Layer.track_x_residual": [[1.0, 3.5, 5.0], [impls], "v", 0, 1.0],
               "bench_workloads.W1Layer.track_tensor_peak_mib": [[20.0, 100.0, 80.0], [impls], "v", 0, 1.0],
               "bench_workloads.W2Stack.track_x_residual": [[1.0, 1.7, float("nan")], [impls], "v", 0, 1.0]}
    path = d / "abc-existing.json"
    path.write_text(json.dumps({"commit_hash": "abc1234567", "date": 1700000000000, "result_columns": cols,
                                "results": results}))
    recs = report.records(path)
    got = {t["target"].split(" ")[0] + (" mem" if "memory" in t["target"] else " compile" if "compile" in
                                        t["target"] else ""): t for t in report.workload_targets(recs)}
    assert got["W1"]["ratio"] == 3.5 and got["W1"]["met"] is True
    assert got["W2"]["ratio"] == 1.7 and got["W2"]["met"] is False
    assert got["W1 compile"]["ratio"] == pytest.approx(0.05 / 0.03) and got["W1 compile"]["met"] is True
    assert got["W1 mem"]["ratio"] == 5.0 and got["W1 mem"]["met"] is False
    md = report.markdown(path, recs)
    assert "| W1 | torch | 30.00 ms | 3.50 | 100.0 MiB |" in md
