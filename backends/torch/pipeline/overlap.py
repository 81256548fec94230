"""DualPipeV's OVERLAP_F_B action: the paired forward (stage a, micro-batch i) and full backward (stage b, micro-batch
j) of one rank run concurrently, registered with `ScheduleDualPipeV.register_custom_function(OVERLAP_F_B, ...)`.

    main thread                                   second thread ("mhc-overlap-bwd")
    ---------------------------------------------------------------------------------------------------------------
    start the backward half ------------------->  GraphExecGroup:
    wait activation recv of (a, i)                  recompute (b, j)'s checkpointed blocks  (no gradient needed)
    forward (a, i), loss if a is last               wait gradient recv of (b, j)
    issue the send of (a, i)'s output               full backward (b, j) (reuses the recomputation: same group)
    join <------------------------------------------
    issue the send of (b, j)'s input gradient (or hand it to the local stage at the bottom of the V)

- The recompute is issued before the gradient receive is awaited: it depends only on the stage's saved block inputs,
  so it overlaps the gradient's transfer (P Sec. 4.3.3). `model.LMStage.recompute_now` triggers it through
  torch.utils.checkpoint's own unpack path inside the `GraphExecGroup` the backward then runs in.
- Sends: the lowered schedule would issue both halves' sends after the pair; here each is issued as soon as its
  tensor exists (the forward's while the backward still computes). The order stays forward-then-backward, the order
  in which the peer posted its receives (both may go to the same peer with the same tag and shape), and the schedule's
  own SEND actions for the pair are removed from `pipeline_order_with_comms` so nothing is sent twice.
- CUDA (not run: no GPU in this project's sessions): the whole backward half runs on a high-priority stream, which
  first waits for the main stream's earlier work; the main stream waits for it at the join. P Sec. 4.3.3 puts only
  the MLP layers' post_res kernels on that stream; that finer split is not implemented.
- Every step logs events (`Pipeline.stats.events`) whose order the tests assert.
"""

from __future__ import annotations

import threading
import time

import torch
from torch.distributed.pipelining import schedules as S
from torch.utils.checkpoint import GraphExecGroup


