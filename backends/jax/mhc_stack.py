"""L mHC layers in sequence (jnp), P Eq. 3 applied L times around the probe sublayer, as one `lax.scan`:

    x_{l+1} = mhc_layer(x_l; phi[l], alpha[l], b[l], w_sub[l])        l = 0 .. L-1,   y = x_L   (..., n, C)

The parameters are stacked along a leading L axis: phi (L, n*C, n*n+2*n), alpha (L, 3), b (L, n*n+2*n),
w_sub (L, C, C); the scan runs over that axis, so the program size does not grow with L.

`recompute_every=L_r` (a memory knob, not a spec option: it does not change values) cuts the layers into blocks of
L_r, each under `jax.checkpoint` with `functional.remat_policy` (P Sec. 4.3.2): the backward keeps only each block's
input x_{l0} and the sublayer outputs f_l, and recomputes the maps, the Sinkhorn states and x_l inside the block.
"auto" picks P Eq. 20's L_r*. See `functional.mhc_stack` for stacks around any sublayer function.
"""

from __future__ import annotations

from .. import _contract
from . import _checks
from .mhc_coeffs import validate_options
from .mhc_layer import probe_sublayer

OP = "mhc_stack"


def validate_params(x, phi, alpha, b, op: str = OP, **more) -> int:
    """The stacked mHC parameters (and `more`, e.g. w_sub) against x; returns L."""
    _checks.check_stream_state("x", x, op)
    _checks.check_array("phi", phi, op, ndim_min=0, scan=False)
    L, shapes = _contract.stack_shapes(x, phi, op)
    _contract.check_all(_checks.check_like_x, x, {"phi": phi, "alpha": alpha, "b": b, **more}, shapes, op)
    return L


def validate_stack(x, phi, alpha, b, w_sub, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout,
                   op: str = OP) -> tuple[int, dict]:
    """The checks of every mhc_stack implementation; returns L and the normalised options."""
    L = validate_params(x, phi, alpha, b, op, w_sub=w_sub)
    opts = validate_options(op, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout)
    _checks.check_nonzero_tokens(x, rms_eps, op)
    return L, opts


def _probe(w_sub, u):
    return probe_sublayer(u, w_sub)


def mhc_stack(x, phi, alpha, b, w_sub, *, t_max: int = 20, sinkhorn_eps: float = 0.0, pre_eps: float = 0.0,
              post_scale: float = 2.0, rms_eps: float = 1e-20, res_layout: str = "row_major",
              recompute_every: int | str | None = None):
    """x_L (..., n, C) from x_0 (..., n, C). Defaults are the `paper` preset; see the module docstring."""
    from .functional import stack_apply  # functional imports this module's checks

    _, opts = validate_stack(x, phi, alpha, b, w_sub, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps,
                             res_layout)
    with _checks.x64_scope(x, phi, alpha, b, w_sub):
        out = stack_apply({"phi": phi, "alpha": alpha, "b": b}, x, _probe, w_sub, recompute_every=recompute_every,
                          **opts)
    _checks.check_outputs(OP, out, x, phi, alpha, b, w_sub)
    return out
