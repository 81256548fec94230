"""Torch helpers shared by the peers' adapters: float64 NumPy in, the peer's dtype on the CPU, NumPy out."""

from __future__ import annotations

import numpy as np
import torch

TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16,
                "float16": torch.float16}


def tensors(arrays, dtype: str, grad: bool = False) -> list[torch.Tensor]:
    return [torch.tensor(np.asarray(a), dtype=TORCH_DTYPES[dtype], requires_grad=grad) for a in arrays]


def numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy()


def autograd_vjp(fn, names, inputs, cotangents, dtype: str) -> dict[str, np.ndarray]:
    """{name: d(sum(cot * fn(inputs)))/d input} by torch autograd through the peer's own backward."""
    ts = tensors(inputs, dtype, grad=True)
    outs = fn(*ts)
    outs = outs if isinstance(outs, tuple) else (outs,)
    loss = sum((o.to(torch.float64) * torch.tensor(np.asarray(c), dtype=torch.float64)).sum()
               for o, c in zip(outs, cotangents))
    grads = torch.autograd.grad(loss, ts, allow_unused=True)
    return {n: numpy(g) for n, g in zip(names, grads) if g is not None}
