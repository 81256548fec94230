"""The eager PyTorch backend `torch`: every spec op as plain differentiable torch code, gradients by autograd.

Each op method calls the function of the same name in `mhc_backends.torch.<op>` (which validates its inputs) and
returns the spec's outputs in x's dtype; `vjp` runs torch.autograd on the op, so the same generic code serves every
op and every subclass that overrides an op (the torch-triton backend overrides mhc_coeffs, sinkhorn, mhc_pre and
mhc_post_res with fused kernels whose backward is an autograd.Function).

Device: `MHC_TORCH_DEVICE` if set, else cuda when available, else cpu.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..base import Backend, Capabilities
from . import _checks
from .amax_gain import amax_gain
from .collapse_streams import collapse_streams
from .expand_streams import expand_streams
from .hc_coeffs import hc_coeffs
from .mhc_coeffs import mhc_coeffs
from .mhc_layer import mhc_layer
from .mhc_post_res import mhc_post_res
from .mhc_pre import mhc_pre
from .mhc_stack import mhc_stack
from .sinkhorn import sinkhorn

TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16,
                "float16": torch.float16}


def default_device() -> str:
    return os.environ.get("MHC_TORCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


class TorchBackend(Backend):
    name = "torch"
    op_functions = {f.__name__: f for f in (sinkhorn, mhc_coeffs, mhc_pre, mhc_post_res, mhc_layer, mhc_stack,
                                            hc_coeffs, expand_streams, collapse_streams, amax_gain)}
    capabilities = Capabilities.every_op(devices=("cpu", "cuda"))

    def __init__(self, device: str | torch.device | None = None):
        self._device = torch.device(device if device is not None else default_device())

    # -- arrays ---------------------------------------------------------------------------------------------------
    def from_numpy(self, array, dtype: str) -> torch.Tensor:
        if dtype not in TORCH_DTYPES:
            raise ValueError(f"from_numpy: dtype must be one of {list(TORCH_DTYPES)}, got {dtype!r}")
        a = np.asarray(array)
        if a.dtype.kind == "V" or a.dtype.name == "bfloat16":  # ml_dtypes.bfloat16: go through float32 (exact)
            a = a.astype(np.float32)
        return torch.from_numpy(np.array(a, order="C")).to(  # a copy; keeps 0-d arrays 0-d
            device=self._device, dtype=TORCH_DTYPES[dtype])

    def to_numpy(self, value) -> np.ndarray:
        t = value.detach().cpu()
        if t.dtype == torch.bfloat16:
            import ml_dtypes

            return t.float().numpy().astype(ml_dtypes.bfloat16)
        return t.numpy()

    @property
    def device(self) -> str:
        return str(self._device)

    def versions(self) -> dict[str, str]:
        v = {"torch": torch.__version__}
        if self._device.type == "cuda":
            v["cuda"] = str(torch.version.cuda)
            v["gpu"] = torch.cuda.get_device_name(self._device)
        return v

    # -- gradients ------------------------------------------------------------------------------------------------
    def vjp(self, op: str, inputs: Sequence[Any], cotangents: Sequence[Any], **options) -> dict[str, Any]:
        """Autograd through `op`: {input name: gradient} for every differentiable input that is not None."""
        names, wanted = self.vjp_arguments(op, inputs, cotangents)
        with torch.enable_grad():
            leaves = list(inputs)
            for i in wanted:
                leaves[i] = inputs[i].detach().clone().requires_grad_(True)
            outputs = self.call(op, leaves, **options)
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            pairs = [(o, c) for o, c in zip(outputs, cotangents) if c is not None]
            grads = [None] * len(wanted)
            if pairs:
                grads = torch.autograd.grad([o for o, _ in pairs], [leaves[i] for i in wanted],
                                            [c.to(o.dtype) for o, c in pairs], allow_unused=True)
        return {names[i]: (torch.zeros_like(inputs[i]) if g is None else g.detach())
                for i, g in zip(wanted, grads)}


def backend() -> TorchBackend:
    return TorchBackend()


__all__ = ["TorchBackend", "backend", "default_device", "_checks"]
