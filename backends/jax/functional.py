"""Functional mHC for JAX: parameters are pytrees, layers are pure functions of (params, x, sublayer).

    params = init(key, n, C, preset)                         {"phi" (n*C, n*n+2*n), "alpha" (3,), "b" (n*n+2*n,)}
    x1     = mhc_layer(params, x, f, preset=preset)          x (..., n, C); f: (..., C) -> (..., C)
    stack  = stack_init(key, L, n, C, preset)                the same leaves with a leading L axis
    xL     = mhc_stack(stack, x, g, sub_params, preset=preset, recompute_every=L_r)
                                                             lax.scan over the L axis; g(sub_params[l], u)

Everything here is traceable: `jax.jit`, `jax.vmap`, `jax.grad` / `jax.vjp`, `jax.checkpoint` and `lax.scan` compose
with it. Options (the preset's t_max, epsilons, post_scale, res_layout; any of them overridable by keyword) are
Python values and static under jit; shapes and dtypes are checked at trace time with the ops' messages.

Selective recompute (P Sec. 4.3.2): the sublayer output of every layer is tagged `checkpoint_name(f, "mhc_f_out")`,
and `remat_policy` saves only tagged values. `mhc_stack(..., recompute_every=L_r)` wraps each block of L_r layers in
`jax.checkpoint(block, policy=remat_policy)`: the backward keeps per block the block input x_{l0} (nC per token)
and per layer f_l (C per token), and recomputes x_l, the maps, the RMS and the Sinkhorn states of the block (the
mHC ops; F's forward is re-run only as far as F's own backward needs values that are not tagged, e.g. nothing for a
linear F, whose input u_l = H_pre x_l is recomputed by the mHC ops). P Eq. 20's optimum is
`default_recompute_every(n, L)`. Wrap your own code the same way: `jax.checkpoint(fn, policy=remat_policy)`.

Precision: parameters are float32 by default (`dtype=`); with 16-bit x the maps and the mixing run in float32 and
F runs in x's dtype, as the ops do. float64 needs x64 on (`with jax.enable_x64(True):` around init and the calls).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from .. import _config
from . import _checks
from .mhc_coeffs import mhc_coeffs_unchecked, validate, validate_options
from .mhc_post_res import mhc_post_res_unchecked
from .mhc_pre import mhc_pre_unchecked

SCHEMES = _config.INITS
F_OUT = "mhc_f_out"
remat_policy = jax.checkpoint_policies.save_only_these_names(F_OUT)


default_recompute_every = _config.default_recompute_every
pre_bias = _config.pre_bias


def resolve_options(preset: str, overrides: dict, where: str) -> dict:
    """The mhc_coeffs options of `preset` with `overrides`, checked (Python values: static under jit)."""
    return validate_options(where, **_config.preset_options(preset, overrides, where))


# -- parameters -------------------------------------------------------------------------------------------------
def init(key, n: int, C: int, preset: str = "paper", *, scheme: str = "default", alpha_init: float = 0.01,
         phi_std: float = 0.02, res_offdiag: float = 8.0, dtype=jnp.float32) -> dict:
    """{phi, alpha, b} of one layer: alpha = alpha_init, phi ~ N(0, phi_std^2) (0 for "prenorm"),
    b_pre = -ln(n-1) (H_pre = 1/n), b_post = 0, b_res = 0 (or -res_offdiag off the diagonal for "near_identity"),
    the res entries in the preset's res_layout (as `mhc_ref.init.mhc_init` and torch `MHC`)."""
    where = "init"
    n, C = _checks.check_int("n", n, where, 1), _checks.check_int("C", C, where, 1)
    _checks.check_choice("scheme", scheme, SCHEMES, where)
    layout = resolve_options(preset, {}, where)["res_layout"]
    width = n * n + 2 * n
    phi = (jnp.zeros((n * C, width), dtype) if scheme == "prenorm"
           else phi_std * jax.random.normal(key, (n * C, width), dtype))
    b_res = -res_offdiag * (1.0 - jnp.eye(n, dtype=dtype)) if scheme == "near_identity" else jnp.zeros((n, n), dtype)
    if layout == "col_major":
        b_res = b_res.T
    b = jnp.concatenate([jnp.full((n,), pre_bias(n), dtype), jnp.zeros((n,), dtype), b_res.reshape(-1)])
    return {"phi": phi, "alpha": jnp.full((3,), alpha_init, dtype), "b": b}


def stack_init(key, L: int, n: int, C: int, preset: str = "paper", **kwargs) -> dict:
    """`init` for L layers (independent keys), stacked along a leading L axis for `mhc_stack`."""
    L = _checks.check_int("L", L, "stack_init", 1)
    layers = [init(k, n, C, preset, **kwargs) for k in jax.random.split(key, L)]
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *layers)


