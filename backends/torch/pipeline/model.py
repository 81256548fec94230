"""A small mHC Transformer LM built from the package's modules, and its split into pipeline stages.

    tokens (B, T) --Embedding--> (B, T, C) --ExpandStreams(n)--> x_0 (B, T, n, C)
        --MHC(attention) MHC(MLP) x blocks--> x_L --CollapseStreams(sum)--> RMSNorm --Linear--> logits (B, T, V)

Layer l = 2 i is MHC around causal self-attention (`scaled_dot_product_attention`), l = 2 i + 1 MHC around a GELU
MLP; each sublayer has its own pre-norm (P Table 3: RMSNorm(H_pre x) is inside F).

Stages: the L = 2 * blocks MHC layers are cut into `num_stages` contiguous slices (`stage_bounds`); stage 0 also holds
the embedding and ExpandStreams, the last stage CollapseStreams, the final norm and the unembedding (the loss is the
schedule's `loss_fn`). Which rank runs which stage (loop or V layout) is the schedule's business (`schedules`).
Every tensor that crosses a stage boundary is a contiguous (B, T, n, C) state x_l.

Recompute (P Sec. 4.3.3): `recompute_every = R` groups layers [0, R), [R, 2R), ... into blocks, each run under
non-reentrant `torch.utils.checkpoint` (the only kind the zero-bubble schedules' split backward supports). A block
must not cross a stage boundary (its input would live on another rank): `stage_bounds` raises if one would.
`RecomputeCounter` counts forward calls and recomputations of the blocks.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..modules import MHC, CollapseStreams, ExpandStreams


@dataclass(frozen=True)
class LMConfig:
    vocab: int = 32
    dim: int = 16  # C, channels per stream
    n: int = 4  # streams
    blocks: int = 4  # Transformer blocks; 2 MHC layers each
    heads: int = 2
    seq: int = 8  # T
    mlp_ratio: int = 2
    mode: str = "mhc"

    @property
    def layers(self) -> int:
        return 2 * self.blocks


class Attention(nn.Module):
    """F(u) = W_o SDPA(W_q, W_k, W_v RMSNorm(u)), causal; u (B, T, C)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"Attention: dim must be divisible by heads, got dim={dim}, heads={heads}")
        self.heads = heads
        self.norm = nn.RMSNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        B, T, C = u.shape
        q, k, v = self.qkv(self.norm(u)).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, heads, T, C / heads)
        return self.out(a.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    """F(u) = W_2 GELU(W_1 RMSNorm(u)); u (..., C)."""

    def __init__(self, dim: int, ratio: int):
        super().__init__()
        self.norm = nn.RMSNorm(dim)
        self.up = nn.Linear(dim, ratio * dim, bias=False)
        self.down = nn.Linear(ratio * dim, dim, bias=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(self.norm(u))))


def build_layers(cfg: LMConfig) -> list[MHC]:
    layers = []
    for i in range(cfg.blocks):
        layers.append(MHC(Attention(cfg.dim, cfg.heads), cfg.n, cfg.dim, mode=cfg.mode, layer_index=2 * i))
        layers.append(MHC(MLP(cfg.dim, cfg.mlp_ratio), cfg.n, cfg.dim, mode=cfg.mode, layer_index=2 * i + 1))
    return layers


class LM(nn.Module):
    """The whole model on one process: the single-process oracle of the pipeline runs."""

    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab, cfg.dim)
        self.expand = ExpandStreams(cfg.n)
        self.layers = nn.ModuleList(build_layers(cfg))
        self.collapse = CollapseStreams(cfg.n)
        self.norm = nn.RMSNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.expand(self.embed(tokens))  # (B, T, n, C)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(self.collapse(x)))  # (B, T, V)


