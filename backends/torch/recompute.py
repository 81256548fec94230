"""Selective recompute of the mHC intermediates (P Sec. 4.3.2, Table 3, Eq. 20), without recomputing the sublayers.

`MHCStack(layers, recompute_every=L_r)` runs a list of `MHC` layers on the stream state x (..., n, C). With
recompute on, the layers are cut into blocks of L_r consecutive layers; only the block input x_{l0} and the
sublayer outputs f_l = F_l(H_pre x_l) are kept for the backward. Everything else the mHC part would save (x_l inside
the block, the maps, the RMS, the 2 t_max Sinkhorn states) is recomputed in the backward from x_{l0} and the stored
f_l by re-running only the mHC ops (coefficients and post_res), never F.

How (one layer j of a block): three autograd.Function nodes replace the ordinary mHC ops,

    maps = _Coeffs(x_j, params)        saves x_{l0}, f_{l0..j-1}, params
    u_j  = _Pre(x_j, h_pre)            saves x_{l0}, f_{l0..j-1}
    f_j  = F(u_j)                      ordinary autograd (F's own saved tensors are F's business)
    x_j+1 = _PostRes(x_j, f_j, h_post, h_res)    saves f_j, x_{l0}, f_{l0..j-1}

The saved tensors are the same storages every time (x_{l0} once per block, f_l once per layer). In the backward the
first node of a block to run (the last layer's _PostRes) replays the block forward under no_grad from x_{l0} and
f_{l0..}: x_l and the maps of the block's layers live in a per-block cache until the block's first _Coeffs node
(always the block's last backward node) has run. Each node then differentiates its own op locally with autograd
(for _Coeffs: the unrolled Sinkhorn, i.e. the exact gradient), so the gradients equal those of the plain stack up to
summation order.

Memory model (activations the mHC part keeps between forward and backward, per token, for L layers):

    recompute off:   per layer x_l (nC) + f_l (C) + the coefficient path's intermediates (projection, sigmoid and
                     (2 t_max + 1) log-domain Sinkhorn states of n*n, plus float32 copies of x for 16-bit x)
    recompute L_r:   nC * ceil(L / L_r)  (x_{l0} per block)  +  C * L  (f_l per layer)
                     transient during one block's backward: nC * L_r (x_l) + (n*n + 2n) * L_r (maps) + one layer's
                     coefficient graph

P Eq. 20 minimises nC ceil(L/L_r) + (n+2) C L_r, where (n+2)C is P Table 3's transient cost per layer (x_l and the
sublayer input and its norm, which P recomputes inside F): L_r* = sqrt(n L / (n+2)), `default_recompute_every`.
F's own saved tensors (e.g. nn.Linear keeps its input u_l) are not touched; wrap F in torch.utils.checkpoint to drop
them too. Like torch.utils.checkpoint, the recompute reads the live parameters: do not change them between the
forward and the backward. Recompute is used only in training mode with grad enabled and when every layer has mode
"mhc" or "hc" (the other modes save no mHC intermediates); it supports one backward (no double backward).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .. import _config
from . import _checks
from .modules import MHC, _check_state

default_recompute_every = _config.default_recompute_every  # L_r* of P Eq. 20, clipped to [1, L]


class _Block:
    """The layers of one recompute block and, during its backward, the replayed x_l and maps (transient)."""

    def __init__(self, layers: list[MHC]):
        self.layers = layers
        self.xs: list[torch.Tensor] = []
        self.maps: list[tuple[torch.Tensor, ...]] = []

    def get(self, j: int, x0: torch.Tensor, fs: tuple[torch.Tensor, ...]):
        """(x_j, maps_j), replaying the block forward from x0 and the stored sublayer outputs as far as needed."""
        with torch.no_grad():
            if not self.xs:
                self.xs = [x0]
            while len(self.xs) <= j:
                k = len(self.xs) - 1
                h_pre, h_post, h_res = self._maps(k)
                self.xs.append(self.layers[k].post_res(self.xs[k], fs[k], h_post, h_res))
            return self.xs[j], self._maps(j)

    def _maps(self, k: int):
        while len(self.maps) <= k:
            i = len(self.maps)
            self.maps.append(self.layers[i].maps_from(self.xs[i], *self.layers[i].params()))
        return self.maps[k]

    def clear(self) -> None:
        self.xs, self.maps = [], []


def _local_grads(fn, inputs: list[torch.Tensor], needs: list[bool], grad_outputs) -> list[torch.Tensor | None]:
    """Gradients of fn(*inputs) w.r.t. the inputs flagged in `needs`, by autograd on a fresh local graph."""
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(w) for t, w in zip(inputs, needs)]
        outputs = fn(*leaves)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if g is not None and o.requires_grad]
        wanted = [leaf for leaf, w in zip(leaves, needs) if w]
        if not pairs or not wanted:
            return [None] * len(inputs)
        grads = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs], allow_unused=True))
    return [next(grads) if w else None for w in needs]


class _Coeffs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, block, j, n_saved, x, *rest):
        saved, params = rest[:n_saved], rest[n_saved:]
        ctx.block, ctx.j, ctx.n_saved = block, j, n_saved
        ctx.save_for_backward(*saved, *params)
        return block.layers[j].maps_from(x, *params)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_pre, g_post, g_res):
        block, j, n_saved = ctx.block, ctx.j, ctx.n_saved
        tensors = ctx.saved_tensors
        saved, params = tensors[:n_saved], tensors[n_saved:]
        x, _ = block.get(j, saved[0], saved[1:])
        layer = block.layers[j]
        needs = [ctx.needs_input_grad[3]] + list(ctx.needs_input_grad[4 + n_saved:])
        grads = _local_grads(layer.maps_from, [x, *params], needs, (g_pre, g_post, g_res))
        if j == 0:  # the block's last backward node: drop the replayed states
            block.clear()
        return (None, None, None, grads[0]) + (None,) * n_saved + tuple(grads[1:])


class _Pre(torch.autograd.Function):
    @staticmethod
    def forward(ctx, block, j, x, h_pre, *saved):
        ctx.block, ctx.j = block, j
        ctx.save_for_backward(*saved)
        return block.layers[j].pre(x, h_pre)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_u):
        saved = ctx.saved_tensors
        x, (h_pre, _, _) = ctx.block.get(ctx.j, saved[0], saved[1:])
        grads = _local_grads(ctx.block.layers[ctx.j].pre, [x, h_pre], list(ctx.needs_input_grad[2:4]), (g_u,))
        return (None, None, *grads) + (None,) * len(saved)


class _PostRes(torch.autograd.Function):
    @staticmethod
    def forward(ctx, block, j, x, f_out, h_post, h_res, *saved):
        ctx.block, ctx.j = block, j
        ctx.save_for_backward(f_out, *saved)
        return block.layers[j].post_res(x, f_out, h_post, h_res)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_y):
        f_out, *saved = ctx.saved_tensors
        x, (_, h_post, h_res) = ctx.block.get(ctx.j, saved[0], tuple(saved[1:]))
        grads = _local_grads(ctx.block.layers[ctx.j].post_res, [x, f_out, h_post, h_res],
                             list(ctx.needs_input_grad[2:6]), (g_y,))
        return (None, None, *grads) + (None,) * len(saved)


class MHCStack(nn.Module):
    """A sequence of `MHC` layers on the stream state x (..., n, C), optionally with selective recompute.

    recompute_every: None or 0 = off (plain autograd); an int L_r >= 1 = blocks of L_r layers; "auto" = the P Eq. 20
    optimum `default_recompute_every(n, len(layers))`.
    """

    def __init__(self, layers, recompute_every: int | str | None = None):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        where = "MHCStack"
        if not len(self.layers):
            raise ValueError(f"{where}: layers must be a non-empty list of MHC modules")
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, MHC):
                raise TypeError(f"{where}: layers[{i}] must be an MHC module, got {type(layer).__name__}")
        first = self.layers[0]
        for i, layer in enumerate(self.layers):
            if layer.n != first.n or (layer.dim is not None and first.dim is not None and layer.dim != first.dim):
                raise ValueError(f"{where}: every layer must have the same n and dim; layers[0] has n={first.n}, "
                                 f"dim={first.dim}, layers[{i}] has n={layer.n}, dim={layer.dim}")
        if recompute_every == "auto":
            recompute_every = default_recompute_every(first.n, len(self.layers))
        elif recompute_every is not None:
            _checks.check_int("recompute_every", recompute_every, where, 0)
        self.recompute_every = recompute_every or 0
        self.n = first.n

    def _recompute_active(self) -> bool:
        return (self.recompute_every > 0 and self.training and torch.is_grad_enabled()
                and all(layer.mode in ("mhc", "hc") for layer in self.layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._recompute_active():
            for layer in self.layers:
                x = layer(x)
            return x
        return recompute_layers(list(self.layers), x, self.recompute_every,
                                check=lambda x, layer: _check_state(x, layer.n, layer.dim, layer._ref_param(),
                                                                    "MHCStack"))

    def extra_repr(self) -> str:
        return f"recompute_every={self.recompute_every}"


def recompute_layers(layers, x: torch.Tensor, recompute_every: int, check=None) -> torch.Tensor:
    """x (..., n, C) through `layers` in recompute blocks of `recompute_every` layers (see the module docstring).

    A layer is anything with MHC's interface: `params()`, `maps_from(x, *params)`, `pre(x, h_pre)`,
    `post_res(x, f_out, h_post, h_res)` and `call_sublayer(u)` (the functional `mhc_stack` op passes views of its
    stacked parameters). `check(x, layer)`, if given, validates the state entering each layer.
    """
    for start in range(0, len(layers), recompute_every):
        block = _Block(layers[start:start + recompute_every])
        x0, fs = x.detach(), []
        for j, layer in enumerate(block.layers):
            if check is not None:
                check(x, layer)
            saved = (x0, *fs)
            params = layer.params()
            h_pre, h_post, h_res = _Coeffs.apply(block, j, len(saved), x, *saved, *params)
            f_out = layer.call_sublayer(_Pre.apply(block, j, x, h_pre, *saved))
            x = _PostRes.apply(block, j, x, f_out, h_post, h_res, *saved)
            fs.append(f_out.detach())
    return x
