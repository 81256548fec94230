"""Equivalence check: every schedule of the pipeline vs a single-process run of the same model on the same
micro-batches, for several configurations in one process-group launch (the test suite runs it; so can you):

    torchrun --nproc-per-node 2 -m mhc_backends.torch.pipeline.check --out /tmp/check.json [--schedules a,b]

Each rank builds the whole model with the same seed, computes the single-process oracle (per micro-batch forward and
backward in micro-batch order, gradients divided by M, as the schedules' scale_grads does), runs the pipeline on a
second copy and compares the loss of every micro-batch and the gradient of every parameter its stages own
(bitwise equal, and the max abs difference). It also checks that every parameter is owned by exactly one rank, the
bytes sent per boundary and direction (== M * b*T*n*C*itemsize), counts recomputations, and keeps DualPipeV's
overlap event log. Rank 0 writes the gathered results as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.distributed as dist

from . import distributed
from .model import LMConfig, LMStage, RecomputeCounter, build_lm, lm_loss, lm_stage_io
from .runner import SCHEDULES, Pipeline


def batch(cfg: LMConfig, rows: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, cfg.vocab, (rows, cfg.seq + 1), generator=g)
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


def oracle(cfg, dtype, tokens, targets, M):
    lm = build_lm(cfg, seed=1, dtype=dtype)
    losses = []
    for tok, tgt in zip(tokens.chunk(M), targets.chunk(M)):
        loss = lm_loss(lm(tok), tgt)
        loss.backward()
        losses.append(loss.detach())
    for p in lm.parameters():
        p.grad.div_(M)
    return losses, {k: p.grad for k, p in lm.named_parameters()}


def run_config(rank, world, schedule, n, recompute, mb_rows=1, dtype=torch.float64, overlap=True,
               group_weight_pass=True) -> dict:
    stages = SCHEDULES[schedule].stages_per_rank * world
    cfg = LMConfig(vocab=16, dim=8, n=n, blocks=stages, heads=2, seq=4)  # 2 MHC layers per stage (V, interleaved)
    M = 2 * world
    tokens, targets = batch(cfg, M * mb_rows, seed=7)
    ref_losses, ref_grads = oracle(cfg, dtype, tokens, targets, M)

    lm = build_lm(cfg, seed=1, dtype=dtype)
    counter = RecomputeCounter()
    pipe = Pipeline(lambda s, ns: LMStage(lm, s, ns, recompute, counter), rank, world, schedule, M, lm_loss,
                    lm_stage_io(cfg, mb_rows, dtype), overlap=overlap, group_weight_pass=group_weight_pass)
    losses = pipe.step(tokens, target=targets)

    owned = {id(p) for m in pipe.modules for p in m.parameters()}
    names = [k for k, _ in lm.named_parameters()]
    flags = torch.tensor([1 if id(p) in owned else 0 for _, p in lm.named_parameters()])
    dist.all_reduce(flags)
    grads = {}
    for k, p in lm.named_parameters():
        if id(p) not in owned:
            continue
        if p.grad is None:
            grads[k] = {"missing": True}
            continue
        diff = (p.grad - ref_grads[k]).abs().max().item()
        grads[k] = {"bitwise": bool(torch.equal(p.grad, ref_grads[k])), "max_abs": diff}
    loss_cmp = None
    if losses is not None:
        loss_cmp = {"bitwise": all(torch.equal(a.detach(), b) for a, b in zip(losses, ref_losses)),
                    "max_abs": max((a.detach() - b).abs().item() for a, b in zip(losses, ref_losses)),
                    "count": len(losses)}
    itemsize = torch.empty((), dtype=dtype).element_size()
    expected_bytes = M * mb_rows * cfg.seq * n * cfg.dim * itemsize
    stats = pipe.stats
    return {
        "schedule": schedule, "world": world, "rank": rank, "n": n, "recompute": recompute, "M": M,
        "group_weight_pass": group_weight_pass,
        "stages": pipe.stage_ids, "layers_per_stage": [m.bounds for m in pipe.modules],
        "owners": dict(zip(names, flags.tolist())), "grads": grads, "loss": loss_cmp,
        "bytes": {f"{b}:{d}": v for (b, d), v in sorted(stats.bytes.items())},
        "sends": {f"{b}:{d}": v for (b, d), v in sorted(stats.sends.items())},
        "expected_bytes_per_boundary": expected_bytes,
        "recomputes": counter.recomputes, "block_forwards": counter.forwards,
        "events": [list(e[2:]) + [e[1]] for e in stats.events],
        "timing": stats.summary(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mhc_backends.torch.pipeline.check", description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--schedules", default=",".join(SCHEDULES))
    parser.add_argument("--streams", default="1,4")
    parser.add_argument("--recompute", default="0,2")
    parser.add_argument("--deadline", type=float, default=360.0)
    parser.add_argument("--ungrouped-weight-pass", action="store_true",
                        help="run the split backward's weight pass without GraphExecGroup (to count recomputations)")
    args = parser.parse_args(argv)
    deadline = distributed.Deadline(args.deadline, "pipeline equivalence check")
    distributed.on_termination()
    rank, world = distributed.init(timeout_s=60.0)
    torch.set_num_threads(1)
    results = []
    for schedule in args.schedules.split(","):
        for n in map(int, args.streams.split(",")):
            for recompute in map(int, args.recompute.split(",")):
                results.append(run_config(rank, world, schedule, n, recompute,
                                          group_weight_pass=not args.ungrouped_weight_pass))
    gathered = [None] * world
    dist.all_gather_object(gathered, results)
    if rank == 0:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump([r for per_rank in gathered for r in per_rank], f, indent=1)
    dist.destroy_process_group()
    deadline.cancel()
    return 0


if __name__ == "__main__":
    sys.exit(main())
