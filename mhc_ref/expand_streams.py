"""Enter the n-stream space by replicating the embedding (HC Algorithm 1): (..., C) -> (..., n, C)."""

from __future__ import annotations

import numpy as np

from ._common import SPEC, cast, check_array, check_cotangent, compute_dtype_of

OP = "expand_streams"


def _check_width(h, op):
    if h.shape[-1] < 1:
        raise ValueError(f"{op}: h must be (..., C) with C >= 1, got shape {h.shape}")


def expand_streams(h, n=4, *, compute_dtype="float64"):
    """x[..., k, :] = h for k = 0..n-1."""
    check_array("h", h, 1, OP)
    _check_width(h, OP)
    n = SPEC.options["n"].check(n, where=OP)
    (h,) = cast(compute_dtype_of(compute_dtype), h)
    return np.repeat(h[..., None, :], n, axis=-2)  # (..., n, C)


def expand_streams_vjp(h, g_x, n=4, *, compute_dtype="float64"):
    """{h: sum over streams of g_x}."""
    check_array("h", h, 1, OP + "_vjp")
    _check_width(h, OP + "_vjp")
    n = SPEC.options["n"].check(n, where=OP + "_vjp")
    check_cotangent("g_x", g_x, h.shape[:-1] + (n, h.shape[-1]), OP + "_vjp")
    (g_x,) = cast(compute_dtype_of(compute_dtype), g_x)
    return {"h": np.sum(g_x, axis=-2)}
