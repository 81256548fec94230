"""The jnp JAX backend `jax`: every spec op as jitted jnp code, gradients by `jax.vjp` (autodiff).

Each op method calls the function of the same name in `mhc_backends.jax.<op>` (which validates its inputs at trace
time and runs a jitted core with the options static) and returns the spec's outputs in x's dtype; `vjp` runs
`jax.vjp` on the op, so the same generic code serves every op and every subclass that overrides an op (the
`jax-pallas` backend overrides the fused ops with Pallas kernels whose backward is a `jax.custom_vjp`).

float64: `from_numpy(..., "float64")` and every op enter `jax.enable_x64` for the call only (`_checks.x64_scope`);
the global x64 flag is never changed. Device: jax's default device (`MHC_JAX_DEVICE` = "cpu" / "gpu" / "tpu" picks
the first device of that platform).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

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

JAX_DTYPES = {"float64": jnp.float64, "float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def default_device() -> jax.Device:
    platform = os.environ.get("MHC_JAX_DEVICE")
    return jax.devices(platform)[0] if platform else jax.devices()[0]


class JaxBackend(Backend):
    name = "jax"
    op_functions = {f.__name__: f for f in (sinkhorn, mhc_coeffs, mhc_pre, mhc_post_res, mhc_layer, mhc_stack,
                                            hc_coeffs, expand_streams, collapse_streams, amax_gain)}
    capabilities = Capabilities.every_op(devices=("cpu", "gpu", "tpu"))

    def __init__(self, device: jax.Device | None = None):
        self._device = device if device is not None else default_device()

    # -- arrays ---------------------------------------------------------------------------------------------------
    def from_numpy(self, array, dtype: str) -> jax.Array:
        if dtype not in JAX_DTYPES:
            raise ValueError(f"from_numpy: dtype must be one of {list(JAX_DTYPES)}, got {dtype!r}")
        a = np.asarray(array)
        with _checks.x64_scope(force=dtype == "float64"):
            return jax.device_put(jnp.asarray(a, dtype=JAX_DTYPES[dtype]), self._device)

    def to_numpy(self, value) -> np.ndarray:
        return np.asarray(value)  # bfloat16 comes back as ml_dtypes.bfloat16

    @property
    def device(self) -> str:
        return str(self._device.platform)

    def versions(self) -> dict[str, str]:
        import jaxlib

        v = {"jax": jax.__version__, "jaxlib": jaxlib.__version__}
        if self._device.platform != "cpu":
            v["device_kind"] = self._device.device_kind
        return v

    # -- gradients ------------------------------------------------------------------------------------------------
    def vjp(self, op: str, inputs: Sequence[Any], cotangents: Sequence[Any], **options) -> dict[str, Any]:
        """jax.vjp through `op`: {input name: gradient} for every differentiable input that is not None."""
        return self.value_and_vjp(op, inputs, cotangents, **options)[1]

    def value_and_vjp(self, op: str, inputs: Sequence[Any], cotangents: Sequence[Any], **options):
        """(outputs tuple, {input name: gradient}): the forward and its VJP as one jitted program (what a training
        step runs; the benchmarks time forward+backward with it)."""
        names, wanted = self.vjp_arguments(op, inputs, cotangents)
        for name, a in zip(names, inputs):  # the value checks need data: under jit the inputs are tracers
            if a is not None and hasattr(a, "dtype"):
                _checks.check_finite(name, a, op)
        if options.get("rms_eps", None) == 0 and names[0] == "x" and hasattr(inputs[0], "dtype"):
            _checks.check_nonzero_tokens(inputs[0], 0, op)
        with _checks.x64_scope(*inputs, *cotangents):
            outputs, grads = _vjp(getattr(self, op), tuple(wanted), tuple(sorted(options.items())), list(inputs),
                                  list(cotangents))
        _checks.check_outputs(op, tuple(outputs) + tuple(grads), *inputs, *cotangents)  # overflow is refused
        return outputs, {names[i]: g for i, g in zip(wanted, grads)}


@partial(jax.jit, static_argnames=("fn", "wanted", "options"))
def _vjp(fn, wanted, options, inputs, cotangents):
    """Forward and backward of `fn` as one jitted program (one compilation per shape, not one per stage); when only
    the gradients are used, XLA drops the work that only the outputs need."""

    def f(*diff):
        args = list(inputs)
        for i, a in zip(wanted, diff):
            args[i] = a
        out = fn(*args, **dict(options))
        return out if isinstance(out, tuple) else (out,)

    outputs, pullback = jax.vjp(f, *[inputs[i] for i in wanted])
    return outputs, pullback(tuple(jnp.zeros_like(o) if c is None else c.astype(o.dtype)
                                   for o, c in zip(outputs, cotangents)))


def backend() -> JaxBackend:
    return JaxBackend()


__all__ = ["JaxBackend", "backend", "default_device"]