class OverlapFB:
    def __init__(self, pipe):
        self.pipe = pipe
        self.pending: list = []  # send works, waited at the end of the step
        self.cuda = pipe.stages[0].device.type == "cuda"
        self.stream = torch.cuda.Stream(priority=-1) if self.cuda else None
        self._strip_pair_sends()

    # -- schedule lowering ---------------------------------------------------------------------------------------
    def _pair_sends(self, action) -> list:
        to_rank = self.pipe.schedule.stage_index_to_group_rank
        last = self.pipe.num_stages - 1
        sends = []
        for a in action.sub_actions:
            s, mb = a.stage_index, a.microbatch_index
            if a.computation_type == S.FORWARD and s != last and to_rank[s + 1] != to_rank[s]:
                sends.append(S._Action(s, S.SEND_F, mb))
            elif a.computation_type in (S.FULL_BACKWARD, S.BACKWARD_INPUT) and s != 0 and to_rank[s - 1] != to_rank[s]:
                sends.append(S._Action(s, S.SEND_B, mb))
        return sends

    def _strip_pair_sends(self) -> None:
        order = self.pipe.schedule.pipeline_order_with_comms[self.pipe.rank]
        out, i = [], 0
        while i < len(order):
            action = order[i]
            out.append(action)
            i += 1
            if action.computation_type == S.OVERLAP_F_B:
                for send in self._pair_sends(action):
                    if i >= len(order) or order[i] != send:
                        raise RuntimeError(f"OVERLAP_F_B {action}: expected {send} right after it in the lowered "
                                           f"schedule, got {order[i] if i < len(order) else 'the end'}")
                    i += 1
        self.pipe.schedule.pipeline_order_with_comms[self.pipe.rank] = out

    # -- the action ----------------------------------------------------------------------------------------------
    def __call__(self, action, ctx) -> None:
        fwd, bwd = action.sub_actions
        if fwd.computation_type != S.FORWARD or bwd.computation_type != S.FULL_BACKWARD:
            raise RuntimeError(f"OVERLAP_F_B: expected (FORWARD, FULL_BACKWARD) sub-actions, got {action.sub_actions}")
        stats = self.pipe.stats
        stats.event("pair", fwd.stage_index, fwd.microbatch_index, bwd.stage_index, bwd.microbatch_index)
        errors: list[BaseException] = []
        if self.cuda:  # the backward half's inputs were produced on the main stream
            self.stream.wait_stream(torch.cuda.current_stream())
        thread = threading.Thread(target=self._backward_half, args=(bwd, ctx.schedule_ref, errors),
                                  name="mhc-overlap-bwd", daemon=True)
        thread.start()
        try:
            self._forward_half(fwd, ctx)
        finally:
            thread.join()
        if errors:
            raise errors[0]
        if self.cuda:
            torch.cuda.current_stream().wait_stream(self.stream)
        self._hand_over_gradient(bwd)

    def _wait(self, works) -> None:
        S._wait_batch_p2p(works)  # through the module attribute: `runner` times it

    def _send(self, ops, what: str, mb: int) -> None:
        self.pending.extend(op.op(op.tensor, group=op.group, tag=op.tag, group_dst=op.group_peer) for op in ops)
        self.pipe.stats.event(what, mb)

    def _forward_half(self, a, ctx) -> None:
        pipe, sched, mb = self.pipe, ctx.schedule_ref, a.microbatch_index
        stage = pipe.stage_by_index(a.stage_index)
        if not stage.is_first and a.stage_index - 1 not in pipe.stage_ids:
            self._wait(sched.fwd_recv_ops.pop((a.stage_index, mb)))
        pipe.stats.event("F_start", mb)
        out = stage.forward_one_chunk(mb, ctx.arg_mbs[mb], ctx.kwarg_mbs[mb], save_forward_output=True)
        sched._maybe_compute_loss(stage, out, ctx.target_mbs, mb)
        pipe.stats.event("F_done", mb)
        if a.stage_index + 1 in pipe.stage_ids:  # the bottom of the V: the next stage is on this rank
            pipe.stage_by_index(a.stage_index + 1).set_local_fwd_input(out, mb)
        elif not stage.is_last:
            self._send(stage.get_fwd_send_ops(mb), "F_send", mb)

    def _backward_half(self, b, sched, errors) -> None:
        try:
            if self.cuda:
                with torch.cuda.stream(self.stream):
                    self._backward(b, sched)
            else:
                self._backward(b, sched)
        except BaseException as e:  # noqa: BLE001 (re-raised in the main thread)
            errors.append(e)

    def _backward(self, b, sched) -> None:
        pipe, mb = self.pipe, b.microbatch_index
        stage = pipe.stage_by_index(b.stage_index)
        with GraphExecGroup():
            module = stage.submod
            if mb in getattr(module, "prefetch_nodes", {}):
                t0 = time.perf_counter()
                blocks = module.recompute_now(mb)
                pipe.stats.add("compute", t0, time.perf_counter())
                pipe.stats.event("B_recompute", mb, blocks)
            if not stage.is_last and b.stage_index + 1 not in pipe.stage_ids:
                pipe.stats.event("B_wait_grad", mb)
                self._wait(sched.bwd_recv_ops.pop((b.stage_index, mb)))
                pipe.stats.event("B_grad_ready", mb)
            loss = sched._maybe_get_loss(stage, mb)
            sched.backward_counter[b.stage_index] += 1
            last = sched.backward_counter[b.stage_index] == pipe.microbatches
            stage.backward_one_chunk(mb, loss=loss, full_backward=True, last_backward=last)
        pipe.stats.event("B_done", mb)

    def _hand_over_gradient(self, b) -> None:
        pipe, mb = self.pipe, b.microbatch_index
        stage = pipe.stage_by_index(b.stage_index)
        if b.stage_index - 1 in pipe.stage_ids:
            pipe.stage_by_index(b.stage_index - 1).set_local_bwd_input(stage.get_local_bwd_output(mb), mb)
        elif not stage.is_first:
            self._send(stage.get_bwd_send_ops(mb), "B_send", mb)

    def finish(self) -> None:
        """Wait for the sends issued by the pairs (at the end of the step, as the runtime does with its own)."""
        works, self.pending = self.pending, []
        self._wait(works)
