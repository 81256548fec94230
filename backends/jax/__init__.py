"""JAX backends of mHC: `jax` (jnp ops, autodiff backward) and `jax-pallas` (Pallas kernels, in `kernels/`).

Importing this package imports nothing from jax: the names below load their submodule on first access (PEP 562),
so discovering backends never pays for jax. Nothing here changes jax's global x64 flag; float64 inputs are computed
inside a scoped switch (`_checks.x64_scope`).

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

_LAZY = {
    "sinkhorn": "sinkhorn", "mhc_coeffs": "mhc_coeffs", "mhc_pre": "mhc_pre", "mhc_post_res": "mhc_post_res",
    "mhc_layer": "mhc_layer", "hc_coeffs": "hc_coeffs", "expand_streams": "expand_streams",
    "collapse_streams": "collapse_streams", "amax_gain": "amax_gain", "set_check_finite": "_checks",
    "mhc_stack": "mhc_stack", "functional": None, "deepseek": None, "modules": None,
    "init": "functional", "stack_init": "functional", "remat_policy": "functional",
    "default_recompute_every": "functional",
    "MHC": "modules", "ExpandStreams": "modules", "CollapseStreams": "modules",
    "JaxBackend": "backend",
}


def __getattr__(name: str):
    if name in _LAZY:
        if _LAZY[name] is None:  # a submodule
            return importlib.import_module(f".{name}", __name__)
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def backend():
    """The jnp backend `jax` (entry point `mhc_backends.jax:backend`)."""
    from .backend import JaxBackend

    return JaxBackend()


__all__ = ["backend", *_LAZY]
