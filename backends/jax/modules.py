"""Flax NNX modules of mHC (flax is an optional extra: importing `mhc_backends.jax` does not import it).

    h (..., C) --ExpandStreams(n)--> x (..., n, C) --MHC(F_1) ... MHC(F_L)--> x_L --CollapseStreams(n, C)--> (..., C)

`MHC(sublayer, n, dim, preset, mode, impl, init, layer_index, rngs=...)` computes one layer of P Eq. 3,
x_{l+1} = H_res x_l + H_post^T F(H_pre x_l), where F = `sublayer` (an nnx.Module or any function (..., C) -> (..., C))
includes its own pre-norm. `mode` switches the maps, the call sites stay the same (as torch `MHC`):

- "mhc":      P Eqs. 7-9 (`mhc_coeffs`), nnx.Params phi, alpha, b (see `functional.init` for the init schemes).
- "hc":       the Hyper-Connections baseline (P Eq. 5, `hc_coeffs`) with HC Eq. 14's init for `layer_index`.
- "fixed":    P Table 1's ablation maps H_pre = 1/n, H_post = 1, H_res = I; no parameters.
- "residual": the plain pre-norm residual x + F(x), kept in stream 0 (the other streams are 0), so that
              ExpandStreams -> residual layers -> CollapseStreams("sum") is exactly the plain residual network.

`impl="jnp"` runs the jnp ops of this package; `impl="pallas"` the Pallas kernels of the `jax-pallas` backend
(`mhc_backends.jax.kernels`: mhc_coeffs, mhc_pre, mhc_post_res). `preset` fixes the numeric options; any option
(t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout) can be overridden by keyword.

Precision: parameters are float32 (`param_dtype`); with 16-bit activations the maps and the mixing run in float32
and the new state is cast back to x's dtype; F runs in x's dtype. Use param_dtype=jnp.float64 (under x64) for
float64. The sublayer output is tagged for `functional.remat_policy`, so `nnx.remat(..., policy=remat_policy)` over
a block of MHC layers gives the selective recompute of P Sec. 4.3.2.

DeepSeek-V4 checkpoints: `MHC.load_deepseek(fn, scale, base)` on a module with preset="deepseek_v4",
`CollapseStreams.load_deepseek(hc_head_fn, hc_head_scale, hc_head_base)` (see `deepseek`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from .. import _config, _contract
from . import _checks, functional
from .collapse_streams import collapse_streams_unchecked
from .expand_streams import expand_streams
from .hc_coeffs import hc_coeffs_unchecked
from .mhc_post_res import mhc_post_res_unchecked
from .mhc_pre import mhc_pre_unchecked

MODES = _config.MODES
IMPLS = ("jnp", "pallas")
INITS = _config.INITS
COLLAPSE_MODES = _contract.COLLAPSE_MODES
HC_NAMES = ("theta_pre", "theta_post", "theta_res", "alpha", "b_pre", "b_post", "b_res")


def _check_state(x, n: int, dim: int | None, param_dtype, where: str) -> None:
    """x (..., n, C) with a dtype the parameters can serve (trace-time checks; the NaN/Inf scan on eager calls)."""
    if not isinstance(x, jax.Array):
        raise TypeError(f"{where}: x must be a jax.Array of shape (..., n={n}, C), got {type(x).__name__}")
    _contract.module_state("x", x, n, dim, where)
    if jnp.dtype(x.dtype) not in _checks.FLOAT_DTYPES:
        raise TypeError(f"{where}: x must have a float dtype, got {x.dtype}")
    if param_dtype is not None:
        xd = jnp.dtype(x.dtype)
        allowed = (xd, jnp.dtype(jnp.float32)) if xd in _checks.LOW_PRECISION else (xd,)
        if jnp.dtype(param_dtype) not in allowed:
            raise TypeError(f"{where}: x has dtype {xd} but the parameters are {jnp.dtype(param_dtype)}; use "
                            f"{' or '.join(map(str, allowed))} parameters (param_dtype=...)")
    _checks.check_finite("x", x, where)


def _key(rngs, where: str):
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"{where}: rngs must be an nnx.Rngs (e.g. nnx.Rngs(0)), got {type(rngs).__name__}")
    return rngs.params()


class MHC(nnx.Module):
    """One residual layer of P Eq. 3 around `sublayer` (see the module docstring for modes and parameters)."""

    def __init__(self, sublayer, n: int = 4, dim: int | None = None, preset: str = "paper", mode: str = "mhc",
                 impl: str = "jnp", init: str = "default", layer_index: int = 0, *, rngs: nnx.Rngs | None = None,
                 alpha_init: float = 0.01, phi_std: float = 0.02, res_offdiag: float = 8.0,
                 param_dtype=jnp.float32, **options):
        where = "MHC"
        _config.check_layer(sublayer, n, dim, mode, impl, init, layer_index, impls=IMPLS, module="nnx.Module")
        self.sublayer = sublayer
        self.n, self.dim, self.preset, self.mode, self.impl = n, dim, preset, mode, impl
        self.init_scheme, self.layer_index = init, layer_index
        self.options = functional.resolve_options(preset, options, where)
        self.param_dtype = jnp.dtype(param_dtype) if mode in ("mhc", "hc") else None
        if mode == "mhc":
            key = _key(rngs, where) if init != "prenorm" else jax.random.PRNGKey(0)  # prenorm draws nothing
            p = functional.init(key, n, dim, preset, scheme=init, alpha_init=alpha_init, phi_std=phi_std,
                                res_offdiag=res_offdiag, dtype=param_dtype)
            self.phi, self.alpha, self.b = (nnx.Param(p[k]) for k in ("phi", "alpha", "b"))
        elif mode == "hc":  # HC Eq. 14
            dt = param_dtype
            self.theta_pre = nnx.Param(jnp.zeros((dim,), dt))
            self.theta_post = nnx.Param(jnp.zeros((dim,), dt))
            self.theta_res = nnx.Param(jnp.zeros((n, dim), dt))
            self.alpha = nnx.Param(jnp.full((3,), alpha_init, dt))
            self.b_pre = nnx.Param(jnp.eye(n, dtype=dt)[layer_index % n])
            self.b_post = nnx.Param(jnp.ones((n,), dt))
            self.b_res = nnx.Param(jnp.eye(n, dtype=dt))

    # -- parameters -----------------------------------------------------------------------------------------------
    def params(self) -> tuple:
        """The map parameters' values in the order `maps_from` takes them."""
        if self.mode == "mhc":
            return (self.phi[...], self.alpha[...], self.b[...])
        if self.mode == "hc":
            return tuple(getattr(self, k)[...] for k in HC_NAMES)
        return ()

    def load_deepseek(self, fn, scale, base) -> MHC:
        """Copy DeepSeek-V4 parameters (fn (n*n+2*n, n*C) = phi^T, scale (3,), base (n*n+2*n,)) into this module."""
        from .deepseek import load_deepseek

        load_deepseek(self, fn, scale, base)
        return self

    # -- ops by impl ----------------------------------------------------------------------------------------------
    def _kernels(self):
        """The Pallas kernel functions for impl="pallas", else None (jnp ops)."""
        if self.impl != "pallas":
            return None
        try:
            from . import kernels

            _ = (kernels.mhc_coeffs, kernels.mhc_pre, kernels.mhc_post_res)
        except (ImportError, AttributeError) as e:
            raise NotImplementedError(f"MHC(impl='pallas'): the Pallas kernels (mhc_backends.jax.kernels) are not "
                                      f"available: {e}; use impl='jnp'") from e
        return kernels

    def maps_from(self, x, *params):
        """(H_pre (..., n), H_post (..., n), H_res (..., n, n)) of x for the given parameters; float32 maps for
        16-bit x. Fixed and residual modes return their constant maps."""
        n, lead = self.n, x.shape[:-2]
        cd = _checks.compute_dtype(x.dtype)
        if self.mode in ("fixed", "residual"):
            eye = jnp.eye(n, dtype=cd)
            if self.mode == "fixed":
                h_pre, h_post, h_res = jnp.full((n,), 1.0 / n, cd), jnp.ones((n,), cd), eye
            else:
                h_pre = h_post = eye[0]
                h_res = jnp.outer(eye[0], eye[0])
            return (jnp.broadcast_to(h_pre, (*lead, n)), jnp.broadcast_to(h_post, (*lead, n)),
                    jnp.broadcast_to(h_res, (*lead, n, n)))
        if self.mode == "hc":
            return hc_coeffs_unchecked(x, *params, rms_eps=self.options["rms_eps"], maps_dtype=cd)
        kernels = self._kernels()
        if kernels is not None:
            return kernels.mhc_coeffs(x, *params, maps_dtype=cd, **self.options)
        return functional.mhc_coeffs_unchecked(x, *params, maps_dtype=cd, **self.options)

    def maps(self, x):
        """The maps this layer applies to x (..., n, C); e.g. for `amax_gain` diagnostics."""
        _check_state(x, self.n, self.dim, self.param_dtype, "MHC.maps")
        return self.maps_from(x, *self.params())

    def pre(self, x, h_pre):
        kernels = self._kernels()
        return kernels.mhc_pre(x, h_pre) if kernels is not None else mhc_pre_unchecked(x, h_pre)

    def post_res(self, x, f_out, h_post, h_res):
        kernels = self._kernels()
        if kernels is not None:
            return kernels.mhc_post_res(x, f_out, h_post, h_res)
        return mhc_post_res_unchecked(x, f_out, h_post, h_res)

    def call_sublayer(self, u, x_dtype):
        f_out = self.sublayer(u)
        if not isinstance(f_out, jax.Array) or f_out.shape != u.shape:
            got = tuple(f_out.shape) if isinstance(f_out, jax.Array) else type(f_out).__name__
            raise ValueError(f"MHC: sublayer must map (..., C) to the same shape {tuple(u.shape)}, got {got}")
        return functional.checkpoint_name(f_out.astype(x_dtype), functional.F_OUT)

    # -- forward --------------------------------------------------------------------------------------------------
    def __call__(self, x):
        """x_l (..., n, C) -> x_{l+1} (..., n, C)."""
        _check_state(x, self.n, self.dim, self.param_dtype, "MHC")
        with _checks.x64_scope(x):
            if self.mode == "residual":  # stream 0 carries the residual state, the others are 0
                x0 = x[..., 0, :]  # (..., C)
                y0 = x0 + self.call_sublayer(x0, x.dtype)
                return jnp.concatenate([y0[..., None, :], jnp.zeros_like(x[..., 1:, :])], axis=-2)
            if self.mode == "fixed":  # H_pre = 1/n, H_post = 1, H_res = I
                f_out = self.call_sublayer(jnp.mean(x.astype(_checks.compute_dtype(x.dtype)), axis=-2)
                                           .astype(x.dtype), x.dtype)
                return x + f_out[..., None, :]
            h_pre, h_post, h_res = self.maps_from(x, *self.params())
            f_out = self.call_sublayer(self.pre(x, h_pre), x.dtype)  # (..., C)
            return self.post_res(x, f_out, h_post, h_res)  # (..., n, C)


