"""Cost model: each pipeline schedule simulated at real scale, in pure Python (no GPU, no process group).

    python -m mhc_backends.torch.pipeline.costmodel [--ranks 8 --microbatches 32 ...] [--png PATH] [--markdown]

The per-rank action order is torch's own: each multi-stage schedule class of `torch.distributed.pipelining` is built
on stand-in stage objects and its `pipeline_order` (F, B, I, W, OVERLAP_F_B per rank) is read; GPipe and 1F1B
follow the order of their runtime loops (`single_stage_order`). The simulation then gives every
action a duration and runs each rank's list in order: an action starts when its rank is free and its inputs exist.

    F(s, m)   after F(s-1, m) (+ link time if s-1 is on another rank)              duration f
    B(s, m)   after B/I(s+1, m) (+ link time) and F(s, m); the last stage after F   duration b + w (full backward)
    I(s, m)   like B                                                                duration b (input gradient)
    W(s, m)   after I(s, m)                                                         duration w (weight gradient)
    OVERLAP_F_B(F(s, m), B(s', m'))  the two halves share the GPU: each starts when its own input exists and the
              rank is free, the one whose input arrives first runs first; each half's output is sent when it ends

Link time = bytes / bandwidth + latency, bytes = b * T * n * C * itemsize per micro-batch and boundary: n times the
plain residual's (P Sec. 4.1). Transfers are not serialised on the link (no contention) and the MoE all-to-all is
not modelled. `Scale.paper_27b()` holds the default numbers (P Table 5's 27B model; the device numbers are
assumptions, stated in `Scale`): this is a plan, not a measurement, and every figure it prints is "simulated".
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from types import SimpleNamespace

from torch.distributed.pipelining import schedules as S

from .runner import SCHEDULES, rank_stages


@dataclass(frozen=True)
class Scale:
    layers: int = 60  # mHC layers: 30 blocks x (attention, FFN), P Table 5 27B
    dim: int = 2560  # C
    seq: int = 4096  # T; one sequence per micro-batch (b = 1)
    mb_rows: int = 1
    flops_per_token: float = 7.96e9  # forward: 2 x (4.14B active - 0.66B vocab) params + causal attention
    device_flops: float = 400e12  # assumed sustained bf16 FLOP/s per GPU (about 40 % of an H800's dense peak)
    itemsize: int = 2  # bf16 boundary activations
    link_bytes_per_s: float = 50e9  # assumed: one 400 Gb/s NIC per GPU, pipeline stages on different nodes
    link_latency_s: float = 10e-6
    mhc_overhead: float = 0.067  # n = 4 training-time overhead the paper reports (P Sec. 4.3), applied to f, b, w

    @classmethod
    def paper_27b(cls) -> Scale:
        return cls()

    def costs(self, n: int, stages: int) -> dict[str, float]:
        """Seconds per stage and micro-batch: f, b (input gradient), w (weight gradient), link."""
        f = self.flops_per_token * self.seq * self.mb_rows / self.device_flops / stages
        f *= 1.0 + (self.mhc_overhead if n > 1 else 0.0)
        link = self.mb_rows * self.seq * n * self.dim * self.itemsize / self.link_bytes_per_s + self.link_latency_s
        return {"f": f, "b": f, "w": f, "link": link}


def single_stage_order(name: str, ranks: int, microbatches: int) -> dict[int, list]:
    """GPipe and 1F1B run their own loops (their `pipeline_order` is only a sketch): the order those loops execute.
    1F1B: stage s runs min(M, P - s) warm-up forwards, then alternates backward / forward, then the rest."""
    order = {}
    for s in range(ranks):
        F = [S._Action(s, S.FORWARD, m) for m in range(microbatches)]
        B = [S._Action(s, S.FULL_BACKWARD, m) for m in range(microbatches)]
        if name == "gpipe":
            order[s] = F + B
            continue
        warm = min(microbatches, ranks - s)
        actions, f = F[:warm], warm
        for m in range(microbatches):
            actions.append(B[m])
            if f < microbatches:
                actions.append(F[f])
                f += 1
        order[s] = actions
    return order


def torch_order(name: str, ranks: int, microbatches: int) -> dict[int, list]:
    """Each rank's compute actions as torch's schedule class orders them (built on stand-in stages)."""
    spec = SCHEDULES[name]
    if spec.stages_per_rank == 1:
        return single_stage_order(name, ranks, microbatches)
    num = spec.stages_per_rank * ranks
    stand_ins = [SimpleNamespace(num_stages=num, group_size=ranks, group_rank=0, stage_index=s, submod=None,
                                 is_first=s == 0, is_last=s == num - 1) for s in rank_stages(name, 0, ranks)]
    sched = spec.cls(stand_ins[0] if spec.stages_per_rank == 1 else stand_ins, n_microbatches=microbatches,
                     loss_fn=lambda out, target: out)
    compute = (S.FORWARD, S.FULL_BACKWARD, S.BACKWARD_INPUT, S.BACKWARD_WEIGHT, S.OVERLAP_F_B)
    return {r: [a for a in actions if a is not None and a.computation_type in compute]
            for r, actions in sched.pipeline_order.items()}


def simulate(name: str, ranks: int, microbatches: int, costs: dict[str, float]):
    """(makespan, {rank: [(label, kind, start, end)]}) of one step."""
    order = torch_order(name, ranks, microbatches)
    num = SCHEDULES[name].stages_per_rank * ranks
    owner = {s: r for r in range(ranks) for s in rank_stages(name, r, ranks)}
    f, b, w, link = costs["f"], costs["b"], costs["w"], costs["link"]
    done: dict[tuple, float] = {}  # (kind, stage, mb) -> end time; kind F or G (input gradient available)
    free = dict.fromkeys(order, 0.0)
    pos = dict.fromkeys(order, 0)
    lanes: dict[int, list] = {r: [] for r in order}

    def ready(a) -> float | None:
        s, m, t = a.stage_index, a.microbatch_index, a.computation_type
        if t == S.FORWARD:
            if s == 0:
                return 0.0
            prev = done.get(("F", s - 1, m))
            return None if prev is None else prev + (link if owner[s - 1] != owner[s] else 0.0)
        if t in (S.FULL_BACKWARD, S.BACKWARD_INPUT):
            own = done.get(("F", s, m))
            if own is None:
                return None
            if s == num - 1:
                return own
            nxt = done.get(("G", s + 1, m))
            return None if nxt is None else max(own, nxt + (link if owner[s + 1] != owner[s] else 0.0))
        if t == S.BACKWARD_WEIGHT:
            return done.get(("I", s, m))
        raise ValueError(f"cost model: unexpected action {a}")

    def duration(a) -> float:
        return {S.FORWARD: f, S.FULL_BACKWARD: b + w, S.BACKWARD_INPUT: b, S.BACKWARD_WEIGHT: w}[a.computation_type]

    def finish(a, end: float) -> None:
        s, m, t = a.stage_index, a.microbatch_index, a.computation_type
        if t == S.FORWARD:
            done[("F", s, m)] = end
        elif t in (S.FULL_BACKWARD, S.BACKWARD_INPUT):
            done[("G", s, m)] = end
            done[("I", s, m)] = end

    remaining = sum(len(v) for v in order.values())
    while remaining:
        progress = False
        for r, actions in order.items():
            while pos[r] < len(actions):
                a = actions[pos[r]]
                subs = a.sub_actions if a.computation_type == S.OVERLAP_F_B else (a,)
                deps = [ready(x) for x in subs]
                if any(d is None for d in deps):
                    break
                kind = "FB" if a.computation_type == S.OVERLAP_F_B else a.computation_type.value
                for x, dep in sorted(zip(subs, deps), key=lambda pair: pair[1]):  # first ready, first run
                    start = max(free[r], dep)
                    free[r] = start + duration(x)
                    finish(x, free[r])
                    lanes[r].append((str(x), kind, start, free[r]))
                pos[r] += 1
                remaining -= 1
                progress = True
        if not progress:
            raise RuntimeError(f"cost model: {name} cannot make progress (a dependency is never met)")
    return max(free.values()), lanes


def table(scale: Scale, ranks: int, microbatches: int, streams=(1, 4)) -> list[dict]:
    rows = []
    for name, spec in SCHEDULES.items():
        for n in streams:
            costs = scale.costs(n, spec.stages_per_rank * ranks)
            span, lanes = simulate(name, ranks, microbatches, costs)
            span_free, _ = simulate(name, ranks, microbatches, {**costs, "link": 0.0})
            busy = [sum(e - s for _, _, s, e in lane) for lane in lanes.values()]
            rows.append({"schedule": name, "n": n, "stages": spec.stages_per_rank * ranks, "step_ms": span * 1e3,
                         "bubble": 1.0 - sum(busy) / (len(busy) * span), "link_ms": costs["link"] * 1e3,
                         "comm_exposed_ms": (span - span_free) * 1e3, "f_ms": costs["f"] * 1e3})
    return rows


def markdown(rows: list[dict], scale: Scale, ranks: int, microbatches: int) -> str:
    head = (f"Simulated (cost model, not measured): P Table 5's 27B mHC model, {scale.layers} mHC layers, C = "
            f"{scale.dim}, T = {scale.seq}, {ranks} pipeline ranks, {microbatches} micro-batches of {scale.mb_rows} "
            f"sequence; assumed {scale.device_flops / 1e12:.0f} TFLOP/s per GPU, {scale.link_bytes_per_s / 1e9:.0f} "
            f"GB/s links, bf16 boundaries, +{scale.mhc_overhead:.1%} compute at n = 4.\n\n")
    lines = ["| schedule | n | stages | f per stage (ms) | link per boundary (ms) | step (ms) | bubble | "
             "comm on critical path (ms) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['schedule']} | {r['n']} | {r['stages']} | {r['f_ms']:.2f} | {r['link_ms']:.2f} | "
                     f"{r['step_ms']:.0f} | {r['bubble']:.1%} | {r['comm_exposed_ms']:.1f} |")
    return head + "\n".join(lines)


def draw(path: str, scale: Scale, ranks: int, microbatches: int, n: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"F": "tab:blue", "B": "tab:orange", "I": "tab:orange", "W": "tab:green", "FB": "tab:purple"}
    fig, axes = plt.subplots(len(SCHEDULES), 1, figsize=(14, 2.0 + 1.1 * ranks * len(SCHEDULES) / 2.5),
                             sharex=True)
    for ax, (name, spec) in zip(axes, SCHEDULES.items()):
        costs = scale.costs(n, spec.stages_per_rank * ranks)
        span, lanes = simulate(name, ranks, microbatches, costs)
        for r, lane in lanes.items():
            for _, kind, s, e in lane:
                ax.broken_barh([(s * 1e3, (e - s) * 1e3)], (r - 0.4, 0.8), facecolors=colors.get(kind, "gray"),
                               edgecolors="white", linewidth=0.3)
        ax.set_yticks(range(ranks), [f"rank {r}" for r in range(ranks)])
        ax.invert_yaxis()
        ax.set_title(f"{name}: step {span * 1e3:.0f} ms (simulated, n = {n})", fontsize=9, loc="left")
    axes[-1].set_xlabel("ms")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()]
    fig.legend(handles, ["F", "B (full)", "I (input grad)", "W (weight grad)", "OVERLAP_F_B"], loc="upper right",
               ncol=5, fontsize=8)
    fig.suptitle(f"Pipeline schedules, cost-model simulation of the 27B mHC model ({ranks} ranks, {microbatches} "
                 f"micro-batches) - simulated, not measured", fontsize=10, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mhc_backends.torch.pipeline.costmodel", description=__doc__)
    p.add_argument("--ranks", type=int, default=8)
    p.add_argument("--microbatches", type=int, default=32)
    p.add_argument("--link-gbs", type=float, default=None, help="link bandwidth, GB/s")
    p.add_argument("--tflops", type=float, default=None, help="sustained TFLOP/s per GPU")
    p.add_argument("--png", default=None)
    args = p.parse_args(argv)
    scale = Scale.paper_27b()
    if args.link_gbs:
        scale = replace(scale, link_bytes_per_s=args.link_gbs * 1e9)
    if args.tflops:
        scale = replace(scale, device_flops=args.tflops * 1e12)
    print(markdown(table(scale, args.ranks, args.microbatches), scale, args.ranks, args.microbatches))
    if args.png:
        draw(args.png, scale, args.ranks, args.microbatches)
        print(f"\ntimeline: {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
