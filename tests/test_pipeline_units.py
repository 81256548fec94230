"""Single-process parts of the pipeline runner: stage splitting, recompute alignment, the early recompute used by the
DualPipeV overlap, backend option checks, and the cost model against closed-form pipeline bubbles."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch.utils.checkpoint import GraphExecGroup  # noqa: E402

from mhc_backends.torch.pipeline.costmodel import Scale, simulate, table, torch_order  # noqa: E402
from mhc_backends.torch.pipeline.model import (  # noqa: E402
    LMConfig,
    LMStage,
    RecomputeCounter,
    build_lm,
    lm_loss,
    stage_bounds,
)
from mhc_backends.torch.pipeline.runner import SCHEDULES, rank_stages, stage_rank  # noqa: E402

CFG = LMConfig(vocab=16, dim=8, n=4, blocks=3, heads=2, seq=4)


def tokens(rows=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, CFG.vocab, (rows, CFG.seq + 1), generator=g)
    return t[:, :-1], t[:, 1:]


def test_stage_bounds_cover_the_layers_and_reject_crossing_recompute_blocks():
    assert stage_bounds(6, 4) == [(0, 2), (2, 4), (4, 5), (5, 6)]
    assert stage_bounds(8, 4, recompute_every=2) == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert stage_bounds(2, 4) == [(0, 1), (1, 2), (2, 2), (2, 2)]  # fewer layers than stages: empty stages
    with pytest.raises(ValueError, match="cross the stage boundaries at layers"):
        stage_bounds(6, 2, recompute_every=2)  # stages [0, 3) [3, 6): the block [2, 4) crosses layer 3


@pytest.mark.parametrize("num_stages", [1, 3, 6, 8])
def test_stages_chained_equal_the_model_and_hand_over_contiguous_states(num_stages):
    lm = build_lm(CFG, seed=3, dtype=torch.float64)
    tok, _ = tokens()
    x = tok
    for s in range(num_stages):
        y = LMStage(lm, s, num_stages)(x)
        if s < num_stages - 1:
            assert y.shape == (2, CFG.seq, CFG.n, CFG.dim) and y.is_contiguous() and y is not x
        x = y
    assert torch.equal(x, lm(tok))


def test_early_recompute_is_reused_by_the_backward():
    """recompute_now inside a GraphExecGroup runs each checkpointed block once; the backward in the same group does
    not recompute again, and the gradients are bitwise those of the plain model."""
    lm = build_lm(CFG, seed=5, dtype=torch.float64)
    tok, tgt = tokens()
    lm_loss(lm(tok), tgt).backward()
    ref = {k: p.grad.clone() for k, p in lm.named_parameters()}
    lm.zero_grad(set_to_none=True)
    counter = RecomputeCounter()
    stage = LMStage(lm, 0, 1, recompute_every=2, counter=counter)
    stage.current_mb = 0
    loss = lm_loss(stage(tok), tgt)
    assert counter.forwards == 3 and counter.recomputes == 0  # 6 layers in blocks of 2
    with GraphExecGroup():
        assert stage.recompute_now(0) == 3
        assert counter.recomputes == 3
        loss.backward()
    assert counter.recomputes == 3
    for k, p in lm.named_parameters():
        assert torch.equal(p.grad, ref[k]), k


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_layouts(name):
    P = 4
    held = sorted(s for r in range(P) for s in rank_stages(name, r, P))
    assert held == list(range(SCHEDULES[name].stages_per_rank * P))
    if SCHEDULES[name].layout == "v":
        assert rank_stages(name, 0, P) == [0, 2 * P - 1] and stage_rank(name, P, P) == P - 1


def test_backend_rejects_bad_options_and_bad_calls_without_starting_workers():
    from mhc_backends.torch.pipeline.backend import PipelineBackend

    with pytest.raises(ValueError, match="schedule must be one of"):
        PipelineBackend(schedule="zigzag")
    with pytest.raises(ValueError, match="multiple of 4"):
        PipelineBackend(world_size=2, schedule="dualpipev", microbatches=6)
    be = PipelineBackend(world_size=2, schedule="1f1b", microbatches=2)
    x = torch.ones(3, 2, 4, dtype=torch.float64)
    with pytest.raises(ValueError):
        be.mhc_stack(x, torch.zeros(1, 8, 7, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64),
                     torch.zeros(1, 8, dtype=torch.float64), torch.zeros(1, 4, 4, dtype=torch.float64))
    assert be._pool is None


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_cost_model_matches_closed_form_bubbles(name):
    """Unit costs f = b = w = 1 and free links: GPipe and 1F1B take (M + P - 1)(f + b + w), interleaved 1F1B its
    work plus (P - 1)(f + b + w); the zero-bubble V schedules less than that; every torch action runs once."""
    P, M = 4, 8
    order = torch_order(name, P, M)
    span, lanes = simulate(name, P, M, {"f": 1.0, "b": 1.0, "w": 1.0, "link": 0.0})
    count = sum(len(a.sub_actions) if a.sub_actions else 1 for acts in order.values() for a in acts)
    assert sum(len(lane) for lane in lanes.values()) == count
    work = 3.0 * M * SCHEDULES[name].stages_per_rank
    assert span >= work
    if name in ("gpipe", "1f1b"):
        assert span == (M + P - 1) * 3.0
    elif name == "interleaved-1f1b":
        assert span == work + (P - 1) * 3.0
    else:
        assert span < work + (P - 1) * 3.0


def test_cost_model_n4_moves_four_times_the_bytes():
    rows = {(r["schedule"], r["n"]): r for r in table(Scale.paper_27b(), ranks=4, microbatches=8)}
    s = Scale.paper_27b()
    for name in SCHEDULES:
        one, four = rows[(name, 1)], rows[(name, 4)]
        bytes_ms = s.mb_rows * s.seq * s.dim * s.itemsize / s.link_bytes_per_s * 1e3
        assert four["link_ms"] - one["link_ms"] == pytest.approx(3 * bytes_ms)
        assert four["step_ms"] > one["step_ms"]
