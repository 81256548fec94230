"""Sublayers F for the reference layer and model helper.

A sublayer is any object with `forward(u) -> (y, cache)` and `vjp(cache, g) -> (du, {param_name: grad})`, u and y
of shape (..., C). F includes its own pre-norm (P Table 3: RMSNorm(H_pre x) is inside F).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._common import SPEC, check_array, matmul, rms


@dataclass
class ProbeSublayer:
    """The spec's conformance sublayer F(u) = tanh(rmsnorm(u) @ w_sub), rmsnorm without weight."""

    w_sub: np.ndarray  # (C, C)
    eps: float = field(default_factory=lambda: SPEC.conformance["probe_rms_eps"])

    def __post_init__(self):
        check_array("w_sub", self.w_sub, 2, "ProbeSublayer")
        if self.w_sub.ndim != 2 or self.w_sub.shape[0] != self.w_sub.shape[1]:
            raise ValueError(f"ProbeSublayer: w_sub must be square (C, C), got shape {self.w_sub.shape}")

    def forward(self, u):
        w = self.w_sub.astype(u.dtype)
        r = rms(u, self.eps)  # (..., 1)
        y = np.tanh(matmul(u / r, w))  # (..., C)
        return y, (u, r, y)

    def vjp(self, cache, g):
        u, r, y = cache
        w = self.w_sub.astype(u.dtype)
        C = u.shape[-1]
        da = g * (1 - y * y)  # through tanh
        u_n = u / r
        dw = matmul(u_n.reshape(-1, C).T, da.reshape(-1, C))
        du_n = matmul(da, w.T)
        du = (du_n - u_n * np.sum(du_n * u_n, axis=-1, keepdims=True) / C) / r  # = du_n / r - u sum(du_n u) / (C r^3)
        return du, {"w_sub": dw}


@dataclass
class FunctionSublayer:
    """Wrap a NumPy function and its VJP (`vjp(u, g) -> du`) as a parameter-free sublayer."""

    fn: object
    fn_vjp: object

    def forward(self, u):
        return self.fn(u), u

    def vjp(self, cache, g):
        return self.fn_vjp(cache, g), {}
