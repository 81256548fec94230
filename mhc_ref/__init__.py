"""NumPy float64 reference of Manifold-Constrained Hyper-Connections (mHC, arXiv 2512.24880).

One module per spec op; each exports the op and, when differentiable, `<op>_vjp`. Every op accepts
`compute_dtype` ("float64" default; "float32", "float16", "bfloat16" give the naive same-precision baseline that the
conformance suite's tolerance rule uses). Importing this package never imports torch or jax.
"""

from mhc_spec.table import load as load_spec

from .amax_gain import amax_gain
from .collapse_streams import collapse_streams, collapse_streams_vjp
from .deepseek import from_deepseek, head_from_deepseek, to_deepseek
from .expand_streams import expand_streams, expand_streams_vjp
from .hc_coeffs import hc_coeffs, hc_coeffs_vjp
from .init import fixed_maps, fold_norm_weight, hc_init, mhc_init
from .mhc_coeffs import mhc_coeffs, mhc_coeffs_vjp
from .mhc_layer import mhc_layer, mhc_layer_vjp
from .mhc_post_res import mhc_post_res, mhc_post_res_vjp
from .mhc_pre import mhc_pre, mhc_pre_vjp
from .mhc_stack import mhc_stack, mhc_stack_vjp
from .model import Stack
from .sinkhorn import sinkhorn, sinkhorn_vjp
from .sublayer import FunctionSublayer, ProbeSublayer

OPS = tuple(load_spec().ops)
SPEC_VERSION = load_spec().spec_version

__all__ = [
    "OPS", "SPEC_VERSION",
    "sinkhorn", "sinkhorn_vjp", "mhc_coeffs", "mhc_coeffs_vjp", "mhc_pre", "mhc_pre_vjp",
    "mhc_post_res", "mhc_post_res_vjp", "mhc_layer", "mhc_layer_vjp", "mhc_stack", "mhc_stack_vjp",
    "hc_coeffs", "hc_coeffs_vjp",
    "expand_streams", "expand_streams_vjp", "collapse_streams", "collapse_streams_vjp", "amax_gain",
    "mhc_init", "hc_init", "fixed_maps", "fold_norm_weight", "from_deepseek", "to_deepseek", "head_from_deepseek",
    "Stack", "ProbeSublayer", "FunctionSublayer",
]
