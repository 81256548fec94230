"""The spec op `mhc_stack` as a pipeline: one worker's part of one call.

    x (N, n, C) --split into M micro-batches (rows)--> stage 0: layers [l0, l1) --> ... --> last stage --> y (N, n, C)

Layer l holds phi[l], alpha[l], b[l], w_sub[l] as its own Parameters and computes `mhc_layer` (the probe sublayer).
The VJP with cotangent g is the pipeline's training step with the loss sum(y * g) per micro-batch and unscaled
gradients (scale_grads=False): parameter gradients are the sums over micro-batches, dL/dx accumulates in x.grad
through the schedule's split of x (on the rank holding stage 0). A forward-only call runs the same step with g = 0.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..mhc_layer import mhc_layer_unchecked
from .model import BlockStage, RecomputeCounter, stage_bounds
from .runner import Pipeline

DTYPES = {"float64": torch.float64, "float32": torch.float32}


class StackLayer(nn.Module):
    def __init__(self, phi, alpha, b, w_sub, options: dict):
        super().__init__()
        self.phi, self.alpha, self.b, self.w_sub = (nn.Parameter(t) for t in (phi, alpha, b, w_sub))
        self.options = options

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mhc_layer_unchecked(x, self.phi, self.alpha, self.b, self.w_sub, **self.options)  # (..., n, C)


class StackStage(BlockStage):
    def __init__(self, params: dict, options: dict, stage: int, num_stages: int, recompute_every: int = 0,
                 counter: RecomputeCounter | None = None):
        L = params["phi"].shape[0]
        bounds = stage_bounds(L, num_stages, recompute_every)[stage]
        layers = [StackLayer(*(torch.from_numpy(np.array(params[k][l])) for k in ("phi", "alpha", "b", "w_sub")),
                             options) for l in range(*bounds)]
        super().__init__(layers, stage, num_stages, bounds, recompute_every, counter)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_layers(x)


def vjp_loss(y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return (y * g).sum()


def run_stack(rank: int, world: int, task: dict) -> dict:
    """Run one mhc_stack call on this rank. `task`: x (N, n, C) with N a multiple of `microbatches`, g (N, n, C),
    phi/alpha/b/w_sub (stacked numpy arrays), options, schedule, microbatches, recompute_every, want_grad.
    Returns this rank's share: y (last stage), dx (first stage), {layer: grads} of its layers."""
    dtype = DTYPES[task["dtype"]]
    x = torch.from_numpy(task["x"]).to(dtype)
    N, n, C = x.shape
    M = task["microbatches"]
    rows = N // M
    params = {k: task[k] for k in ("phi", "alpha", "b", "w_sub")}

    def make_stage(s, ns):
        return StackStage(params, task["options"], s, ns, task["recompute_every"])

    def io(s, ns):
        example = torch.zeros(rows, n, C, dtype=dtype, requires_grad=True)
        return example, example

    pipe = Pipeline(make_stage, rank, world, task["schedule"], M, vjp_loss, io, scale_grads=False)
    x.requires_grad_(pipe.has_first)
    g = torch.from_numpy(task["g"]).to(dtype)
    pipe.step(x, target=g)
    out: dict = {"layers": {}}
    if pipe.has_last:
        out["y"] = pipe.output.detach().numpy()
    if pipe.has_first and task["want_grad"]:
        out["dx"] = (x.grad if x.grad is not None else torch.zeros_like(x)).numpy()
    if task["want_grad"]:
        for module in pipe.modules:
            for layer, l in zip(module.layers, range(*module.bounds)):
                out["layers"][l] = {k: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().numpy()
                                    for k, p in (("phi", layer.phi), ("alpha", layer.alpha), ("b", layer.b),
                                                 ("w_sub", layer.w_sub))}
    return out
