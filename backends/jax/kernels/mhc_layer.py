"""One mHC layer from the Pallas kernels, P Eq. 3 with the maps of Eqs. 7-9:

    H_pre, H_post, H_res = mhc_coeffs(x_l)                       (one fused kernel, Sinkhorn on the tile)
    x_{l+1} = mhc_post_res(x_l, F(mhc_pre(x_l, H_pre)), H_post, H_res)

`sublayer` is a (C, C) array w_sub (the spec's probe sublayer F(u) = tanh(rmsnorm(u) @ w_sub), run as jnp code) or
any function (..., C) -> (..., C). With 16-bit x the maps stay in float32, as in the jnp layer. Gradients flow
through the three kernels' custom_vjp backwards (or the jnp ops' VJPs with backward="reference") and through F by
autodiff.
"""

from __future__ import annotations

from .. import _checks
from ..mhc_layer import is_array, probe_sublayer, validate_layer
from . import mhc_post_res as _post_res
from . import mhc_pre as _pre
from ._common import resolve
from .mhc_coeffs import Options, mhc_coeffs_unchecked

OP = "mhc_layer"


def mhc_layer_unchecked(x, phi, alpha, b, sublayer, o: Options):
    """The layer on validated inputs; traceable (jit / grad / vmap / checkpoint)."""
    h_pre, h_post, h_res = mhc_coeffs_unchecked(x, phi, alpha, b, o, maps_dtype=_checks.compute_dtype(x.dtype))
    u = _pre.mhc_pre_unchecked(x, h_pre, _pre.Options(o.interpret, o.backward))  # (..., C)
    f_out = probe_sublayer(u, sublayer) if is_array(sublayer) else sublayer(u)
    return _post_res.mhc_post_res_unchecked(x, f_out.astype(x.dtype), h_post, h_res,
                                            _post_res.Options(o.interpret, o.backward))  # (..., n, C)


def mhc_layer(x, phi, alpha, b, sublayer, *, t_max: int = 20, sinkhorn_eps: float = 0.0, pre_eps: float = 0.0,
              post_scale: float = 2.0, rms_eps: float = 1e-20, res_layout: str = "row_major",
              interpret: bool | None = None, backward: str = "pallas"):
    """x_{l+1} (..., n, C) from x_l (..., n, C), P Eq. 3, from the Pallas kernels. Defaults are the `paper` preset;
    `interpret` defaults to True on CPU; `backward="reference"` takes the kernels' gradients from the jnp ops."""
    opts = validate_layer(x, phi, alpha, b, sublayer, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps,
                          res_layout)
    o = Options(**opts, interpret=resolve(interpret, backward, OP), backward=backward)
    with _checks.x64_scope(x, phi, alpha, b, sublayer if is_array(sublayer) else None):
        return mhc_layer_unchecked(x, phi, alpha, b, sublayer, o)
