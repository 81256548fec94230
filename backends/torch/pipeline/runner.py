"""One rank's part of a pipeline run on `torch.distributed.pipelining`: stages, a schedule by name, measurement.

    pipe = Pipeline(make_stage, rank, world, "dualpipev", microbatches=8, loss_fn=lm_loss, io=lm_stage_io(...))
    losses = pipe.step(tokens, target=targets)          # every rank calls step; inputs/targets only where needed

`make_stage(stage_index, num_stages)` returns the nn.Module of a stage (e.g. `model.LMStage`), `io(stage_index,
num_stages)` example (input, output) tensors of one micro-batch (static stage metadata). The schedule decides which
ranks hold which stages:

    name               torch class                    layout  stages/rank  backward
    gpipe              ScheduleGPipe                  loop    1            full
    1f1b               Schedule1F1B                   loop    1            full
    interleaved-1f1b   ScheduleInterleaved1F1B        loop    2            full
    zbv                ScheduleZBVZeroBubble          v       2            split input (I) / weight (W)
    dualpipev          ScheduleDualPipeV              v       2            OVERLAP_F_B pairs + I/W

Engine constraints designed around (torch 2.13): the zero-bubble schedules refuse stage modules that were
`torch.compile`d (we never compile stages); only non-reentrant checkpointing works with the split backward (the
stages use it); with the split backward every `autograd.grad` call of the weight pass is a new graph task and
recomputes a checkpointed block again, so the weight pass runs inside one `GraphExecGroup` (a custom BACKWARD_WEIGHT
function, `group_weight_pass=True`), which leaves 2 recomputations per block and micro-batch (input pass + weight
pass) instead of 1 + #parameter groups; nothing attaches hooks to the stages' receive buffers (reused across steps).

Measurement (`Pipeline.stats`, per rank and step): compute intervals (stage forward / backward / weight calls, any
thread), blocked intervals (waits on P2P work), bytes sent per boundary and direction, recomputations.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.distributed.pipelining import PipelineStage
from torch.distributed.pipelining import schedules as S
from torch.utils.checkpoint import GraphExecGroup


@dataclass(frozen=True)
class ScheduleSpec:
    cls: type
    layout: str  # "loop" or "v"
    stages_per_rank: int
    split_backward: bool


SCHEDULES: dict[str, ScheduleSpec] = {
    "gpipe": ScheduleSpec(S.ScheduleGPipe, "loop", 1, False),
    "1f1b": ScheduleSpec(S.Schedule1F1B, "loop", 1, False),
    "interleaved-1f1b": ScheduleSpec(S.ScheduleInterleaved1F1B, "loop", 2, False),
    "zbv": ScheduleSpec(S.ScheduleZBVZeroBubble, "v", 2, True),
    "dualpipev": ScheduleSpec(S.ScheduleDualPipeV, "v", 2, True),
}


def schedule_spec(name: str) -> ScheduleSpec:
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {name!r}")
    return SCHEDULES[name]


def num_stages(name: str, world: int) -> int:
    return schedule_spec(name).stages_per_rank * world


def rank_stages(name: str, rank: int, world: int) -> list[int]:
    """The stage indices rank `rank` holds: loop layout r, r + P, ...; V layout r and 2P - 1 - r."""
    spec = schedule_spec(name)
    if spec.layout == "v":
        return [rank, 2 * world - 1 - rank]
    return [rank + k * world for k in range(spec.stages_per_rank)]


def stage_rank(name: str, stage: int, world: int) -> int:
    for r in range(world):
        if stage in rank_stages(name, r, world):
            return r
    raise ValueError(f"stage {stage} is not in schedule {name!r} with {world} ranks")


def min_microbatches(name: str, world: int) -> int:
    """The smallest micro-batch count the torch schedule accepts (a multiple of it is always accepted)."""
    if name == "interleaved-1f1b":
        return world  # n_microbatches % pp_group_size == 0
    if name in ("zbv", "dualpipev"):
        return 2 * world  # at least as many micro-batches as stages
    return 1


# -- measurement -------------------------------------------------------------------------------------------------
@dataclass
class StepStats:
    """Per rank, one step: intervals (kind, start, end) with kind "compute" or "blocked", bytes per
    (boundary stage s -> s+1, "fwd"/"bwd"), sends per boundary, the recompute count and the overlap event log."""

    intervals: list = field(default_factory=list)
    bytes: dict = field(default_factory=lambda: defaultdict(int))
    sends: dict = field(default_factory=lambda: defaultdict(int))
    events: list = field(default_factory=list)
    wall: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, t0: float, t1: float) -> None:
        with self.lock:
            self.intervals.append((kind, t0, t1))

    def event(self, *what) -> None:
        with self.lock:
            self.events.append((time.perf_counter(), threading.get_ident(), *what))

    def summary(self) -> dict:
        """Seconds of compute, of blocked-in-wait (not overlapping compute) and idle (neither), bubble fraction."""
        compute = _union([(a, b) for k, a, b in self.intervals if k == "compute"])
        busy = _union([(a, b) for _, a, b in self.intervals])
        c, u = _length(compute), _length(busy)
        return {"wall_s": self.wall, "compute_s": c, "blocked_s": u - c, "idle_s": max(self.wall - u, 0.0),
                "bubble": 1.0 - c / self.wall if self.wall > 0 else 0.0}


def _union(spans):
    out = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def _length(spans) -> float:
    return sum(b - a for a, b in spans)


class MeasuredStage(PipelineStage):
    """A PipelineStage that times its compute calls and counts the bytes of every send it hands to the schedule."""

    stats: StepStats | None = None

    def _timed(self, fn, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            if self.stats is not None:
                self.stats.add("compute", t0, time.perf_counter())

    def forward_one_chunk(self, fwd_chunk_id, *args, **kwargs):
        if hasattr(self.submod, "current_mb"):  # lets the module key its recompute bookkeeping by micro-batch
            self.submod.current_mb = fwd_chunk_id
        try:
            return self._timed(super().forward_one_chunk, fwd_chunk_id, *args, **kwargs)
        finally:
            if hasattr(self.submod, "current_mb"):
                self.submod.current_mb = None

    def backward_one_chunk(self, *args, **kwargs):
        return self._timed(super().backward_one_chunk, *args, **kwargs)

    def backward_weight_one_chunk(self, *args, **kwargs):
        return self._timed(super().backward_weight_one_chunk, *args, **kwargs)

    def _count(self, ops, boundary: int, direction: str):
        if self.stats is not None:
            with self.stats.lock:
                for op in ops:
                    self.stats.bytes[(boundary, direction)] += op.tensor.numel() * op.tensor.element_size()
                    self.stats.sends[(boundary, direction)] += 1
        return ops

    def get_fwd_send_ops(self, fwd_chunk_id: int):
        return self._count(super().get_fwd_send_ops(fwd_chunk_id), self.stage_index, "fwd")

    def get_bwd_send_ops(self, bwd_chunk_id: int):
        return self._count(super().get_bwd_send_ops(bwd_chunk_id), self.stage_index - 1, "bwd")


@contextmanager
def _timed_waits(stats: StepStats):
    """Time every wait the schedules do on P2P work (they all go through `schedules._wait_batch_p2p`)."""
    original = S._wait_batch_p2p

    def wait(work):
        t0 = time.perf_counter()
        try:
            original(work)
        finally:
            stats.add("blocked", t0, time.perf_counter())

    S._wait_batch_p2p = wait
    try:
        yield
    finally:
        S._wait_batch_p2p = original


# -- the pipeline ------------------------------------------------------------------------------------------------
class Pipeline:
    """This rank's stages and the named schedule (see the module docstring)."""

    def __init__(self, make_stage: Callable[[int, int], torch.nn.Module], rank: int, world: int, schedule: str,
                 microbatches: int, loss_fn: Callable, io: Callable[[int, int], tuple], *,
                 device: torch.device | str = "cpu",
                 group: dist.ProcessGroup | None = None, scale_grads: bool = True, overlap: bool = True,
                 group_weight_pass: bool = True):
        spec = schedule_spec(schedule)
        need = min_microbatches(schedule, world)
        if microbatches < need or (schedule == "interleaved-1f1b" and microbatches % world):
            raise ValueError(f"schedule {schedule!r} with {world} ranks needs microbatches >= {need}"
                             f"{' and a multiple of it' if schedule == 'interleaved-1f1b' else ''}, "
                             f"got {microbatches}")
        self.name, self.rank, self.world, self.microbatches = schedule, rank, world, microbatches
        self.num_stages = num_stages(schedule, world)
        self.stage_ids = rank_stages(schedule, rank, world)
        device = torch.device(device)
        self.modules = [make_stage(s, self.num_stages) for s in self.stage_ids]
        # static metadata (no shape-inference forward on uninitialised tensors): io(stage, num_stages) gives one
        # micro-batch's example input and output of the stage
        self.stages = [MeasuredStage(m, s, self.num_stages, device, *io(s, self.num_stages), group=group)
                       for m, s in zip(self.modules, self.stage_ids)]
        self.has_first = 0 in self.stage_ids
        self.has_last = self.num_stages - 1 in self.stage_ids
        stages = self.stages[0] if spec.stages_per_rank == 1 else self.stages
        self.schedule = spec.cls(stages, n_microbatches=microbatches, loss_fn=loss_fn, scale_grads=scale_grads)
        self.stats = StepStats()
        self.overlap = None
        if spec.split_backward and group_weight_pass:
            self.schedule.register_custom_function(S.BACKWARD_WEIGHT, self._weight_pass)
        if schedule == "dualpipev" and overlap:
            from .overlap import OverlapFB

            self.overlap = OverlapFB(self)
            self.schedule.register_custom_function(S.OVERLAP_F_B, self.overlap)

    def stage_by_index(self, index: int) -> MeasuredStage:
        for s in self.stages:
            if s.stage_index == index:
                return s
        raise KeyError(f"rank {self.rank} does not hold stage {index}")

    def _weight_pass(self, action, ctx) -> None:
        """BACKWARD_WEIGHT as the runtime does it, inside one GraphExecGroup (one recomputation for the pass)."""
        sched = ctx.schedule_ref
        stage = self.stage_by_index(action.stage_index)
        sched.backward_counter[action.stage_index] += 1
        last = sched.backward_counter[action.stage_index] == self.microbatches
        with GraphExecGroup():
            stage.backward_weight_one_chunk(action.microbatch_index, last_backward=last)

    def step(self, *args, target=None) -> list[torch.Tensor] | None:
        """One training step over `microbatches` micro-batches (args are split along dim 0 on the first stage's
        rank, target on the last stage's). Returns the per-micro-batch losses on the last stage's rank, else None;
        `self.output` is then the merged last-stage output."""
        self.stats = StepStats()
        for stage, module in zip(self.stages, self.modules):
            stage.stats = self.stats
            if hasattr(module, "reset_step"):
                module.reset_step()
        losses: list | None = [] if self.has_last else None
        kwargs = {"target": target, "losses": losses} if self.has_last else {}
        t0 = time.perf_counter()
        with _timed_waits(self.stats):
            self.output = self.schedule.step(*(args if self.has_first else ()), **kwargs)
            if self.overlap is not None:
                self.overlap.finish()
        self.stats.wall = time.perf_counter() - t0
        return losses
