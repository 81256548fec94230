"""Fused Triton kernels of mHC with hand-written backwards (the `torch-triton` backend).

Functional API (autograd-enabled, same signatures and defaults as the eager ops in `mhc_backends.torch`):

    sinkhorn(logits, *, t_max=20, eps=0.0)                                  -> h_res
    mhc_coeffs(x, phi, alpha, b, *, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout, maps_dtype=None)
                                                                            -> (h_pre, h_post, h_res)
    mhc_pre(x, h_pre)                                                       -> y (..., C)
    mhc_post_res(x, f_out, h_post, h_res)                                   -> y (..., n, C)
    mhc_layer(x, phi, alpha, b, sublayer, **options)                        -> x_next
    mhc_stack(x, phi, alpha, b, w_sub, **options)    (stacked (L, ...) parameters) -> x_L

torch.library custom ops: each kernel is `torch.ops.mhc_triton.<op>` (mhc_coeffs, sinkhorn, mhc_pre, mhc_post_res,
each with a `<op>_backward` op) with a fake implementation and registered autograd, so `torch.compile` traces
these functions and `MHC(impl="triton")` without graph breaks; the compiled graph calls the kernels as opaque
nodes. They are `custom_op`s rather than `triton_op`s because `wrap_triton` does not trace interpreted kernels
(TRITON_INTERPRET=1), and one registration that behaves the same on CPU and GPU is the one CI can check.

Device: CUDA tensors run compiled kernels. Without CUDA this package sets TRITON_INTERPRET=1 before triton is
imported (unless the variable is already set), and the same kernels run on CPU tensors in Triton's interpreter.
"""

from __future__ import annotations

import os
import sys

import torch

if not torch.cuda.is_available() and "TRITON_INTERPRET" not in os.environ:
    if "triton" in sys.modules:  # its standard library (tl.sum, tl.max, ...) is already compiled-mode only
        raise RuntimeError("mhc_backends.torch.kernels: no CUDA device, and triton was imported before "
                          "TRITON_INTERPRET=1 was set; set TRITON_INTERPRET=1 in the environment (or import this "
                          "package before triton) to run the kernels on CPU")
    os.environ["TRITON_INTERPRET"] = "1"

from ._common import interpret_mode  # noqa: E402  (triton must be imported after TRITON_INTERPRET is set)

if interpret_mode():  # TRITON_INTERPRET=1 set only after triton was imported leaves a compiled-mode tl.sum, tl.max...
    import triton.language as _tl  # noqa: E402
    from triton.runtime.interpreter import InterpretedFunction as _Interpreted  # noqa: E402

    if not isinstance(_tl.standard.sum, _Interpreted):
        raise RuntimeError("mhc_backends.torch.kernels: TRITON_INTERPRET=1 is set, but triton was imported before it "
                           "was, so its standard library is compiled-mode only and every interpreted kernel would "
                           "fail; set TRITON_INTERPRET=1 before anything imports triton (e.g. in the environment)")
from .mhc_coeffs import mhc_coeffs  # noqa: E402
from .mhc_layer import mhc_layer  # noqa: E402
from .mhc_post_res import mhc_post_res  # noqa: E402
from .mhc_pre import mhc_pre  # noqa: E402
from .mhc_stack import mhc_stack  # noqa: E402
from .sinkhorn import sinkhorn  # noqa: E402

__all__ = ["sinkhorn", "mhc_coeffs", "mhc_pre", "mhc_post_res", "mhc_layer", "mhc_stack", "interpret_mode"]