class ExpandStreams(nnx.Module):
    """(..., C) -> (..., n, C) by copying (HC Algorithm 1); no parameters."""

    def __init__(self, n: int = 4):
        self.n = _checks.check_int("n", n, "ExpandStreams", 1)

    def __call__(self, h):
        return expand_streams(h, n=self.n)


class CollapseStreams(nnx.Module):
    """(..., n, C) -> (..., C) by `sum` (HC) or DeepSeek-V4's learned `head`:
    w = sigmoid(alpha_head (x_bar @ phi_head) / r + b_head) + pre_eps, y = sum_k w_k x_k.

    Head init: phi_head ~ N(0, phi_std^2), alpha_head = alpha_init, b_head = -ln(n-1), so w ~ 1/n. rms_eps and
    pre_eps come from `preset`.
    """

    def __init__(self, n: int = 4, dim: int | None = None, mode: str = "sum", preset: str = "paper", *,
                 rngs: nnx.Rngs | None = None, alpha_init: float = 0.01, phi_std: float = 0.02,
                 param_dtype=jnp.float32):
        where = "CollapseStreams"
        opts = _config.check_collapse(n, dim, mode, preset, where)
        self.n, self.mode, self.dim, self.preset = int(n), mode, dim, preset
        self.rms_eps, self.pre_eps = opts["rms_eps"], opts["pre_eps"]
        self.param_dtype = None
        if mode == "head":
            dt = self.param_dtype = jnp.dtype(param_dtype)
            self.phi_head = nnx.Param(phi_std * jax.random.normal(_key(rngs, where), (n * dim, n), dt))
            self.alpha_head = nnx.Param(jnp.full((1,), alpha_init, dt))
            self.b_head = nnx.Param(jnp.full((n,), functional.pre_bias(n), dt))

    def load_deepseek(self, hc_head_fn, hc_head_scale, hc_head_base) -> CollapseStreams:
        """Copy DeepSeek-V4's head (hc_head_fn (n, n*C), hc_head_scale (1,), hc_head_base (n,)) into this module."""
        from .deepseek import load_deepseek_head

        load_deepseek_head(self, hc_head_fn, hc_head_scale, hc_head_base)
        return self

    def __call__(self, x):
        head = self.mode == "head"
        _check_state(x, self.n, self.dim if head else None, self.param_dtype, "CollapseStreams")
        params = (self.phi_head[...], self.alpha_head[...], self.b_head[...]) if head else (None, None, None)
        with _checks.x64_scope(x):
            return collapse_streams_unchecked(x, *params, mode=self.mode, rms_eps=self.rms_eps, pre_eps=self.pre_eps)
