"""Pallas kernels of mHC with hand-written backwards (the `jax-pallas` backend).

Functional API (differentiable through jax.custom_vjp; same signatures and defaults as the jnp ops in
`mhc_backends.jax`, plus two keywords):

    sinkhorn(logits, *, t_max=20, eps=0.0)                                  -> h_res
    mhc_coeffs(x, phi, alpha, b, *, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout, maps_dtype=None)
                                                                            -> (h_pre, h_post, h_res)
    mhc_pre(x, h_pre)                                                       -> y (..., C)
    mhc_post_res(x, f_out, h_post, h_res)                                   -> y (..., n, C)
    mhc_layer(x, phi, alpha, b, sublayer, **options)                        -> x_next
    mhc_stack(x, phi, alpha, b, w_sub, **options)                           -> x_L    (stacked parameters, L layers)

    every function also takes  interpret=None   (None: interpret on CPU, compile on GPU / TPU)
                               backward="pallas" ("reference": the gradient of the jnp op, a fallback and an oracle)

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
