"""JAX backends of mHC: `jax` (jnp ops, autodiff backward) and `jax-pallas` (Pallas kernels, in `kernels/`).

Importing this package imports nothing from jax: `backend()` imports `backend.py` on first use, so listing or
loading other backends never pays for jax. Importing it never changes jax's global x64 flag either; float64 runs
inside a scoped switch (see `backend.py`).
"""

from __future__ import annotations


def backend():
    """The jnp backend `jax` (entry point `mhc_backends.jax:backend`)."""
    from .backend import JaxBackend

    return JaxBackend()


__all__ = ["backend"]
