"""nn.Module API of mHC: wrap any sublayer, enter and leave the n-stream space, switch to the baselines.

    h (..., C) --ExpandStreams(n)--> x (..., n, C) --MHC(F_1) ... MHC(F_L)--> x_L --CollapseStreams(n, C)--> (..., C)

`MHC(sublayer, n, dim, preset, mode, impl, init, layer_index)` computes one layer of P Eq. 3,

    x_{l+1} = H_res x_l + H_post^T F(H_pre x_l),

where F = `sublayer` includes its own pre-norm (a Transformer block has two: attention and MLP). `mode` switches the
maps while the call sites stay the same:

- "mhc":      the manifold-constrained maps of P Eqs. 7-9 (`mhc_coeffs`), parameters phi, alpha, b.
- "hc":       the Hyper-Connections baseline (P Eq. 5, `hc_coeffs`) with HC Eq. 14's initialisation for sublayer
              `layer_index` (b_pre = e_{layer_index mod n}, b_post = 1, b_res = I, theta = 0, alpha = 0.01).
- "fixed":    P Table 1's ablation maps H_pre = 1/n, H_post = 1, H_res = I; no parameters.
- "residual": the plain pre-norm residual x + F(x). The stream axis is kept so that call sites do not change; the
              residual state lives in stream 0 and the other streams are set to 0, i.e. the fixed maps
              H_pre = e_0, H_post = e_0, H_res = e_0 e_0^T. After ExpandStreams(n) and a stack of residual-mode layers,
              CollapseStreams(mode="sum") returns exactly the plain residual network's output h_L (adding zeros is
              exact). Use n = 1 to also drop the n-fold memory; "head" collapse is not the plain baseline.

`impl="eager"` runs the eager ops of this package; `impl="triton"` the fused kernels of the `torch-triton` backend.
`preset` ("paper" or "deepseek_v4") fixes the numeric options of `mhc_spec`; any option (t_max, sinkhorn_eps,
pre_eps, post_scale, rms_eps, res_layout) can be overridden by keyword.

Precision: the mHC parameters are float32 and stay float32 when the module is cast to bfloat16/float16 (like
DeepSeek's `_keep_in_fp32_modules`); `.double()` makes them float64 for float64 tests. With 16-bit activations the
maps are computed in float32 with autocast switched off (DeepSeek computes them in fp32), the stream mixing runs in
float32 and the new state is cast back to x's dtype; F runs in x's dtype.

State-dict keys (besides `sublayer.*`, the wrapped module's own):

    mode "mhc":   phi (n*C, n*n+2*n)   alpha (3,) = (alpha_pre, alpha_post, alpha_res)   b (n*n+2*n,)
                  columns of phi / entries of b ordered [pre n | post n | res n*n], res in the preset's res_layout
    mode "hc":    theta_pre (C,)  theta_post (C,)  theta_res (n, C)  alpha (3,)  b_pre (n,)  b_post (n,)  b_res (n, n)
    "fixed", "residual": none
    CollapseStreams(mode="head"): phi_head (n*C, n)  alpha_head (1,)  b_head (n,)
    every MHC / CollapseStreams: _extra_state, the configuration dict (mode, n, dim, preset, resolved options)

DeepSeek-V4 checkpoints (`fn` = phi^T, `scale` = alpha, `base` = b, comb in col_major order) load with
`MHC.load_deepseek(fn, scale, base)` on a module built with preset="deepseek_v4"; the head with
`CollapseStreams.load_deepseek(hc_head_fn, hc_head_scale, hc_head_base)` (see `mhc_backends.torch.deepseek`).

Input checks: every forward checks x's shape (..., n, C), dtype and device against the parameters (no host sync);
the NaN/Inf scan of x and of the module's own parameters (one pass each) follows `set_check_finite`: in the default
"auto" mode it runs on CPU tensors and not on CUDA ones, where reading its verdict would stall the stream once per
layer (see `_checks`); skipped under torch.compile. The state dict carries the configuration (mode, n, dim,
preset and its resolved options) as `_extra_state`; loading one saved with another configuration is a ValueError
(state dicts without it load as before).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import _config, _contract
from . import _checks
from .collapse_streams import collapse_streams_unchecked
from .expand_streams import expand_streams
from .hc_coeffs import hc_coeffs_unchecked
from .mhc_coeffs import mhc_coeffs_unchecked, validate_options
from .mhc_layer import maps_and_pre
from .mhc_post_res import mhc_post_res_unchecked
from .mhc_pre import mhc_pre_unchecked

MODES = _config.MODES
IMPLS = ("eager", "triton")
INITS = _config.INITS
COLLAPSE_MODES = _contract.COLLAPSE_MODES
HC_NAMES = ("theta_pre", "theta_post", "theta_res", "alpha", "b_pre", "b_post", "b_res")
pre_bias = _config.pre_bias


def _resolve_options(preset: str, overrides: dict, where: str) -> dict:
    opts = _config.preset_options(preset, overrides, where)
    validate_options(where, **opts)
    return opts


def _check_state(x, n: int, dim: int | None, ref: torch.Tensor | None, where: str, scan: bool = True) -> None:
    """x (..., n, C) on the parameters' device with a dtype they can serve (cheap; no host sync but the scan, which
    `scan=False` leaves to the caller)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where}: x must be a torch.Tensor of shape (..., n={n}, C), got {type(x).__name__}")
    _contract.module_state("x", x, n, dim, where)
    if x.dtype not in _checks.FLOAT_DTYPES:
        raise TypeError(f"{where}: x must have a float dtype, got {x.dtype}")
    if ref is not None:
        _checks.check_device("parameters", ref, x, where)
        allowed = (x.dtype, torch.float32) if x.dtype in _checks.LOW_PRECISION else (x.dtype,)
        if ref.dtype not in allowed:
            raise TypeError(f"{where}: x has dtype {x.dtype} but the parameters are {ref.dtype}; use "
                            f"{' or '.join(map(str, allowed))} parameters (e.g. module.float() or module.double())")
    if scan:
        _checks.check_finite("x", x, where, hot=True)


