"""Train the small LM in one mode and measure it: loss and gradient norm per step, then the Amax gains."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch

from mhc_backends.torch.pipeline.model import LMConfig, build_lm

from .data import copy_batch
from .gains import composite, gains, layer_maps

MODES = ("residual", "hc", "mhc")


@dataclass(frozen=True)
class Config:
    depth: int = 16  # sublayers = mHC layers (two per Transformer block)
    width: int = 128  # C
    n: int = 4
    heads: int = 4
    vocab: int = 64
    seq: int = 63  # copy task: 31 tokens, SEP, 31 tokens
    batch: int = 16
    steps: int = 400
    lr: float = 3e-3
    warmup: int = 20
    weight_decay: float = 0.0
    clip: float = 0.0  # gradient-norm clipping; 0 = off, so that instabilities stay visible
    seed: int = 0
    threads: int = 1  # the measured default; two threads on a machine loaded by other jobs took 11 s per step

    def __post_init__(self):
        if self.depth < 2 or self.depth % 2:
            raise ValueError(f"Config: depth (sublayers) must be even and >= 2, got {self.depth}")
        for name in ("width", "n", "heads", "vocab", "batch", "steps", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"Config: {name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"Config: lr must be a finite positive number, got {self.lr}")

    def lm(self, mode: str) -> LMConfig:
        return LMConfig(vocab=self.vocab, dim=self.width, n=self.n, blocks=self.depth // 2, heads=self.heads,
                        seq=self.seq, mlp_ratio=4, mode=mode)


def _lr(cfg: Config, step: int) -> float:
    """Linear warm-up, then cosine decay to 10 %."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train(cfg: Config, mode: str, progress=None) -> dict:
    """Train one mode; returns its metrics (JSON-ready) and, under "_maps", one token's H_res per layer."""
    if mode not in MODES:
        raise ValueError(f"train: mode must be one of {MODES}, got {mode!r}")
    torch.set_num_threads(cfg.threads)
    model = build_lm(cfg.lm(mode), seed=cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # the same batches in every mode
    losses, norms = [], []
    start = time.perf_counter()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = _lr(cfg, step)
        inputs, targets, mask = copy_batch(gen, cfg.batch, cfg.seq, cfg.vocab)
        logits = model(inputs)
        loss = torch.nn.functional.cross_entropy(logits[mask], targets[mask])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip if cfg.clip > 0 else math.inf)
        losses.append(loss.item())
        norms.append(float(norm))
        if math.isfinite(losses[-1]):
            opt.step()
        if progress is not None:
            progress(mode, step, losses[-1], norms[-1])
    seconds = time.perf_counter() - start
    eval_inputs, _, _ = copy_batch(torch.Generator().manual_seed(cfg.seed + 2), cfg.batch, cfg.seq, cfg.vocab)
    h_res = layer_maps(model, eval_inputs)  # (L, B, T, n, n)
    out = {"loss": losses, "grad_norm": norms, "seconds": seconds, **gains(h_res)}
    out["_maps"] = {"layer": h_res[len(h_res) // 2, 0, -1], "composite": composite(h_res)[0, -1]}
    return out


def config_dict(cfg: Config) -> dict:
    return asdict(cfg)
