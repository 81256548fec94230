"""The pipeline runner vs a single-process run of the same mHC LM on the same micro-batches (CPU, gloo, torchrun).

One `torchrun` launch per world size P in {2, 4} runs every schedule x n in {1, 4} x recompute in {off, 2 layers}
(`mhc_backends.torch.pipeline.check`); each rank compares what it owns against the oracle it computes itself. Every
schedule accumulates the micro-batches of a stage in micro-batch order, so the reduction order matches the oracle's
and the loss and every parameter gradient must be bitwise equal (the float64 oracle; the max abs difference is
reported on failure).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from mhc_backends.torch.pipeline.distributed import free_port  # noqa: E402
from mhc_backends.torch.pipeline.runner import SCHEDULES, rank_stages  # noqa: E402

CONFIGS = [(s, n, r) for s in SCHEDULES for n in (1, 4) for r in (0, 2)]


def torchrun(nproc: int, module: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr",
           "127.0.0.1", "--master-port", str(free_port()), "-m", module, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module", params=[2, 4], ids=lambda p: f"P{p}")
def check(request, tmp_path_factory):
    world = request.param
    out = tmp_path_factory.mktemp(f"pipeline{world}") / "check.json"
    proc = torchrun(world, "mhc_backends.torch.pipeline.check", "--out", str(out), timeout=420)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    records = json.loads(out.read_text())
    by_config: dict = {}
    for r in records:
        by_config.setdefault((r["schedule"], r["n"], r["recompute"]), []).append(r)
    return world, by_config


def config_id(c):
    return f"{c[0]}-n{c[1]}-R{c[2]}"


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_loss_and_gradients_equal_single_process(check, config):
    world, by_config = check
    ranks = by_config[config]
    assert sorted(r["rank"] for r in ranks) == list(range(world))
    owners = ranks[0]["owners"]
    assert all(count == 1 for count in owners.values()), f"parameters not owned by exactly one rank: {owners}"
    losses = [r["loss"] for r in ranks if r["loss"] is not None]
    assert len(losses) == 1 and losses[0]["count"] == 2 * world
    assert losses[0]["bitwise"], f"loss differs from the single-process run by {losses[0]['max_abs']:.3g}"
    seen = set()
    for r in ranks:
        assert r["stages"] == rank_stages(config[0], r["rank"], world)
        for name, g in r["grads"].items():
            assert not g.get("missing"), f"rank {r['rank']}: no gradient for {name}"
            assert g["bitwise"], f"rank {r['rank']}: {name} differs from the single-process run by {g['max_abs']:.3g}"
            seen.add(name)
    assert seen == set(owners), f"parameters without a compared gradient: {set(owners) - seen}"


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_boundary_bytes(check, config):
    """Each stage boundary between two ranks carries M * b*T*n*C*itemsize bytes each way, nothing else is sent."""
    world, by_config = check
    ranks = by_config[config]
    schedule = config[0]
    stages = SCHEDULES[schedule].stages_per_rank * world
    owner = {s: r for r in range(world) for s in rank_stages(schedule, r, world)}
    expected = {f"{b}:{d}" for b in range(stages - 1) if owner[b] != owner[b + 1] for d in ("fwd", "bwd")}
    sent = {}
    for r in ranks:
        for key, value in r["bytes"].items():
            assert key not in sent, f"boundary {key} sent by two ranks"
            sent[key] = value
            assert r["sends"][key] == r["M"], f"{key}: {r['sends'][key]} sends for {r['M']} micro-batches"
    assert set(sent) == expected
    assert all(v == ranks[0]["expected_bytes_per_boundary"] for v in sent.values()), sent


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_recompute_counts(check, schedule):
    """Every checkpointed block is recomputed at least once per micro-batch; full-backward schedules exactly once,
    the split input/weight backward (weight pass in one GraphExecGroup) at most twice."""
    world, by_config = check
    for n in (1, 4):
        for r in by_config[(schedule, n, 2)]:
            forwards, recomputes = r["block_forwards"], r["recomputes"]
            assert forwards == r["M"] * len(r["stages"]), r
            if SCHEDULES[schedule].split_backward:
                assert forwards <= recomputes <= 2 * forwards, r
            else:
                assert recomputes == forwards, r
        assert all(r["recomputes"] == 0 for r in by_config[(schedule, n, 0)])


def segments(events):
    out = []
    for e in events:
        if e[0] == "pair":
            out.append([])
        if out:
            out[-1].append(e)
    return out


@pytest.mark.parametrize("recompute", [0, 2])
def test_dualpipev_overlap_event_order(check, recompute):
    """Each OVERLAP_F_B pair: the backward half runs on a second thread; with recompute its recomputation is issued
    before the gradient receive is awaited; the forward's send follows its forward and precedes the backward's send,
    which follows the backward (the order the peer posted its receives)."""
    world, by_config = check
    pairs = recompute_then_wait = 0
    for r in by_config[("dualpipev", 4, recompute)]:
        for seg in segments(r["events"]):
            pairs += 1
            names = [e[0] for e in seg]
            idx = {name: names.index(name) for name in set(names)}
            threads = {e[0]: e[-1] for e in seg}
            assert threads["F_start"] == threads["F_done"] != threads["B_done"], seg
            assert idx["F_start"] < idx["F_done"], seg
            if recompute:
                assert "B_recompute" in idx, seg
                assert threads["B_recompute"] == threads["B_done"], seg
                if "B_wait_grad" in idx:
                    assert idx["B_recompute"] < idx["B_wait_grad"], seg
                    recompute_then_wait += 1
            else:
                assert "B_recompute" not in idx, seg
            if "B_wait_grad" in idx:
                assert idx["B_wait_grad"] < idx["B_grad_ready"] < idx["B_done"], seg
            if "F_send" in idx:
                assert idx["F_done"] < idx["F_send"], seg
            if "B_send" in idx:
                assert idx["B_done"] < idx["B_send"], seg
                assert "F_send" not in idx or idx["F_send"] < idx["B_send"], seg
    assert pairs > 0, "no OVERLAP_F_B pair ran"
    assert recompute_then_wait > 0 or not recompute, "no pair both recomputed and waited for a gradient"