def _check_params(module: nn.Module, where: str) -> None:
    """The module's own parameters hold no NaN/Inf (one host sync for all; part of the opt-out scan), as the fused
    kernels' checks name them."""
    params = [(k, p) for k, p in module._parameters.items() if p is not None]
    if not params or not _checks.check_finite_enabled(params[0][1], hot=True) or params[0][1].device.type == "meta":
        return
    if not bool(torch.stack([_checks.finite_flag(p) for _, p in params]).all()):
        for name, p in params:
            _checks.check_finite(name, p, where)


class _Config:
    """Mixin: the module's configuration (mode, preset, resolved options) travels in the state dict as
    `_extra_state`, and loading a state dict saved with another configuration is refused: the parameters' meaning
    (e.g. the res_layout of b and phi's residual columns) and the outputs depend on it. State dicts without the
    entry (saved before it existed) still load, unchecked."""

    def _config(self) -> dict:
        raise NotImplementedError

    def get_extra_state(self) -> dict:
        return self._config()

    def set_extra_state(self, state) -> None:
        mine = self._config()
        if not isinstance(state, dict):
            raise ValueError(f"{type(self).__name__}: the state dict's _extra_state must be the dict this class "
                             f"saves, got {type(state).__name__}")
        diff = {k: (state.get(k), mine[k]) for k in mine if k in state and state[k] != mine[k]}
        if diff:
            shown = ", ".join(f"{k}: saved {a!r}, this module {b!r}" for k, (a, b) in diff.items())
            raise ValueError(f"{type(self).__name__}: the state dict was saved by a module with another configuration "
                             f"({shown}); build the module with the saved configuration, or convert the parameters")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "_extra_state"
        if key not in state_dict:  # saved before the configuration was stored: load as before
            state_dict[key] = self._config()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class _KeepFp32:
    """Mixin: the module's own parameters stay float32 when it is cast to a 16-bit dtype."""

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        for p in self._parameters.values():
            if p is not None and p.dtype in _checks.LOW_PRECISION:
                p.data = p.data.float()
        return self


