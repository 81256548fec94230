"""Smoke test of the asv suite (benchmarks/): every bench module imports, every benchmark function runs one small
config directly (numpy backend, cpu_small, float32), combinations that are not claimed or not for this device skip
with NotImplementedError, the bytes-moved model matches P Table 2, and report.py reads an asv result file.
No timing is asserted anywhere."""

from __future__ import annotations

import importlib
import inspect
import json
import math
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mhc_backends import Capabilities
from mhc_backends.numpy import NumpyBackend

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is a folder of the checkout, not installed
import benchmarks  # noqa: E402
from benchmarks import common, report  # noqa: E402

PREFIXES = ("time_", "peakmem_", "track_", "mem_", "timeraw_")
BENCH_MODULES = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))
REQUIRED = {"bench_sinkhorn", "bench_mhc_coeffs", "bench_mhc_pre", "bench_mhc_post_res", "bench_mhc_layer"}


@pytest.fixture(autouse=True)
def short_tracks(monkeypatch):
    monkeypatch.setenv("MHC_BENCH_TRACK_BUDGET", "0.01")


def benchmark_classes():
    for modname in BENCH_MODULES:
        mod = importlib.import_module(f"benchmarks.{modname}")
        for name, cls in vars(mod).items():
            if inspect.isclass(cls) and not name.startswith("_") and hasattr(cls, "params"):
                yield modname, name, cls


def test_every_op_has_a_bench_module():
    assert REQUIRED <= set(BENCH_MODULES), f"missing bench modules: {sorted(REQUIRED - set(BENCH_MODULES))}"


def test_params_come_from_the_spec_and_entry_points(spec):
    assert set(common.SHAPES) <= set(spec.shapes)
    assert {"cpu_small", "cpu", "paper_3b", "paper_9b", "paper_27b"} <= set(spec.shapes)
    assert "numpy" in common.BACKENDS
    for _, name, cls in benchmark_classes():
        assert len(cls.params) == len(cls.param_names), name
        if cls.param_names == ("impl",):  # bench_workloads: fixed module workloads, no shape grid
            continue
        assert list(cls.params[1]) == list(common.SHAPES), name
        assert list(cls.params[3]) == list(common.MODES), name


@pytest.mark.parametrize("mode", common.MODES)
def test_each_op_benchmark_runs_one_config_on_numpy(mode):
    ran = 0
    for modname, name, cls in benchmark_classes():
        if cls.param_names[0] != "backend":
            continue
        bench = cls()
        params = ("numpy", "cpu_small", "float32", mode)
        bench.setup(*params)
        for attr in dir(cls):
            if not attr.startswith(PREFIXES):
                continue
            value = getattr(bench, attr)(*params)
            if attr.startswith("track_"):
                assert isinstance(value, float) and math.isfinite(value), f"{modname}.{name}.{attr} = {value}"
                if attr in ("track_gbps", "track_pct_copy_bw"):
                    assert value > 0, f"{modname}.{name}.{attr} = {value}"
            ran += 1
    assert ran >= 5 * 4


def test_module_comparison_runs_the_residual_and_the_peer():
    pytest.importorskip("torch")
    from benchmarks.bench_mhc_layer import MhcLayerModule

    for impl in ("residual", "hyper-connections", "torch"):
        bench = MhcLayerModule()
        params = (impl, "cpu_small", "float32", "forward+backward")
        try:
            bench.setup(*params)
        except NotImplementedError as e:  # peer or backend not installed here
            assert impl != "residual", e
            continue
        bench.time_layer(*params)
        if impl == "residual" and baselines_installed("hyper-connections"):
            speedup = bench.track_speedup_vs_hyper_connections(*params)
            assert math.isfinite(speedup) and speedup > 0


def baselines_installed(dist):
    from benchmarks import baselines

    return baselines.installed_version(dist) is not None


@pytest.mark.parametrize("shape", ["paper_3b", "paper_27b"])
def test_gpu_configs_skip_on_cpu(shape):
    from benchmarks.bench_sinkhorn import Sinkhorn

    if common.cuda_available():
        pytest.skip("a GPU is present: the config runs")
    with pytest.raises(NotImplementedError, match="GPU config"):
        Sinkhorn().setup("numpy", shape, "float32", "forward")


def test_unclaimed_combinations_skip():
    class SinkhornOnly(NumpyBackend):
        name = "sinkhorn-only"
        capabilities = Capabilities(ops=frozenset({"sinkhorn"}), dtypes=frozenset({"float32"}), grad_ops=frozenset())

    be = SinkhornOnly()
    common.check_runnable(be, "sinkhorn", "cpu_small", "float32", "forward")
    with pytest.raises(NotImplementedError, match="does not claim"):
        common.check_runnable(be, "sinkhorn", "cpu_small", "float32", "backward")
    with pytest.raises(NotImplementedError, match="does not claim"):
        common.check_runnable(be, "mhc_pre", "cpu_small", "float32", "forward")
    with pytest.raises(NotImplementedError, match="runs dtypes"):
        common.check_runnable(be, "sinkhorn", "cpu_small", "bfloat16", "forward")


