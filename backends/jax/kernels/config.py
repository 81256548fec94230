"""Block sizes of the jax-pallas kernels: one frozen dataclass, chosen by one pure function of shapes.

A config never changes what is computed, only how the work is blocked (the math per token is the same for every
config; what may move is rounding):
- `block_t` (tokens per program), `block_c` (channels per program in the forward of mhc_pre / mhc_post_res) and
  `sinkhorn_seg` (recompute segment of the Sinkhorn backward) do the same operations in the same order for every
  token; only the compiled code of another tile shape may round a dot differently (seen: 1 float32 ulp on CPU);
- `block_k` (the chunk of the n*C reduction of the projection and of dx), `block_c` in the backwards (the chunk of
  the C reductions) and `dphi_splits` (token ranges of the d phi reduction, summed afterwards) set the summation
  order of long reductions: rounding only;
- `num_warps` / `num_stages` only map the programs onto a GPU (Triton lowering) and are ignored when interpreted.
No kernel uses atomics, so two runs of one call are bitwise equal. The token count never becomes a compile-time
constant beyond the padded size: tokens are padded to a multiple of `block_t` (a power of two that depends on n
and C, never on the token count), so calls recompile only when the padded size changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class KernelConfig:
    """Block sizes (powers of two) and GPU launch parameters of one kernel call."""

    block_t: int  # tokens per program
    block_k: int  # chunk of x_bar (n*C wide) per step of the projection / dx loops (mhc_coeffs); >= 16 for dot
    block_c: int  # channels per program (mhc_pre / mhc_post_res forward) or per loop step (their backward)
    dphi_block_k: int  # rows of d phi per program
    dphi_splits: int  # token ranges of the d phi reduction reduced by separate programs, partials summed afterwards
    sinkhorn_seg: int  # Sinkhorn pairs per recompute segment of the backward
    num_warps: int = 4
    num_stages: int = 2


def next_pow2(value: int) -> int:
    return 1 << max(0, int(value) - 1).bit_length()


def _pow2_at_most(value: int, cap: int) -> int:
    return max(1, min(cap, next_pow2(max(1, value))))


def tile_dims(n: int) -> tuple[int, int]:
    """(RP, NP) of the coefficient tile: RP x NP >= (n + 2) x n, powers of two, at least 16 entries (dot width)."""
    NP = next_pow2(n)
    return max(next_pow2(n + 2), 16 // NP), NP


def choose(op: str, *, n: int, C: int, tokens: int, t_max: int = 20, interpret: bool = True) -> KernelConfig:
    """The knobs of one call of `op` ('sinkhorn', 'mhc_coeffs', 'mhc_pre', 'mhc_post_res').

    Interpreted (CPU): each grid step is one iteration of an XLA loop, so few, large programs. GPU (Triton
    lowering, sized like the torch-triton kernels for an H100): ~2k live fp32 values per 4-warp program.
    Not tuned on a GPU (none was available when this was written).
    """
    RP, NP = tile_dims(n)
    W = RP * NP
    seg = max(1, round(math.sqrt(max(1, t_max - 1))))  # sqrt(t_max) pairs per segment: ~t_max^1.5 recompute
    D = n * C
    if op == "sinkhorn":
        block_t = max(16, min(128, (1 << 14) // (NP * NP))) if interpret else max(1, 2048 // (NP * NP))
        return KernelConfig(block_t, 16, 16, 16, 1, seg)
    if op == "mhc_coeffs":
        if interpret:
            block_k = max(16, _pow2_at_most(D, 1024))
            return KernelConfig(max(16, min(64, (1 << 14) // W)), block_k, 16, block_k, 1, seg)
        block_k = 16 if W >= 256 else 32
        dphi_block_k = 16 if W >= 256 else (32 if W >= 128 else 64)
        row_blocks = -(-D // dphi_block_k)
        splits = max(1, min(64, -(-264 // row_blocks), -(-tokens // 512)))
        return KernelConfig(16 if W >= 128 else 32, block_k, 16, dphi_block_k, splits, seg,
                            8 if W >= 128 else 4, 2 if W >= 256 else 3)
    if op in ("mhc_pre", "mhc_post_res"):
        budget = (1 << 16) if interpret else (1 << 11)
        block_c = _pow2_at_most(C, 1024 if interpret else 128)
        block_t = max(1, min(64 if interpret else 16, budget // block_c))
        return KernelConfig(block_t, 16, block_c, 16, 1, seg)
    raise ValueError(f"choose: op must be one of sinkhorn, mhc_coeffs, mhc_pre, mhc_post_res, got {op!r}")
