"""JAX backends of mHC: `jax` (jnp ops, autodiff backward) and `jax-pallas` (Pallas kernels, in `kernels/`).

Importing this package imports jax (not flax: the modules load on first access); listing the installed backends
never imports it (the registry reads entry points only). Nothing here changes jax's global x64 flag; float64 inputs
are computed inside a scoped switch (`_checks.x64_scope`).

Exports the functional ops (`sinkhorn`, `mhc_coeffs`, `mhc_pre`, `mhc_post_res`, `mhc_layer`, `hc_coeffs`,
`expand_streams`, `collapse_streams`, `amax_gain`, `mhc_stack`; options keyword-only, static under jit, defaults =
the `paper` preset), the params-pytree API (`functional`: `init`, `mhc_layer(params, x, f)`, `stack_init`,
`mhc_stack(params, x, f, ...)`, `remat_policy`), the Flax NNX modules (`MHC`, `ExpandStreams`, `CollapseStreams`;
see `modules`, needs flax) and the DeepSeek-V4 converter (`deepseek`).

Precision policy (float64, float32, bfloat16, float16), as the torch backend:
- float64 and float32 inputs are computed in their own dtype;
- 16-bit activations: the coefficient path (projection, RMS, sigmoids, Sinkhorn) and the stream mixing run in
  float32; parameters and maps may be float32 or x's dtype; every op returns x's dtype (`maps_dtype=jnp.float32`
  keeps the maps in float32, which the functional layer and the modules do);
- Sinkhorn runs in the log domain with issue 9's precision rule; its gradient is autodiff through the iteration.
Validation: see `_checks` (shape/dtype errors at trace time; the NaN/Inf scan runs on eager calls only and can be
switched off with `set_check_finite(False)` / `MHC_JAX_CHECK_FINITE=0`).
"""

from __future__ import annotations

import importlib

from . import backend as _backend_module  # noqa: F401  (load the submodule first: the function below keeps its name)
from ._checks import set_check_finite
from .amax_gain import amax_gain
from .collapse_streams import collapse_streams
from .expand_streams import expand_streams
from .functional import default_recompute_every, remat_policy
from .hc_coeffs import hc_coeffs
from .mhc_coeffs import mhc_coeffs
from .mhc_layer import mhc_layer
from .mhc_post_res import mhc_post_res
from .mhc_pre import mhc_pre
from .mhc_stack import mhc_stack
from .sinkhorn import sinkhorn

_FLAX = ("MHC", "ExpandStreams", "CollapseStreams")  # need flax: loaded on first access (PEP 562)


def __getattr__(name: str):
    if name in _FLAX:
        return getattr(importlib.import_module(".modules", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def backend():
    """The jnp backend `jax` (entry point `mhc_backends.jax:backend`)."""
    return _backend_module.JaxBackend()


__all__ = [
    "backend", "set_check_finite", "sinkhorn", "mhc_coeffs", "mhc_pre", "mhc_post_res", "mhc_layer", "mhc_stack",
    "hc_coeffs", "expand_streams", "collapse_streams", "amax_gain", "default_recompute_every", "remat_policy",
    *_FLAX,
]
