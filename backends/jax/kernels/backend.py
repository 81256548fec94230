"""The backend `jax-pallas`: the jnp `jax` backend with its fused ops replaced by Pallas kernels.

Claimed ops: sinkhorn, mhc_coeffs, mhc_pre, mhc_post_res (kernels with Pallas backwards under jax.custom_vjp),
mhc_layer (composed from them around the probe sublayer) and mhc_stack (a loop of that layer). Gradients: `vjp`
below, jax.vjp through the op (i.e. through the custom_vjp backwards), not jitted as a whole. The other spec ops are
the `jax` backend's and are not claimed here (they have no kernels).

Device: jax's default device. On CPU the kernels run in Pallas' interpreter (interpret=True: the kernel bodies
become XLA ops, so the suite executes the kernel code itself); on a GPU they are compiled through the Triton
lowering of pallas_call. float64 is claimed only when interpreted (scoped jax.enable_x64 per call, as the jnp
backend): the kernels are written dtype-generic, but float64 has not been run on a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from ...base import Capabilities
from .. import _checks
from ..backend import JaxBackend
from ._common import default_interpret
from .mhc_coeffs import mhc_coeffs
from .mhc_layer import mhc_layer
from .mhc_post_res import mhc_post_res
from .mhc_pre import mhc_pre
from .mhc_stack import mhc_stack
from .sinkhorn import sinkhorn

KERNEL_OPS = frozenset({"sinkhorn", "mhc_coeffs", "mhc_pre", "mhc_post_res", "mhc_layer", "mhc_stack"})


class PallasBackend(JaxBackend):
    name = "jax-pallas"
    op_functions = {**JaxBackend.op_functions,
                    **{f.__name__: f for f in (sinkhorn, mhc_coeffs, mhc_pre, mhc_post_res, mhc_layer, mhc_stack)}}

    def __init__(self, device=None):
        super().__init__(device)
        interpret = default_interpret()
        dtypes = {"float32", "bfloat16", "float16"} | ({"float64"} if interpret else set())
        self.capabilities = Capabilities(ops=KERNEL_OPS, dtypes=frozenset(dtypes), grad_ops=KERNEL_OPS,
                                         devices=("cpu",) if interpret else ("gpu",))

    @property
    def device(self) -> str:
        return f"{super().device} (Pallas interpret=True)" if default_interpret() else super().device

    def versions(self) -> dict[str, str]:
        return {**super().versions(), "pallas_interpret": str(default_interpret())}

    def vjp(self, op: str, inputs: Sequence[Any], cotangents: Sequence[Any], **options) -> dict[str, Any]:
        """jax.vjp through `op`, not jitted as a whole: the kernels' pallas_calls are jitted and cached per padded
        shape and static setting (option values are runtime scalars), so calls that differ in token count or option
        values reuse compiled kernels, where the jnp backend's one-jit vjp would recompile them for each."""
        if op not in self.capabilities.grad_ops:
            raise NotImplementedError(f"backend {self.name!r} implements no VJP for {op!r}")
        names, wanted = self.vjp_arguments(op, inputs, cotangents)
        fn = getattr(self, op)

        def f(*diff):
            args = list(inputs)
            for i, a in zip(wanted, diff):
                args[i] = a
            out = fn(*args, **options)  # validates, including the NaN/Inf scan of the (concrete) inputs
            return out if isinstance(out, tuple) else (out,)

        with _checks.x64_scope(*inputs, *cotangents):
            for name, a in zip(names, inputs):  # under jax.vjp the differentiated inputs are tracers: scan them here
                if a is not None and hasattr(a, "dtype"):
                    _checks.check_finite(name, a, op)
            outputs, pullback = jax.vjp(f, *[inputs[i] for i in wanted])
            grads = pullback(tuple(jnp.zeros_like(o) if c is None else jnp.asarray(c).astype(o.dtype)
                                   for o, c in zip(outputs, cotangents)))
        return {names[i]: g for i, g in zip(wanted, grads)}


def backend() -> PallasBackend:
    return PallasBackend()
