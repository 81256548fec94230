"""Inputs for the convention finder, drawn per spec op with map logits of a chosen scale and rounded to the peer's
dtype (the reference then sees exactly the numbers the peer sees). Peers that express only part of the parameter
space (e.g. per-stream projections) bring their own drawer."""

from __future__ import annotations

import numpy as np

from mhc_ref._common import DTYPES

N, C = 4, 8


def rounded(arrays, dtype: str) -> list[np.ndarray]:
    return [np.asarray(a).astype(DTYPES[dtype]).astype(np.float64) for a in arrays]


def _coeff_params(rng, scale: float, n: int = N, c: int = C):
    phi = rng.standard_normal((n * c, n * n + 2 * n)) / np.sqrt(n * c)  # m = x_bar phi / r is ~ N(0, 1)
    alpha = np.full(3, scale / 2)
    b = rng.standard_normal(n * n + 2 * n) * scale / 2
    return phi, alpha, b


def draw(op: str, rng: np.random.Generator, scale: float, tokens: int, dtype: str) -> list[np.ndarray]:
    """Spec-ordered inputs of `op` (a key of models.MODELS) for `tokens` tokens."""
    x = rng.standard_normal((tokens, N, C))
    if op == "sinkhorn":
        arrays = [rng.standard_normal((tokens, N, N)) * scale]
    elif op == "mhc_coeffs":
        arrays = [x, *_coeff_params(rng, scale)]
    elif op == "mhc_pre":
        arrays = [x, 1 / (1 + np.exp(-rng.standard_normal((tokens, N))))]
    elif op == "mhc_post_res":
        arrays = [x, rng.standard_normal((tokens, C)), 2 / (1 + np.exp(-rng.standard_normal((tokens, N)))),
                  rng.uniform(0, 1, (tokens, N, N))]
    elif op == "mhc_layer":
        arrays = [x, *_coeff_params(rng, scale), rng.standard_normal((C, C)) / np.sqrt(C)]
    elif op == "hc_layer":
        arrays = [x, rng.standard_normal(C) / np.sqrt(C), rng.standard_normal(C) / np.sqrt(C),
                  rng.standard_normal((N, C)) / np.sqrt(C), np.full(3, scale / 4), rng.standard_normal(N) / 2,
                  rng.standard_normal(N) / 2, np.eye(N) + rng.standard_normal((N, N)) * scale / 10,
                  rng.standard_normal((C, C)) / np.sqrt(C)]
    else:
        raise ValueError(f"draw: op must be one of the finder's ops, got {op!r}")
    return rounded(arrays, dtype)
