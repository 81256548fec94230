"""Pallas kernels of mHC with hand-written backwards (the `jax-pallas` backend).

Functional API, differentiable through jax.custom_vjp: `sinkhorn`, `mhc_coeffs`, `mhc_pre`, `mhc_post_res`,
`mhc_layer` (around a `sublayer` function) and `mhc_stack` (stacked (L, ...) parameters), with the signatures,
defaults and results of the jnp ops of the same names in `mhc_backends.jax`, plus two keywords:

    interpret=None      None: interpret on CPU, compile on GPU / TPU
    backward="pallas"   "reference": the gradient of the jnp op, a fallback and an oracle

`*_unchecked(..., o: Options)` variants skip validation (for callers that validated once, e.g. a Flax module);
block sizes live in `config.KernelConfig`. Importing this package imports jax (the parent `mhc_backends.jax` does
not, and entry-point discovery never imports this package).
"""

from __future__ import annotations

from .config import KernelConfig
from .mhc_coeffs import mhc_coeffs
from .mhc_layer import mhc_layer
from .mhc_post_res import mhc_post_res
from .mhc_pre import mhc_pre
from .mhc_stack import mhc_stack
from .sinkhorn import sinkhorn


def backend():
    """The Pallas backend `jax-pallas` (entry point `mhc_backends.jax.kernels:backend`)."""
    from .backend import PallasBackend

    return PallasBackend()


__all__ = ["backend", "sinkhorn", "mhc_coeffs", "mhc_pre", "mhc_post_res", "mhc_layer", "mhc_stack", "KernelConfig"]