def build_lm(cfg: LMConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> LM:
    """The same weights on every rank: the pipeline stages copy their slices from this model."""
    torch.manual_seed(seed)
    return LM(cfg).to(dtype)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of one micro-batch; logits (B, T, V), targets (B, T)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def lm_stage_io(cfg: LMConfig, rows: int, dtype: torch.dtype = torch.float32, device="cpu"):
    """io(stage, num_stages) -> example (input, output) of one micro-batch of `rows` sequences (static metadata)."""

    def io(stage: int, num_stages: int):
        # (B, T, n, C); requires_grad: the schedule derives the gradient buffers from it
        state = torch.zeros(rows, cfg.seq, cfg.n, cfg.dim, dtype=dtype, device=device, requires_grad=True)
        inp = torch.zeros(rows, cfg.seq, dtype=torch.long, device=device) if stage == 0 else state
        out = torch.zeros(rows, cfg.seq, cfg.vocab, dtype=dtype, device=device) if stage == num_stages - 1 else state
        return inp, out

    return io


def stage_bounds(layers: int, num_stages: int, recompute_every: int = 0) -> list[tuple[int, int]]:
    """[l0, l1) of each stage: layers split as evenly as possible (the first stages get the remainder).

    With recompute_every = R > 0 every boundary must be a multiple of R (a block may not cross a stage)."""
    if num_stages < 1:
        raise ValueError(f"stage_bounds: num_stages must be >= 1, got {num_stages}")
    q, r = divmod(layers, num_stages)
    bounds, start = [], 0
    for s in range(num_stages):
        end = start + q + (1 if s < r else 0)
        bounds.append((start, end))
        start = end
    if recompute_every:
        crossing = [lo for lo, _ in bounds[1:] if lo % recompute_every and lo < layers]
        if crossing:
            raise ValueError(f"recompute_every={recompute_every}: recompute blocks [k R, (k+1) R) would cross the "
                             f"stage boundaries at layers {crossing} (stages {bounds}); choose R dividing every "
                             f"stage's first layer, e.g. a divisor of {layers // num_stages}")
    return bounds


class RecomputeCounter:
    """Calls of each checkpointed block per (stage, micro-batch, block): the first is the forward, the others are
    recomputations. Thread-safe (DualPipeV runs a backward on a second thread). Calls outside a micro-batch (the
    stages' shape inference) are not counted."""

    def __init__(self):
        self._lock = threading.Lock()
        self.calls: dict[tuple, int] = {}

    def add(self, key: tuple) -> None:
        with self._lock:
            self.calls[key] = self.calls.get(key, 0) + 1

    @property
    def forwards(self) -> int:
        return len(self.calls)

    @property
    def recomputes(self) -> int:
        return sum(self.calls.values()) - len(self.calls)

    def reset(self) -> None:
        with self._lock:
            self.calls = {}


class _Prefetch(torch.autograd.Function):
    """Identity that saves its input under the block's checkpoint hooks; reading `grad_fn.saved_tensors` from
    outside a backward triggers the block's recomputation (torch.utils.checkpoint recomputes on the first unpack),
    which is how the DualPipeV overlap issues the recompute before it waits for the gradient. The backward never
    unpacks it."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g


class BlockStage(nn.Module):
    """The layers [l0, l1) of one stage, run in recompute blocks of `recompute_every` layers (0: plain autograd)
    under non-reentrant torch.utils.checkpoint. Subclasses add what the stage does before and after the layers."""

    def __init__(self, layers, stage: int, num_stages: int, bounds: tuple[int, int], recompute_every: int = 0,
                 counter: RecomputeCounter | None = None):
        super().__init__()
        self.stage, self.num_stages, self.bounds = stage, num_stages, bounds
        self.is_first, self.is_last = stage == 0, stage == num_stages - 1
        self.recompute_every = recompute_every
        self.counter = counter if counter is not None else RecomputeCounter()
        self.layers = nn.ModuleList(layers)
        # set by the runner's stage around each micro-batch's forward (None: e.g. the stage's shape inference)
        self.current_mb: int | None = None
        # micro-batch -> the _Prefetch nodes of its checkpointed blocks; see `recompute_now`
        self.prefetch_nodes: dict[int, list] = {}

    def _blocks(self) -> list[list[nn.Module]]:
        layers = list(self.layers)
        size = self.recompute_every or max(len(layers), 1)
        return [layers[i:i + size] for i in range(0, len(layers), size)]

    def _run_block(self, layers, x, key):
        if key is not None:  # a checkpointed block: runs in the forward and again in every recomputation
            x = _Prefetch.apply(x)
            if key[1] is not None:
                self.counter.add(key)
                nodes = self.prefetch_nodes.setdefault(key[1], [])
                if len(nodes) <= key[2]:  # the forward, not a recomputation
                    nodes.append(x.grad_fn)
        for layer in layers:
            x = layer(x)
        return x

    def recompute_now(self, mb: int) -> int:
        """Recompute micro-batch `mb`'s checkpointed blocks now (call inside the `GraphExecGroup` its backward will
        run in, so that the backward reuses them); returns the number of blocks."""
        nodes = self.prefetch_nodes.pop(mb, [])
        for node in nodes:
            node.saved_tensors  # noqa: B018 (the unpack is the point: it runs the block's recomputation)
        return len(nodes)

    def reset_step(self) -> None:
        self.prefetch_nodes = {}

    def run_layers(self, x: torch.Tensor) -> torch.Tensor:
        """x_{l0} -> x_{l1} (..., n, C), contiguous and never the input tensor itself (an empty stage copies)."""
        use_ckpt = self.recompute_every > 0 and torch.is_grad_enabled()
        y = x
        for i, block in enumerate(self._blocks()):
            if use_ckpt:
                y = checkpoint(self._run_block, block, y, (self.stage, self.current_mb, i), use_reentrant=False)
            else:
                y = self._run_block(block, y, None)
        # the schedule detaches stage outputs in place, which autograd refuses for a view (e.g. the reshape that
        # ends mhc_post_res): copy those, as an empty stage copies its input
        return y.clone() if y is x or y._base is not None else y.contiguous()


class LMStage(BlockStage):
    """Stage s of `num_stages`: layers [l0, l1) of an `LM` (shared modules, not copies), plus the embedding on the
    first stage and collapse / norm / unembedding on the last. forward: tokens (B, T) or x (B, T, n, C) ->
    x (B, T, n, C) contiguous, or logits (B, T, V) on the last stage."""

    def __init__(self, lm: LM, stage: int, num_stages: int, recompute_every: int = 0,
                 counter: RecomputeCounter | None = None):
        bounds = stage_bounds(len(lm.layers), num_stages, recompute_every)[stage]
        super().__init__(lm.layers[bounds[0]:bounds[1]], stage, num_stages, bounds, recompute_every, counter)
        if self.is_first:
            self.embed, self.expand = lm.embed, lm.expand
        if self.is_last:
            self.collapse, self.norm, self.head = lm.collapse, lm.norm, lm.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_first:
            x = self.expand(self.embed(x))  # (B, T, n, C)
        x = self.run_layers(x)
        if self.is_last:
            return self.head(self.norm(self.collapse(x)))  # (B, T, V)
        return x
