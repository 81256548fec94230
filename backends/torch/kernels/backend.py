"""The backend `torch-triton`: the eager `torch` backend with its four hot ops replaced by fused Triton kernels.

Claimed ops: sinkhorn, mhc_coeffs, mhc_pre, mhc_post_res (kernels with hand-written backwards), mhc_layer
(composed from them around the probe sublayer) and mhc_stack (a loop of those layers). Gradients come from the
inherited autograd `vjp`, which runs the backward registered with each kernel's custom op (`torch.ops.mhc_triton.*`).
The other spec ops are the `torch` backend's and are not claimed here.

Device: CUDA when available (compiled kernels); otherwise CPU tensors in Triton's interpreter (TRITON_INTERPRET=1,
set by `mhc_backends.torch.kernels` before triton is imported). float64 is claimed only in the interpreter: the
kernels are written dtype-generic, but float64 has not been verified on a GPU.
"""

from __future__ import annotations

import torch
import triton

from mhc_spec.table import load

from ...base import Capabilities
from ..backend import TorchBackend, default_device
from ._common import interpret_mode
from .mhc_coeffs import mhc_coeffs
from .mhc_layer import mhc_layer
from .mhc_post_res import mhc_post_res
from .mhc_pre import mhc_pre
from .mhc_stack import mhc_stack
from .sinkhorn import sinkhorn

SPEC = load()
KERNEL_OPS = frozenset({"sinkhorn", "mhc_coeffs", "mhc_pre", "mhc_post_res", "mhc_layer", "mhc_stack"})


class TritonBackend(TorchBackend):
    name = "torch-triton"
    op_functions = {**TorchBackend.op_functions,
                    **{f.__name__: f for f in (sinkhorn, mhc_coeffs, mhc_pre, mhc_post_res, mhc_layer,
                                                 mhc_stack)}}

    def __init__(self, device: str | torch.device | None = None):
        super().__init__(device if device is not None else default_device())
        if self._device.type != "cuda" and not interpret_mode():
            raise ValueError(f"torch-triton: device {self._device} needs TRITON_INTERPRET=1 set before triton is "
                             f"imported (the kernels are compiled for CUDA only)")
        dtypes = {"float32", "bfloat16", "float16"} | ({"float64"} if interpret_mode() else set())
        self.capabilities = Capabilities(ops=KERNEL_OPS, dtypes=frozenset(dtypes), grad_ops=KERNEL_OPS,
                                         devices=("cuda", "cpu") if interpret_mode() else ("cuda",))

    @property
    def device(self) -> str:
        if self._device.type == "cuda":
            return f"{self._device} ({torch.cuda.get_device_name(self._device)})"
        return f"{self._device} (TRITON_INTERPRET=1)"

    def versions(self) -> dict[str, str]:
        return {**super().versions(), "triton": triton.__version__, "triton_interpret": str(interpret_mode())}


def backend() -> TritonBackend:
    return TritonBackend()
