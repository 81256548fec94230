"""A small pure-NumPy stack of residual layers around given sublayers, for depth-L tests and the stability study.

    h (..., C) --expand_streams--> x_0 (..., n, C) --L layers--> x_L --collapse_streams(sum)--> y (..., C)

`mode` picks the maps with the same call sites: "mhc" (P Eq. 3, maps from `mhc_coeffs`), "hc" (the HC baseline,
`hc_coeffs`), "fixed" (P Table 1's H_pre = 1/n, H_post = 1, H_res = I) or "residual" (plain pre-norm residual
x + F(x) on the unexpanded (..., C) state). Layer l gets `params[l]` (the mHC or HC parameters; ignored by "fixed"
and "residual") and `sublayers[l]` (see `mhc_ref.sublayer`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._common import SPEC, check_int, options
from .collapse_streams import collapse_streams
from .expand_streams import expand_streams
from .hc_coeffs import hc_coeffs, hc_coeffs_vjp
from .init import fixed_maps
from .mhc_coeffs import mhc_coeffs, mhc_coeffs_vjp
from .mhc_post_res import mhc_post_res, mhc_post_res_vjp
from .mhc_pre import mhc_pre, mhc_pre_vjp

MODES = ("mhc", "hc", "fixed", "residual")
_HC_NAMES = ("theta_pre", "theta_post", "theta_res", "alpha", "b_pre", "b_post", "b_res")


@dataclass
class Stack:
    n: int
    sublayers: list
    params: list = field(default_factory=list)
    mode: str = "mhc"
    preset: str = "paper"

    def __post_init__(self):
        self.n = check_int("n", self.n, "Stack", 1)
        if self.mode not in MODES:
            raise ValueError(f"Stack: mode must be one of {list(MODES)}, got {self.mode!r}")
        if self.preset not in SPEC.presets:
            raise ValueError(f"Stack: preset must be one of {sorted(SPEC.presets)}, got {self.preset!r}")
        if not isinstance(self.sublayers, (list, tuple)):
            raise TypeError(f"Stack: sublayers must be a list of sublayers, got {type(self.sublayers).__name__}")
        for l, sub in enumerate(self.sublayers):
            if not (callable(getattr(sub, "forward", None)) and callable(getattr(sub, "vjp", None))):
                raise TypeError(f"Stack: sublayers[{l}] must have forward(u) -> (y, cache) and vjp(cache, g) -> "
                                f"(du, grads) (see mhc_ref.sublayer), got {type(sub).__name__}")
        if not isinstance(self.params, (list, tuple)):
            raise TypeError(f"Stack: params must be a list of dicts, got {type(self.params).__name__}")
        if self.mode in ("mhc", "hc") and len(self.params) != len(self.sublayers):
            raise ValueError(f"Stack: mode={self.mode!r} needs one params dict per sublayer, got "
                             f"{len(self.params)} params for {len(self.sublayers)} sublayers")
        need = {"mhc": ("phi", "alpha", "b"), "hc": _HC_NAMES}.get(self.mode, ())
        for l, p in enumerate(self.params if need else ()):
            if not isinstance(p, dict):
                raise TypeError(f"Stack: params[{l}] must be a dict with keys {list(need)}, got {type(p).__name__}")
            missing = [k for k in need if k not in p]
            if missing:
                raise ValueError(f"Stack: params[{l}] misses {missing} for mode={self.mode!r} (keys {list(need)}, "
                                 f"e.g. from mhc_ref.mhc_init / hc_init)")
        self._opts = options("mhc_coeffs", self.preset, {})

    # -- maps -----------------------------------------------------------------------------------------------------
    def coeffs(self, l, x):
        if self.mode == "mhc":
            p = self.params[l]
            return mhc_coeffs(x, p["phi"], p["alpha"], p["b"], **self._opts)
        if self.mode == "hc":
            return hc_coeffs(x, *(self.params[l][k] for k in _HC_NAMES), rms_eps=self._opts["rms_eps"])
        return fixed_maps(self.n, x.shape[:-2])

    def coeffs_vjp(self, l, x, g_pre, g_post, g_res):
        if self.mode == "mhc":
            p = self.params[l]
            return mhc_coeffs_vjp(x, p["phi"], p["alpha"], p["b"], g_pre, g_post, g_res, **self._opts)
        if self.mode == "hc":
            return hc_coeffs_vjp(x, *(self.params[l][k] for k in _HC_NAMES), g_pre, g_post, g_res,
                                 rms_eps=self._opts["rms_eps"])
        return {"x": np.zeros_like(x)}

    # -- forward / backward ---------------------------------------------------------------------------------------
    def forward(self, h):
        """y (..., C) and a trace {"x": states x_0..x_L, "h_res": (L, ..., n, n) or None}."""
        if self.mode == "residual":
            xs = [h]
            for sub in self.sublayers:
                xs.append(xs[-1] + sub.forward(xs[-1])[0])
            return xs[-1], {"x": xs, "h_res": None}
        xs, h_res = [expand_streams(h, self.n)], []
        for l, sub in enumerate(self.sublayers):
            x = xs[-1]
            H_pre, H_post, H_res = self.coeffs(l, x)
            f_out, _ = sub.forward(mhc_pre(x, H_pre))
            xs.append(mhc_post_res(x, f_out, H_post, H_res))
            h_res.append(H_res)
        return collapse_streams(xs[-1]), {"x": xs, "h_res": np.stack(h_res) if h_res else None}

    def vjp(self, h, g_y):
        """{"h": dL/dh, "layers": [per-layer parameter gradients]} by recomputing each layer from its stored input."""
        _, trace = self.forward(h)
        xs, grads = trace["x"], [None] * len(self.sublayers)
        if self.mode == "residual":
            g = g_y
            for l in reversed(range(len(self.sublayers))):
                _, cache = self.sublayers[l].forward(xs[l])
                du, grads[l] = self.sublayers[l].vjp(cache, g)
                g = g + du
            return {"h": g, "layers": grads}
        g = np.repeat(g_y[..., None, :], self.n, axis=-2)  # through the sum collapse
        for l in reversed(range(len(self.sublayers))):
            x, sub = xs[l], self.sublayers[l]
            H_pre, H_post, H_res = self.coeffs(l, x)
            u = mhc_pre(x, H_pre)
            f_out, cache = sub.forward(u)
            gp = mhc_post_res_vjp(x, f_out, H_post, H_res, g)
            du, g_sub = sub.vjp(cache, gp["f_out"])
            gq = mhc_pre_vjp(x, H_pre, du)
            gc = self.coeffs_vjp(l, x, gq["h_pre"], gp["h_post"], gp["h_res"])
            g = gp["x"] + gq["x"] + gc.pop("x")
            grads[l] = {**gc, **g_sub}
        return {"h": np.sum(g, axis=-2), "layers": grads}