class MHC(_Config, _KeepFp32, nn.Module):
    """One residual layer of P Eq. 3 around `sublayer` (see the module docstring for modes and parameters)."""

    def __init__(self, sublayer: nn.Module, n: int = 4, dim: int | None = None, preset: str = "paper",
                 mode: str = "mhc", impl: str = "eager", init: str = "default", layer_index: int = 0, *,
                 alpha_init: float = 0.01, phi_std: float = 0.02, res_offdiag: float = 8.0, **options):
        super().__init__()
        where = "MHC"
        _config.check_layer(sublayer, n, dim, mode, impl, init, layer_index, impls=IMPLS, module="nn.Module")
        _checks.check_float("alpha_init", alpha_init, where, minimum=-math.inf)
        _checks.check_float("phi_std", phi_std, where)
        _checks.check_float("res_offdiag", res_offdiag, where)
        n, layer_index = int(n), int(layer_index)  # check_layer admits numpy ints; the config keeps Python ints
        dim = int(dim) if mode in ("mhc", "hc") else dim
        self.sublayer = sublayer
        self.n, self.dim, self.preset, self.mode, self.impl = n, dim, preset, mode, impl
        self.init_scheme, self.layer_index = init, layer_index
        self.options = _resolve_options(preset, options, where)
        self._init_kw = dict(alpha_init=alpha_init, phi_std=phi_std, res_offdiag=res_offdiag)
        width = n * n + 2 * n
        if mode == "mhc":
            self.phi = nn.Parameter(torch.empty(n * dim, width))
            self.alpha = nn.Parameter(torch.empty(3))
            self.b = nn.Parameter(torch.empty(width))
        elif mode == "hc":
            self.theta_pre = nn.Parameter(torch.empty(dim))
            self.theta_post = nn.Parameter(torch.empty(dim))
            self.theta_res = nn.Parameter(torch.empty(n, dim))
            self.alpha = nn.Parameter(torch.empty(3))
            self.b_pre = nn.Parameter(torch.empty(n))
            self.b_post = nn.Parameter(torch.empty(n))
            self.b_res = nn.Parameter(torch.empty(n, n))
        self.reset_parameters()

    # -- parameters -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """mHC: alpha = alpha_init, phi ~ N(0, phi_std^2) (zero for init="prenorm"), b_pre = -ln(n-1),
        b_post = 0, b_res = 0 (or 0 / -res_offdiag for "near_identity"). HC: HC Eq. 14 for `layer_index`."""
        n, kw = self.n, self._init_kw
        if self.mode == "mhc":
            if self.init_scheme == "prenorm":
                self.phi.zero_()
            else:
                self.phi.normal_(0.0, kw["phi_std"])
            self.alpha.fill_(kw["alpha_init"])
            b_res = torch.zeros(n, n)
            if self.init_scheme == "near_identity":
                b_res = -kw["res_offdiag"] * (1.0 - torch.eye(n))
            if self.options["res_layout"] == "col_major":
                b_res = b_res.T
            self.b.copy_(torch.cat([torch.full((n,), pre_bias(n)), torch.zeros(n), b_res.reshape(-1)]))
        elif self.mode == "hc":
            for name in ("theta_pre", "theta_post", "theta_res"):
                getattr(self, name).zero_()
            self.alpha.fill_(kw["alpha_init"])
            self.b_pre.copy_(torch.eye(n)[self.layer_index % n])
            self.b_post.fill_(1.0)
            self.b_res.copy_(torch.eye(n))

    def _ref_param(self) -> torch.Tensor | None:
        return self.alpha if self.mode in ("mhc", "hc") else None

    def _config(self) -> dict:
        return {"mode": self.mode, "n": self.n, "dim": self.dim, "preset": self.preset, **self.options}

    def load_deepseek(self, fn: torch.Tensor, scale: torch.Tensor, base: torch.Tensor) -> MHC:
        """Copy DeepSeek-V4 parameters (fn (n*n+2*n, n*C) = phi^T, scale (3,), base (n*n+2*n,)) into this module."""
        from .deepseek import load_deepseek

        load_deepseek(self, fn, scale, base)
        return self

    # -- ops by impl ----------------------------------------------------------------------------------------------
    def _kernels(self):
        """The fused-kernel functions (`mhc_backends.torch.kernels`) for impl="triton", else None (eager ops)."""
        if self.impl != "triton":
            return None
        from . import kernels  # imported on first use: importing the modules must not import triton

        return kernels

    def params(self) -> tuple[torch.Tensor, ...]:
        """The map parameters in the order `maps_from` takes them."""
        if self.mode == "mhc":
            return (self.phi, self.alpha, self.b)
        if self.mode == "hc":
            return tuple(getattr(self, k) for k in HC_NAMES)
        return ()

    def maps_from(self, x: torch.Tensor, *params: torch.Tensor):
        """(H_pre (..., n), H_post (..., n), H_res (..., n, n)) of x for the given parameters; float32 maps for
        16-bit x (eager impl). Fixed and residual modes return their constant maps."""
        n, lead = self.n, x.shape[:-2]
        cd = _checks.compute_dtype(x.dtype)
        if self.mode in ("fixed", "residual"):
            eye = torch.eye(n, dtype=cd, device=x.device)
            if self.mode == "fixed":
                h_pre, h_post, h_res = torch.full((n,), 1.0 / n, dtype=cd, device=x.device), eye.new_ones(n), eye
            else:
                h_pre = h_post = eye[0]
                h_res = torch.outer(eye[0], eye[0])
            return h_pre.expand(*lead, n), h_post.expand(*lead, n), h_res.expand(*lead, n, n)
        with torch.autocast(device_type=x.device.type, enabled=False):  # the maps in fp32 even under autocast
            if self.mode == "hc":
                return hc_coeffs_unchecked(x, *params, rms_eps=self.options["rms_eps"], maps_dtype=cd)
            kernels = self._kernels()
            coeffs = kernels.mhc_coeffs if kernels is not None else mhc_coeffs_unchecked
            return coeffs(x, *params, maps_dtype=cd, **self.options)

    def maps(self, x: torch.Tensor):
        """The maps this layer applies to x (..., n, C); e.g. for `amax_gain` diagnostics."""
        _check_state(x, self.n, self.dim, self._ref_param(), "MHC.maps")
        return self.maps_from(x, *self.params())

    def pre(self, x: torch.Tensor, h_pre: torch.Tensor) -> torch.Tensor:
        kernels = self._kernels()
        return kernels.mhc_pre(x, h_pre) if kernels is not None else mhc_pre_unchecked(x, h_pre)

    def post_res(self, x, f_out, h_post, h_res) -> torch.Tensor:
        kernels = self._kernels()
        if kernels is not None:
            return kernels.mhc_post_res(x, f_out.to(x.dtype), h_post, h_res)
        return mhc_post_res_unchecked(x, f_out, h_post, h_res)

    def call_sublayer(self, u: torch.Tensor) -> torch.Tensor:
        f_out = self.sublayer(u)
        if not isinstance(f_out, torch.Tensor) or f_out.shape != u.shape:
            got = tuple(f_out.shape) if isinstance(f_out, torch.Tensor) else type(f_out).__name__
            raise ValueError(f"MHC: sublayer must map (..., C) to the same shape {tuple(u.shape)}, got {got}")
        return f_out

    # -- forward --------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x_l (..., n, C) -> x_{l+1} (..., n, C)."""
        fused = self.impl == "eager" and self.mode == "mhc"  # every read of x in one node (mhc_layer.PreProjection)
        _check_state(x, self.n, self.dim, self._ref_param(), "MHC", scan=not fused)  # fused: scanned by the projection
        if self.mode == "residual":  # stream 0 carries the residual state, the others are 0
            x0 = x[..., 0, :]  # (..., C)
            y0 = x0 + self.call_sublayer(x0)
            if self.n == 1:
                return y0.unsqueeze(-2)
            return torch.cat([y0.unsqueeze(-2), torch.zeros_like(x[..., 1:, :])], dim=-2)
        if self.mode == "fixed":  # H_pre = 1/n, H_post = 1, H_res = I
            f_out = self.call_sublayer(x.mean(dim=-2))
            return x + f_out.unsqueeze(-2)
        _check_params(self, "MHC")
        if self.impl == "eager":  # the kernels check their own inputs
            _checks.check_nonzero_tokens(x, self.options["rms_eps"], "MHC", per_stream=self.mode == "hc", hot=True)
        lead, (n, C) = x.shape[:-2], x.shape[-2:]
        # the three ops read x through one (N, n, C) view: their x-gradients then reach one buffer as fresh tensors,
        # which autograd sums in place (a gradient that arrives as a view is summed out of place: +1 state copy)
        x3 = x.reshape(math.prod(lead), n, C)
        if fused:
            with torch.autocast(device_type=x.device.type, enabled=False):
                u, h_post, h_res, x_mix = maps_and_pre(x3, *self.params(), **self.options, scan=("x", "MHC"))
            f_out = self.call_sublayer(u.reshape(*lead, C))  # (..., C)
            y = mhc_post_res_unchecked(x_mix, f_out.reshape(x3.shape[0], C), h_post, h_res, out_dtype=x.dtype)
            return y.reshape(x.shape)  # (..., n, C)
        h_pre, h_post, h_res = self.maps_from(x3, *self.params())
        f_out = self.call_sublayer(self.pre(x3, h_pre).reshape(*lead, C))  # (..., C)
        return self.post_res(x3, f_out.reshape(x3.shape[0], C), h_post, h_res).reshape(x.shape)  # (..., n, C)

    def extra_repr(self) -> str:
        return (f"n={self.n}, dim={self.dim}, mode={self.mode!r}, preset={self.preset!r}, impl={self.impl!r}, "
                f"init={self.init_scheme!r}, layer_index={self.layer_index}")


