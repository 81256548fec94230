"""The GPU command (`nox -s gpu`, `python -m benchmarks.gpu`) on a CPU: its `--dry-run` runs every step, every
shape config, every op and impl (Triton and liger-kernel kernels in the interpreter) and writes its JSON and
Markdown; its per-step time limit stops a step and the run goes on; without CUDA the real run refuses to start.
No timing is asserted: dry-run numbers mean nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/ is a folder of the checkout, not installed
from benchmarks import gpu  # noqa: E402


def run_gpu(*args, timeout=900):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_dry_run_runs_every_step(tmp_path):
    out = run_gpu("--dry-run", "--out", str(tmp_path))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    doc = json.loads((tmp_path / "gpu.json").read_text())
    steps = {s["step"]: s for s in doc["steps"]}
    expected = {"env", "copy_bw", "block", "determinism", "conformance/backends",
                *(f"{kind}/{shape}" for kind in ("ops", "layer") for shape in gpu.SHAPES)}
    assert expected <= set(steps), sorted(steps)
    assert all(s["status"] == "ok" for s in doc["steps"]), [(s["step"], s.get("reason")) for s in doc["steps"]]
    assert {"torch", "torch-triton"} <= {name.split("/", 1)[1] for name in steps if name.startswith("conformance/")}
    rows = [r for shape in gpu.SHAPES for r in steps[f"ops/{shape}"]["result"] + steps[f"layer/{shape}"]["result"]]
    for shape in gpu.SHAPES:
        for op in (*gpu.OPS, "mhc_layer"):
            for impl in gpu.impls_for(op):
                got = [r for r in rows if (r["shape"], r["op"], r["impl"]) == (shape, op, impl)]
                assert got and all("error" not in r and r["bytes"] > 0 for r in got), (shape, op, impl, got)
    assert all(r.get("bitwise_equal") for r in steps["determinism"]["result"]), steps["determinism"]["result"]
    block = {r["impl"]: r for r in steps["block"]["result"]}
    assert "seconds" in block["residual"] and "overhead_pct" in block["torch"]
    md = (tmp_path / "gpu.md").read_text()
    assert "DRY RUN" in md and "| mhc_layer | paper_27b | forward+backward | torch-triton |" in md


def test_a_step_over_its_limit_times_out_and_the_run_goes_on():
    plan = gpu.make_plan(True, budget_s=60)
    r = gpu.Runner(plan)
    t0 = time.perf_counter()
    r.run("slow", "env", lambda: time.sleep(30), limit=0.5)
    r.run("next", "env", lambda: 42)
    assert time.perf_counter() - t0 < 10
    assert [(s["step"], s["status"]) for s in r.steps] == [("slow", "timeout"), ("next", "ok")]
    assert r.steps[1]["result"] == 42


def test_the_budget_caps_every_step():
    r = gpu.Runner(gpu.make_plan(True, budget_s=0.5))
    time.sleep(0.6)
    r.run("late", "ops", lambda: 1)
    assert r.steps[0]["status"] == "skipped" and "budget" in r.steps[0]["reason"]


def test_real_run_needs_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    out = run_gpu("--out", "/nonexistent-never-written", timeout=300)
    assert out.returncode == 2 and "--dry-run" in out.stderr
