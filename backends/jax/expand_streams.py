"""Enter the n-stream space by replicating the embedding (HC Algorithm 1): h (..., C) -> x (..., n, C)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from .. import _contract
from . import _checks

OP = "expand_streams"


@partial(jax.jit, static_argnames=("n",))
def expand_streams_unchecked(h, *, n: int):
    return jnp.broadcast_to(h[..., None, :], (*h.shape[:-1], n, h.shape[-1]))  # (..., n, C)


def expand_streams(h, *, n: int = 4):
    """x[..., k, :] = h for k = 0..n-1 (jax arrays are immutable: the copies cannot alias)."""
    _checks.check_array("h", h, OP)
    _contract.embedding_dim("h", h, OP)
    n = _checks.check_int("n", n, OP, 1)
    with _checks.x64_scope(h):
        return expand_streams_unchecked(h, n=n)
