"""PyTorch backends of mHC: `torch` (eager ops, autograd backward) and `torch-triton` (fused Triton kernels).

Importing this package imports torch but never triton: `triton_backend()` imports the kernels on first use.
Exports the functional ops (`sinkhorn`, `mhc_coeffs`, `mhc_pre`, `mhc_post_res`, `mhc_layer`, `mhc_stack`, `hc_coeffs`,
`expand_streams`, `collapse_streams`, `amax_gain`; options are keyword-only and default to the `paper` preset) and
the modules (`MHC`, `ExpandStreams`, `CollapseStreams`, `MHCStack`; see `modules` and `recompute`).

Precision policy (float64, float32, bfloat16, float16):
- float64 and float32 inputs are computed in their own dtype.
- 16-bit activations: the coefficient path (projection, RMS, sigmoids, Sinkhorn) and the stream mixing (mhc_pre,
  mhc_post_res, the sum/head collapse) run in float32, as DeepSeek does; parameters and maps may be float32 or x's
  dtype. Every op returns its outputs in x's dtype (the backend contract); `mhc_coeffs` / `hc_coeffs` take
  `maps_dtype=torch.float32` to keep the maps in float32, which is what the modules do between ops.
- Sinkhorn runs in the log domain, so logits of +-1e4 give finite outputs and gradients; its gradient is autograd
  through the unrolled iteration (the exact VJP of the truncated iteration, P Sec. 4.3.1).
Validation: see `_checks` (shape/dtype/device errors name the tensor). The NaN/Inf scan is one pass per input
(`aminmax`); `set_check_finite("auto")` (the default) runs it in every functional op (the backend contract) and, in
the nn.Modules, on CPU tensors only: on CUDA reading its verdict is a host sync that would stall the stream in every
layer, so the modules leave NaN to propagate as torch's own modules do (`set_check_finite(True)` scans there too,
`False` nowhere; `MHC_TORCH_CHECK_FINITE` = auto | 1 | 0). Skipped under torch.compile.

Speed by design (eager, no flags): Sinkhorn runs with the tokens as the last, contiguous axis, one `log_softmax` per
normalisation (the precision rule's `(u - m) - log sum exp(u - m)`), saving ~sqrt(2 t_max) checkpoints instead of
every state; on the CPU the projection reads x itself (no scaled copy) wherever the per-token power-of-two scale
keeps that bitwise equal to the scaled form; `mhc_post_res` is the mixing bmm plus an in-place `AddOuter` (no
full-size temporary). A layer (the `MHC` module, `mhc_layer`) reads x_l and its map parameters in one autograd
node (`mhc_layer.PreProjection`: projection, map logits, H_pre x, and x passed on to the mixing), whose backward
builds the x-gradient in one buffer (the mixing's H_res^T g plus H_pre^T du in one addcmul, then the projection's
terms in place) instead of three gradients and two adds; it never writes to a cotangent it receives, so the
zero-bubble pipeline schedules can replay it for the weights. The bytes-moved model of benchmarks/common.py is the
yardstick.
"""

from __future__ import annotations

from . import backend as _backend_module  # noqa: F401  (load the submodule first: the function below keeps its name)
from ._checks import set_check_finite
from .amax_gain import amax_gain
from .collapse_streams import collapse_streams
from .expand_streams import expand_streams
from .hc_coeffs import hc_coeffs
from .mhc_coeffs import mhc_coeffs
from .mhc_layer import mhc_layer
from .mhc_post_res import mhc_post_res
from .mhc_pre import mhc_pre
from .mhc_stack import mhc_stack
from .modules import MHC, CollapseStreams, ExpandStreams
from .recompute import MHCStack, default_recompute_every
from .sinkhorn import sinkhorn


def backend():
    """The eager backend `torch` (entry point `mhc_backends.torch:backend`)."""
    return _backend_module.TorchBackend()


def triton_backend():
    """The fused-kernel backend `torch-triton` (imports triton)."""
    from .kernels.backend import TritonBackend

    return TritonBackend()


__all__ = [
    "backend", "triton_backend", "set_check_finite",
    "sinkhorn", "mhc_coeffs", "mhc_pre", "mhc_post_res", "mhc_layer", "mhc_stack", "hc_coeffs", "expand_streams",
    "collapse_streams", "amax_gain", "MHC", "ExpandStreams", "CollapseStreams", "MHCStack", "default_recompute_every",
]
