"""The copy task: `a_1 .. a_h SEP a_1 .. a_h`, tokens uniform over 1..vocab-1, SEP = 0; loss on the copy."""

from __future__ import annotations

import torch

SEP = 0


def copy_batch(gen: torch.Generator, batch: int, seq: int, vocab: int):
    """(inputs (B, seq), targets (B, seq), mask (B, seq)) for next-token prediction; mask marks the copied half."""
    if seq < 3 or seq % 2 == 0:
        raise ValueError(f"copy_batch: seq must be odd and >= 3 (h tokens, SEP, h tokens minus the last), got {seq}")
    if vocab < 3:
        raise ValueError(f"copy_batch: vocab must be >= 3, got {vocab}")
    h = (seq + 1) // 2
    a = torch.randint(1, vocab, (batch, h), generator=gen)
    full = torch.cat([a, torch.full((batch, 1), SEP), a], dim=1)  # (B, 2h + 1)
    inputs, targets = full[:, :-1], full[:, 1:]
    mask = torch.zeros_like(targets, dtype=torch.bool)
    mask[:, h:] = True  # targets a_1 .. a_h of the second half
    return inputs, targets, mask
