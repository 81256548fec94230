"""The backend `jax-pallas`: the jnp `jax` backend with its fused ops replaced by Pallas kernels.

Claimed ops: sinkhorn, mhc_coeffs, mhc_pre, mhc_post_res (kernels with Pallas backwards under jax.custom_vjp) and
mhc_layer (composed from them around the probe sublayer). Gradients come from the inherited `vjp` (jax.vjp through
the op, i.e. through the custom_vjp backwards). The other spec ops are the `jax` backend's and are not claimed
here (they have no kernels).

Device: jax's default device. On CPU the kernels run in Pallas' interpreter (interpret=True: the kernel bodies
become XLA ops, so the suite executes the kernel code itself); on a GPU they are compiled through the Triton
lowering of pallas_call. float64 is claimed only when interpreted (scoped jax.enable_x64 per call, as the jnp
backend): the kernels are written dtype-generic, but float64 has not been run on a GPU.
"""

from __future__ import annotations

from mhc_spec.table import load

from ...base import Capabilities
from ..backend import JaxBackend
from ._common import default_interpret
from .mhc_coeffs import mhc_coeffs
from .mhc_layer import mhc_layer
from .mhc_post_res import mhc_post_res
from .mhc_pre import mhc_pre
from .sinkhorn import sinkhorn

SPEC = load()
KERNEL_OPS = frozenset({"sinkhorn", "mhc_coeffs", "mhc_pre", "mhc_post_res", "mhc_layer"})


class PallasBackend(JaxBackend):
    name = "jax-pallas"
    op_functions = {**JaxBackend.op_functions,
                    **{f.__name__: f for f in (sinkhorn, mhc_coeffs, mhc_pre, mhc_post_res, mhc_layer)}}

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


def backend() -> PallasBackend:
    return PallasBackend()
