"""L mHC layers from the Pallas kernels, P Eq. 3 applied L times around the probe sublayer:

    x_{l+1} = mhc_layer(x_l; phi[l], alpha[l], b[l], w_sub[l])        l = 0 .. L-1,   y = x_L   (..., n, C)

Each layer is the kernel `mhc_layer` (mhc_coeffs, mhc_pre and mhc_post_res kernels, the probe sublayer as jnp code)
on row l of the stacked parameters, as the torch-triton op does. A Python loop, not a `lax.scan`: called eagerly,
every layer reuses the kernels compiled for the first one; under a caller's `jax.jit` the program grows with L (for
deep stacks under jit, `mhc_backends.jax.functional` scans the layers). The inputs are checked once
(`validate_stack`), not per layer.
"""

from __future__ import annotations

from .. import _checks
from ..mhc_stack import validate_stack
from ._common import resolve
from .mhc_coeffs import Options
from .mhc_layer import mhc_layer_unchecked

OP = "mhc_stack"


def mhc_stack(x, phi, alpha, b, w_sub, *, t_max: int = 20, sinkhorn_eps: float = 0.0, pre_eps: float = 0.0,
              post_scale: float = 2.0, rms_eps: float = 1e-20, res_layout: str = "row_major",
              interpret: bool | None = None, backward: str = "pallas"):
    """x_L (..., n, C) from x_0 (..., n, C). Defaults are the `paper` preset."""
    L, opts = validate_stack(x, phi, alpha, b, w_sub, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps,
                             res_layout)
    o = Options(**opts, interpret=resolve(interpret, backward, OP), backward=backward)
    with _checks.x64_scope(x, phi, alpha, b, w_sub):
        for layer in range(L):
            x = mhc_layer_unchecked(x, phi[layer], alpha[layer], b[layer], w_sub[layer], o)
    return x