class ExpandStreams(nn.Module):
    """(..., C) -> (..., n, C) by copying (HC Algorithm 1); no parameters."""

    def __init__(self, n: int = 4):
        super().__init__()
        self.n = _checks.check_int("n", n, "ExpandStreams", 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return expand_streams(h, n=self.n)

    def extra_repr(self) -> str:
        return f"n={self.n}"


class CollapseStreams(_Config, _KeepFp32, nn.Module):
    """(..., n, C) -> (..., C) by `sum` (HC) or DeepSeek-V4's learned `head`:
    w = sigmoid(alpha_head (x_bar @ phi_head) / r + b_head) + pre_eps, y = sum_k w_k x_k.

    Head init: phi_head ~ N(0, phi_std^2), alpha_head = alpha_init, b_head = -ln(n-1), so w ~ 1/n (the stream
    mean; sum collapse gives n times that, which a following RMSNorm does not see). rms_eps and pre_eps come from
    `preset`.
    """

    def __init__(self, n: int = 4, dim: int | None = None, mode: str = "sum", preset: str = "paper", *,
                 alpha_init: float = 0.01, phi_std: float = 0.02):
        super().__init__()
        where = "CollapseStreams"
        opts = _config.check_collapse(n, dim, mode, preset, where)
        _checks.check_float("alpha_init", alpha_init, where, minimum=-math.inf)
        _checks.check_float("phi_std", phi_std, where)
        n, dim = int(n), int(dim) if mode == "head" else dim  # numpy ints admitted; the config keeps Python ints
        self.n, self.mode, self.dim, self.preset = n, mode, dim, preset
        self.rms_eps, self.pre_eps = opts["rms_eps"], opts["pre_eps"]
        self._init_kw = dict(alpha_init=alpha_init, phi_std=phi_std)
        if mode == "head":
            self.phi_head = nn.Parameter(torch.empty(n * dim, n))
            self.alpha_head = nn.Parameter(torch.empty(1))
            self.b_head = nn.Parameter(torch.empty(n))
            self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.mode == "head":
            self.phi_head.normal_(0.0, self._init_kw["phi_std"])
            self.alpha_head.fill_(self._init_kw["alpha_init"])
            self.b_head.fill_(pre_bias(self.n))

    def _config(self) -> dict:
        return {"mode": self.mode, "n": self.n, "dim": self.dim, "preset": self.preset, "rms_eps": self.rms_eps,
                "pre_eps": self.pre_eps}

    def load_deepseek(self, hc_head_fn, hc_head_scale, hc_head_base) -> CollapseStreams:
        """Copy DeepSeek-V4's head (hc_head_fn (n, n*C), hc_head_scale (1,), hc_head_base (n,)) into this module."""
        from .deepseek import load_deepseek_head

        load_deepseek_head(self, hc_head_fn, hc_head_scale, hc_head_base)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.mode == "head"
        _check_state(x, self.n, self.dim if head else None, self.phi_head if head else None, "CollapseStreams")
        if not head:
            return collapse_streams_unchecked(x, None, None, None, mode="sum", rms_eps=self.rms_eps,
                                              pre_eps=self.pre_eps)
        _check_params(self, "CollapseStreams")
        _checks.check_nonzero_tokens(x, self.rms_eps, "CollapseStreams", hot=True)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return collapse_streams_unchecked(x, self.phi_head, self.alpha_head, self.b_head, mode="head",
                                              rms_eps=self.rms_eps, pre_eps=self.pre_eps)

    def extra_repr(self) -> str:
        return f"n={self.n}, dim={self.dim}, mode={self.mode!r}, preset={self.preset!r}"
