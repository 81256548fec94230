"""The backend `torch-pipeline`: the spec op `mhc_stack` run as a pipeline over worker processes.

The L layers are split over the stages of a named `torch.distributed.pipelining` schedule (`runner.SCHEDULES`), the
leading batch dims are flattened to rows and split into micro-batches, and each call is one pipeline step of the
workers (`stack.run_stack`): forward and VJP alike (the VJP's cotangent is the loss weight; a forward-only call uses
a zero one). Inputs are checked here, in the calling process, with the eager backend's `validate_stack`, so a bad call
never reaches the workers.

Options (factory arguments, else the environment, else the default):

    world_size      MHC_PIPELINE_WORLD_SIZE      2            worker processes (gloo on 127.0.0.1)
    schedule        MHC_PIPELINE_SCHEDULE        dualpipev    gpipe, 1f1b, interleaved-1f1b, zbv, dualpipev
    microbatches    MHC_PIPELINE_MICROBATCHES    the schedule's minimum (2 * world_size for zbv and dualpipev)
    recompute_every MHC_PIPELINE_RECOMPUTE       0            checkpointed blocks of that many layers (0: off;
                                                              reduced per call so that no block crosses a stage)

Rows are padded to a multiple of the micro-batch count with copies of row 0 and a zero cotangent (they add exact
zeros to every gradient) and dropped from the outputs. Workers start on the first call, are reused for every call
of this instance and stop at interpreter exit (`pool.WorkerPool`). Claimed: mhc_stack, float64 and float32, CPU.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mhc_spec.table import load

from ...base import Capabilities
from ..backend import TorchBackend
from ..mhc_stack import validate_stack
from .model import stage_bounds
from .runner import SCHEDULES, min_microbatches, num_stages

SPEC = load()
OP = "mhc_stack"
PARAMS = ("phi", "alpha", "b", "w_sub")


def _option(value, env: str, default, cast):
    if value is None:
        value = os.environ.get(env) or default
    try:
        return cast(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"torch-pipeline: {env.lower().removeprefix('mhc_pipeline_')} must be a {cast.__name__}, "
                         f"got {value!r}") from e


class PipelineBackend(TorchBackend):
    name = "torch-pipeline"
    op_functions = {}
    capabilities = Capabilities(ops=frozenset({OP}), dtypes=frozenset({"float64", "float32"}),
                                grad_ops=frozenset({OP}), devices=("cpu",))

    def __init__(self, world_size: int | None = None, schedule: str | None = None, microbatches: int | None = None,
                 recompute_every: int | None = None, timeout_s: float = 120.0):
        super().__init__("cpu")
        self.world_size = _option(world_size, "MHC_PIPELINE_WORLD_SIZE", 2, int)
        self.schedule = _option(schedule, "MHC_PIPELINE_SCHEDULE", "dualpipev", str)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"torch-pipeline: schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if self.world_size < 1:
            raise ValueError(f"torch-pipeline: world_size must be >= 1, got {self.world_size}")
        need = min_microbatches(self.schedule, self.world_size)
        self.microbatches = _option(microbatches, "MHC_PIPELINE_MICROBATCHES", need, int)
        if self.microbatches < need or self.microbatches % need:
            raise ValueError(f"torch-pipeline: schedule {self.schedule!r} on {self.world_size} ranks needs "
                             f"microbatches a multiple of {need}, got {self.microbatches}")
        self.recompute_every = _option(recompute_every, "MHC_PIPELINE_RECOMPUTE", 0, int)
        if self.recompute_every < 0:
            raise ValueError(f"torch-pipeline: recompute_every must be >= 0 (0: off), got {self.recompute_every}")
        self.timeout_s = timeout_s
        self._pool = None

    @property
    def device(self) -> str:
        return (f"cpu ({self.world_size} ranks, gloo, {self.schedule}, {self.microbatches} micro-batches"
                f"{f', recompute every {self.recompute_every}' if self.recompute_every else ''})")

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__, "schedule": self.schedule, "world_size": str(self.world_size)}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    # -- the op ---------------------------------------------------------------------------------------------------
    def _options(self, options: dict) -> dict:
        known = list(SPEC.op(OP).options)
        unknown = set(options) - set(known)
        if unknown:
            raise TypeError(f"{OP}: unknown options {sorted(unknown)}; options are {known}")
        return SPEC.op_options(OP, "paper", **options)

    def _recompute(self, L: int) -> int:
        """recompute_every reduced (gcd) so that no block crosses a stage of this L (the spec op takes any L)."""
        if not self.recompute_every:
            return 0
        starts = [lo for lo, _ in stage_bounds(L, num_stages(self.schedule, self.world_size))]
        return math.gcd(self.recompute_every, *starts) or self.recompute_every

    def _run(self, inputs: Sequence[Any], g, options: dict, want_grad: bool):
        x, phi, alpha, b, w_sub = inputs
        opts = self._options(options)
        L = validate_stack(x, phi, alpha, b, w_sub, **opts)
        lead, (n, C) = x.shape[:-2], x.shape[-2:]
        rows = int(np.prod(lead, dtype=np.int64))
        dtype = {torch.float64: "float64", torch.float32: "float32"}.get(x.dtype)
        if dtype is None:
            raise TypeError(f"{OP}: torch-pipeline computes float64 and float32, got x of dtype {x.dtype}")
        if rows == 0:
            zeros = {k: torch.zeros_like(t) for k, t in zip(PARAMS, (phi, alpha, b, w_sub))}
            return x.clone(), {"x": torch.zeros_like(x), **zeros}
        M = self.microbatches
        padded = -(-rows // M) * M
        xs = x.detach().reshape(rows, n, C).numpy()
        gs = np.zeros_like(xs) if g is None else g.detach().to(x.dtype).reshape(rows, n, C).numpy()
        if padded > rows:
            xs = np.concatenate([xs, np.repeat(xs[:1], padded - rows, axis=0)])
            gs = np.concatenate([gs, np.zeros((padded - rows, n, C), dtype=gs.dtype)])
        task = {"x": np.ascontiguousarray(xs), "g": np.ascontiguousarray(gs), "dtype": dtype, "options": opts,
                "schedule": self.schedule, "microbatches": M, "recompute_every": self._recompute(L),
                "want_grad": want_grad,
                **{k: t.detach().numpy() for k, t in zip(PARAMS, (phi, alpha, b, w_sub))}}
        if self._pool is None or not self._pool.alive:
            from .pool import WorkerPool

            self._pool = WorkerPool(self.world_size, self.timeout_s)
        answers = self._pool.run(task)
        y = next(a["y"] for a in answers if "y" in a)[:rows]
        out = torch.from_numpy(np.ascontiguousarray(y)).reshape(x.shape)
        if not want_grad:
            return out, None
        dx = next(a["dx"] for a in answers if "dx" in a)[:rows]
        grads = {"x": torch.from_numpy(np.ascontiguousarray(dx)).reshape(x.shape)}
        layers = {l: gl for a in answers for l, gl in a["layers"].items()}
        if sorted(layers) != list(range(L)):
            raise RuntimeError(f"torch-pipeline: the workers returned gradients of layers {sorted(layers)}, "
                               f"expected 0..{L - 1}")
        for k in PARAMS:
            grads[k] = torch.from_numpy(np.stack([layers[l][k] for l in range(L)]))
        return out, grads

    def mhc_stack(self, x, phi, alpha, b, w_sub, **options) -> torch.Tensor:
        """x_L (..., n, C) from x_0 (..., n, C); options as the spec op (defaults: the paper preset)."""
        return self._run((x, phi, alpha, b, w_sub), None, options, want_grad=False)[0]

    def vjp(self, op: str, inputs: Sequence[Any], cotangents: Sequence[Any], **options) -> dict[str, Any]:
        if op != OP:
            raise NotImplementedError(f"backend {self.name!r} implements no VJP for {op!r}")
        if len(inputs) != 5 or len(cotangents) != 1:
            raise ValueError(f"vjp({op!r}): expected 5 inputs (x, phi, alpha, b, w_sub) and 1 cotangent, got "
                             f"{len(inputs)} and {len(cotangents)}")
        g = cotangents[0]
        if g is not None and tuple(g.shape) != tuple(inputs[0].shape):
            raise ValueError(f"vjp({op!r}): the cotangent must have y's shape {tuple(inputs[0].shape)}, "
                             f"got {tuple(g.shape)}")
        return self._run(inputs, g, options, want_grad=True)[1]


def backend() -> PipelineBackend:
    return PipelineBackend()