@pytest.mark.parametrize("n,C", [(4, 64), (2, 3), (8, 1280)])
def test_bytes_model_matches_paper_table_2(n, C):
    f32 = 4
    fwd = {op: common.bytes_per_token(op, "forward", n, C, "float32") // f32 for op in common.TRAFFIC}
    assert fwd["residual"] == 3 * C  # reads 2C, writes C
    assert fwd["mhc_pre"] == (n * C + n) + C
    assert fwd["mhc_post_res"] == ((n + 1) * C + n + n * n) + n * C  # fused: reads (n+1)C (+ maps), writes nC
    layer = common.bytes_per_token("mhc_layer", "forward", n, C, "float32") // f32
    assert layer == ((3 * n + 1) * C + n * n + 2 * n) + ((n + 1) * C + n * n + 2 * n)  # P Sec. 4.3.1, derived
    both = common.bytes_per_token("mhc_pre", "forward+backward", n, C, "float32")
    assert both == common.bytes_per_token("mhc_pre", "forward", n, C, "float32") + common.bytes_per_token(
        "mhc_pre", "backward", n, C, "float32")
    # 16-bit activations with float32 maps: only the C-sized terms halve
    bf = common.bytes_per_token("mhc_post_res", "forward", n, C, "bfloat16")
    assert bf == 2 * ((2 * n + 1) * C) + 4 * (n + n * n)


def test_copy_moves_the_requested_bytes():
    be = NumpyBackend()
    sample = be.from_numpy(np.zeros(4), "float32")
    assert common.copy_bandwidth(be, sample, 1 << 20, budget=0.01) > 0


def _fake_asv_results(tmp_path: Path) -> Path:
    machine_dir = tmp_path / "results" / "testbox"
    machine_dir.mkdir(parents=True)
    (machine_dir / "machine.json").write_text(json.dumps({"machine": "testbox", "cpu": "test cpu", "num_cpu": "2",
                                                          "version": 1}))
    cols = ["result", "params", "version", "started_at", "duration"]
    op_params = [["'numpy'", "'torch'"], ["'cpu'"], ["'float32'"], ["'forward+backward'"]]
    mod_params = [["'residual'", "'hyper-connections'", "'torch'"], ["'cpu'"], ["'float32'"], ["'forward+backward'"]]
    results = {
        "bench_mhc_layer.MhcLayer.time_op": [[0.050, 0.020], op_params, "v", 0, 1.0],
        "bench_mhc_layer.MhcLayer.track_pct_copy_bw": [[1.5, float("nan")], op_params, "v", 0, 1.0],
        "bench_mhc_layer.MhcLayerModule.time_layer": [[0.005, 0.240, 0.080], mod_params, "v", 0, 1.0],
    }
    path = machine_dir / "abc123-existing.json"
    path.write_text(json.dumps({"commit_hash": "abc1234567890", "env_name": "existing", "date": 1700000000000,
                                "params": {}, "python": "3.11", "requirements": {}, "env_vars": {},
                                "result_columns": cols, "results": results, "durations": {}, "version": 2}))
    return path


def test_report_tables_targets_and_readme(tmp_path):
    path = _fake_asv_results(tmp_path)
    assert report.latest_result(tmp_path / "results") == path
    recs = report.records(path)
    assert not any(r["metric"] == "pct_bw" and r["backend"] == "torch" for r in recs)  # NaN = skipped
    md = report.markdown(path, recs)
    assert "| mhc_layer | cpu | float32 | forward+backward | torch | 20.00 ms |" in md
    t = report.targets(recs)
    assert t[0]["ratio"] == pytest.approx(0.240 / 0.080) and t[0]["met"] is True
    assert t[1]["met"] is None and "not measurable" in t[1]["detail"]
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_START}\nold\n{report.README_END}\noutro\n")
    assert report.rewrite_readme(readme, "NEW TABLE\n")
    assert readme.read_text() == f"intro\n{report.README_START}\nNEW TABLE\n{report.README_END}\noutro\n"
    pytest.importorskip("matplotlib")
    assert report.plot(recs, tmp_path / "plot.png").stat().st_size > 1000


@pytest.mark.skipif(shutil.which("git") is None, reason="asv check needs git")
def test_asv_check_discovers_the_suite():
    pytest.importorskip("asv")
    conf = Path(benchmarks.__file__).with_name("asv.conf.json")
    out = subprocess.run([sys.executable, "-m", "asv", "check", "-E", f"existing:{sys.executable}", "--config",
                          str(conf)], cwd=conf.parent, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "No problems found" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_residual_baselines_compute_the_same_function(framework):
    """The plain-residual baselines h + F(h) of each framework agree with the NumPy reference's probe sublayer."""
    from benchmarks import baselines

    if framework == "torch":
        torch = pytest.importorskip("torch")
        convert, back = (lambda a, d: torch.from_numpy(a).to(getattr(torch, d))), (lambda y: y.numpy())
    else:
        jnp = pytest.importorskip("jax.numpy")
        convert, back = (lambda a, d: jnp.asarray(a, dtype=d)), np.asarray
    host = type("Host", (), {"from_numpy": staticmethod(lambda a, d: a.astype(d))})()
    native = type("Native", (), {"from_numpy": staticmethod(convert)})()
    rng = np.random.default_rng(0)
    h = rng.standard_normal((2, 3, 8), dtype=np.float32)
    w = rng.standard_normal((8, 8), dtype=np.float32) / np.float32(np.sqrt(8))
    want = baselines.residual_workload("numpy", host, h, w, "float32", "forward")()
    got = back(baselines.residual_workload(framework, native, h, w, "float32", "forward")())
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for mode in ("backward", "forward+backward"):
        baselines.residual_workload(framework, native, h, w, "float32", mode)()
