"""Enter the n-stream space by replicating the embedding (HC Algorithm 1): h (..., C) -> x (..., n, C).

The copies are materialised (a contiguous tensor, not a stride-0 view), so later in-place updates of one stream
cannot alias the others.
"""

from __future__ import annotations

import torch

from .. import _contract
from . import _checks

OP = "expand_streams"


def expand_streams(h: torch.Tensor, *, n: int = 4) -> torch.Tensor:
    """x[..., k, :] = h for k = 0..n-1."""
    _checks.check_tensor("h", h, OP)
    _contract.embedding_dim("h", h, OP)
    _checks.check_int("n", n, OP, 1)
    # clone, not .contiguous(): at n = 1 the expanded view is already contiguous and would alias h
    return h.unsqueeze(-2).expand(*h.shape[:-1], n, h.shape[-1]).clone(memory_format=torch.contiguous_format)
