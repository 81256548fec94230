"""Train the small mHC LM with a pipeline schedule for a few steps on generated tokens (the launcher):

    torchrun --nproc-per-node 2 -m mhc_backends.torch.pipeline.train --schedule dualpipev --steps 5

Every rank builds the same model (seed), keeps its stages and trains them with AdamW; the rank holding the last
stage prints the loss of every step. The data is learnable on purpose: each sequence counts up modulo the vocabulary
from a random start, so the loss must fall. At the end each rank prints its measured compute / blocked-in-wait / idle
time, bubble fraction and bytes per stage boundary, and checks the bytes: b*T*n*C*itemsize per micro-batch, each way.

Failure handling: a process-group timeout (--pg-timeout) turns a lost peer into an error instead of a hang (gloo
also notices a closed connection at once), an overall --deadline ends a stuck run, SIGTERM from torchrun (sent to the
surviving ranks when one dies) prints a clear message. --fail-rank/--fail-step make one rank kill itself (SIGKILL)
at a step, for the failure test.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

import torch

from . import distributed
from .model import LMConfig, LMStage, RecomputeCounter, build_lm, lm_loss, lm_stage_io
from .runner import SCHEDULES, Pipeline, min_microbatches


def generated_batch(cfg: LMConfig, rows: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    start = torch.randint(0, cfg.vocab, (rows, 1), generator=g)
    seq = (start + torch.arange(cfg.seq + 1)) % cfg.vocab  # (rows, T + 1)
    return seq[:, :-1].contiguous(), seq[:, 1:].contiguous()


def parse(argv=None):
    p = argparse.ArgumentParser(prog="torchrun --nproc-per-node P -m mhc_backends.torch.pipeline.train",
                                description=__doc__.split("\n")[0])
    p.add_argument("--schedule", default="dualpipev", choices=list(SCHEDULES))
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--microbatches", type=int, default=None, help="default: the schedule's minimum x 2")
    p.add_argument("--mb-rows", type=int, default=2, help="sequences per micro-batch")
    p.add_argument("--n", type=int, default=4, help="residual streams")
    p.add_argument("--dim", type=int, default=32, help="C, channels per stream")
    p.add_argument("--blocks", type=int, default=None, help="Transformer blocks (default: one per stage)")
    p.add_argument("--seq", type=int, default=16)
    p.add_argument("--vocab", type=int, default=64)
    p.add_argument("--recompute", type=int, default=0, help="recompute blocks of this many MHC layers (0: off)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cuda: one GPU per rank (LOCAL_RANK) and NCCL; not run in this project (no GPU)")
    p.add_argument("--pg-timeout", type=float, default=30.0, help="process-group timeout, seconds")
    p.add_argument("--deadline", type=float, default=600.0, help="overall deadline, seconds")
    p.add_argument("--fail-rank", type=int, default=None)
    p.add_argument("--fail-step", type=int, default=1)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    deadline = distributed.Deadline(args.deadline, "training")
    distributed.on_termination()
    device = torch.device("cpu")
    if args.device == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    rank, world = distributed.init(timeout_s=args.pg_timeout, backend="nccl" if device.type == "cuda" else "gloo")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    stages = SCHEDULES[args.schedule].stages_per_rank * world
    M = args.microbatches or 2 * min_microbatches(args.schedule, world)
    cfg = LMConfig(vocab=args.vocab, dim=args.dim, n=args.n, blocks=args.blocks or stages, seq=args.seq,
                   heads=max(1, args.dim // 16))
    lm = build_lm(cfg, seed=0).to(device)
    counter = RecomputeCounter()
    pipe = Pipeline(lambda s, ns: LMStage(lm, s, ns, args.recompute, counter), rank, world, args.schedule, M, lm_loss,
                    lm_stage_io(cfg, args.mb_rows, device=device), device=device)
    params = [p for m in pipe.modules for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr)
    if rank == 0:
        print(f"mHC LM: {cfg.layers} MHC layers, n={cfg.n}, C={cfg.dim}, T={cfg.seq}, vocab={cfg.vocab}; schedule "
              f"{args.schedule} on {world} ranks x {stages // world} stages, {M} micro-batches of {args.mb_rows} "
              f"sequences, recompute_every={args.recompute}", flush=True)
    try:
        for step in range(args.steps):
            if args.fail_rank == rank and step == args.fail_step:
                print(f"[rank {rank}] killing itself (SIGKILL) at step {step}, as asked", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            tokens, targets = (t.to(device) for t in generated_batch(cfg, M * args.mb_rows, step))
            opt.zero_grad(set_to_none=True)
            counter.reset()
            t0 = time.perf_counter()
            losses = pipe.step(tokens, target=targets)
            opt.step()
            if losses is not None:
                loss = torch.stack([x.detach() for x in losses]).mean().item()
                print(f"step {step} loss {loss:.4f} ({time.perf_counter() - t0:.2f} s)", flush=True)
    except Exception as e:  # noqa: BLE001 (a peer's failure surfaces here as a gloo error or a timeout)
        print(f"[rank {rank}] ERROR: pipeline step failed ({type(e).__name__}: {str(e).splitlines()[0][:300]}); "
              f"a peer rank probably died; exiting", file=sys.stderr, flush=True)
        os._exit(1)
    report(pipe, cfg, args, counter, rank, world)
    torch.distributed.destroy_process_group()
    deadline.cancel()
    return 0


def report(pipe, cfg, args, counter, rank, world) -> None:
    """Per-rank measurements of the last step, printed in rank order; the boundary bytes are asserted."""
    expected = pipe.microbatches * args.mb_rows * cfg.seq * cfg.n * cfg.dim * 4  # float32
    bad = {k: v for k, v in pipe.stats.bytes.items() if v != expected}
    s = pipe.stats.summary()
    line = (f"[rank {rank}] stages {pipe.stage_ids}: compute {s['compute_s']:.3f} s, blocked {s['blocked_s']:.3f} s, "
            f"idle {s['idle_s']:.3f} s of {s['wall_s']:.3f} s (bubble {s['bubble']:.2f}); recomputes "
            f"{counter.recomputes} for {counter.forwards} block forwards; bytes sent "
            + ", ".join(f"{b}|{b + 1} {d} {v}" for (b, d), v in sorted(pipe.stats.bytes.items()))
            + f" (expected {expected} = M*b*T*n*C*4 each)")
    lines = [None] * world
    torch.distributed.all_gather_object(lines, line)
    if rank == 0:
        print("\n".join(lines), flush=True)
    if bad:
        raise AssertionError(f"[rank {rank}] bytes per boundary {bad} != {expected}")


if __name__ == "__main__":
    sys.exit(main())