def _check_params(params, x, where: str, stacked: bool = False) -> None:
    if not isinstance(params, dict) or set(params) != {"phi", "alpha", "b"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise TypeError(f"{where}: params must be a dict with keys ['alpha', 'b', 'phi'] (from init), got {got}")
    if stacked:
        from .mhc_stack import validate_params

        validate_params(x, params["phi"], params["alpha"], params["b"], where)
    else:
        validate(x, params["phi"], params["alpha"], params["b"], where)


# -- one layer --------------------------------------------------------------------------------------------------
def layer_unchecked(params: dict, x, sublayer_fn, options: dict):
    """P Eq. 3 with F = sublayer_fn; f is tagged for `remat_policy`. Traceable, no checks."""
    cd = _checks.compute_dtype(x.dtype)
    h_pre, h_post, h_res = mhc_coeffs_unchecked(x, params["phi"], params["alpha"], params["b"], maps_dtype=cd,
                                                **options)
    u = mhc_pre_unchecked(x, h_pre)  # (..., C)
    f_out = sublayer_fn(u)
    if not hasattr(f_out, "shape") or tuple(f_out.shape) != tuple(u.shape):
        got = tuple(f_out.shape) if hasattr(f_out, "shape") else type(f_out).__name__
        raise ValueError(f"mhc_layer: sublayer must map (..., C) to the same shape {tuple(u.shape)}, got {got}")
    f_out = checkpoint_name(f_out.astype(x.dtype), F_OUT)
    return mhc_post_res_unchecked(x, f_out, h_post, h_res)  # (..., n, C)


def mhc_layer(params: dict, x, sublayer_fn, *, preset: str = "paper", **options):
    """x_{l+1} (..., n, C) = H_res x + H_post^T F(H_pre x), the maps from `params` (see `init`)."""
    opts = resolve_options(preset, options, "mhc_layer")
    _check_params(params, x, "mhc_layer")
    if not callable(sublayer_fn):
        raise TypeError(f"mhc_layer: sublayer_fn must be a function (..., C) -> (..., C), got "
                        f"{type(sublayer_fn).__name__}")
    _checks.check_nonzero_tokens(x, opts["rms_eps"], "mhc_layer")
    with _checks.x64_scope(x, *params.values()):
        return layer_unchecked(params, x, sublayer_fn, opts)


# -- a stack of layers ------------------------------------------------------------------------------------------
def stack_apply(params: dict, x, sublayer_fn, sub_params=None, *, recompute_every=None, **options):
    """`mhc_stack` with checked options and no other checks (the scan and the per-block remat)."""
    L, n = params["phi"].shape[0], x.shape[-2]
    call = (lambda sp, u: sublayer_fn(u)) if sub_params is None else sublayer_fn

    def layers(x, ps):  # ps = (params, sub_params) with a leading axis of the layers to run
        p, sp = ps
        for j in range(jax.tree.leaves(p)[0].shape[0]):
            pj, spj = jax.tree.map(lambda a, j=j: a[j], (p, sp))
            x = layer_unchecked(pj, x, lambda u, spj=spj: call(spj, u), options)
        return x

    if recompute_every == "auto":
        recompute_every = default_recompute_every(n, L)
    elif recompute_every is not None:
        _checks.check_int("recompute_every", recompute_every, "mhc_stack", 0)
    Lr = recompute_every or 0
    if Lr == 0:  # plain scan: autodiff keeps every layer's intermediates
        return jax.lax.scan(lambda x, ps: (layers(x, jax.tree.map(lambda a: a[None], ps)), None), x,
                            (params, sub_params))[0]
    block = jax.checkpoint(layers, policy=remat_policy)
    nb, rem = divmod(L, Lr)
    if nb:
        full = jax.tree.map(lambda a: a[:nb * Lr].reshape(nb, Lr, *a.shape[1:]), (params, sub_params))
        x = jax.lax.scan(lambda x, ps: (block(x, ps), None), x, full)[0]
    if rem:
        x = block(x, jax.tree.map(lambda a: a[nb * Lr:], (params, sub_params)))
    return x


def mhc_stack(params: dict, x, sublayer_fn, sub_params=None, *, preset: str = "paper", recompute_every=None,
              **options):
    """x_L (..., n, C): L layers by `lax.scan` over the stacked params (see `stack_init`). Layer l calls
    `sublayer_fn(u)`, or `sublayer_fn(sub_params_l, u)` with the l-th slice of the pytree `sub_params` (leading
    axis L). `recompute_every`: None / 0 = off, an int L_r, or "auto" (P Eq. 20) - see the module docstring."""
    opts = resolve_options(preset, options, "mhc_stack")
    _check_params(params, x, "mhc_stack", stacked=True)
    if not callable(sublayer_fn):
        raise TypeError(f"mhc_stack: sublayer_fn must be a function, got {type(sublayer_fn).__name__}")
    L = params["phi"].shape[0]
    for leaf in jax.tree.leaves(sub_params):
        if not hasattr(leaf, "shape") or leaf.ndim < 1 or leaf.shape[0] != L:
            raise ValueError(f"mhc_stack: every leaf of sub_params must have a leading axis of L = {L} (from "
                             f"params['phi']), got {getattr(leaf, 'shape', type(leaf).__name__)}")
    _checks.check_nonzero_tokens(x, opts["rms_eps"], "mhc_stack")
    with _checks.x64_scope(x, *params.values()):
        return stack_apply(params, x, sublayer_fn, sub_params, recompute_every=recompute_every, **opts)
