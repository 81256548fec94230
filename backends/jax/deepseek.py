"""DeepSeek-V4 parameter layout <-> this package's params pytrees and Flax modules.

DeepSeek stores per mHC layer `fn` (n*n+2*n, n*C) = phi^T, `scale` (3,) = alpha, `base` (n*n+2*n,) = b, with the
residual logits in comb[src, dst] order, i.e. the spec's `col_major` res_layout: so they load unchanged (apart from
the transpose of `fn`) as params of preset "deepseek_v4" (functional API) or into an `MHC(..., preset="deepseek_v4")`
module, whose options (eps 1e-6 in the RMS, on H_pre and in Sinkhorn, col_major) reproduce DeepSeek's hc_pre /
hc_post. The head (`hc_head_fn` (n, n*C), `hc_head_scale` (1,), `hc_head_base` (n,)) loads into
`CollapseStreams(mode="head", preset="deepseek_v4")` or as `collapse_streams(x, **head, mode="head")` arrays.

A V4 block holds two layers, `hc_attn_{fn,scale,base}` and `hc_ffn_{fn,scale,base}`; `load_deepseek_block` reads
them from a flat dict of arrays. The module loaders keep the modules' parameter dtype (float32).
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from . import _checks

PRESET = "deepseek_v4"


def _n_from_width(width: int, where: str) -> int:
    n = int(round(math.sqrt(1 + width) - 1))  # width = n^2 + 2n = (n + 1)^2 - 1
    if n < 1 or n * n + 2 * n != width:
        raise ValueError(f"{where}: fn must have n*n+2*n rows for some n, got {width}")
    return n


def from_deepseek(fn, scale, base) -> dict:
    """{phi (n*C, n*n+2*n), alpha (3,), b (n*n+2*n,)} from DeepSeek's (fn, scale, base); use preset deepseek_v4."""
    where = "from_deepseek"
    for name, v in (("fn", fn), ("scale", scale), ("base", base)):
        _checks.check_array(name, v, where, ndim_min=0)
    if fn.ndim != 2:
        raise ValueError(f"{where}: fn must be 2-D (n*n+2*n, n*C), got shape {tuple(fn.shape)}")
    n = _n_from_width(fn.shape[0], where)
    if fn.shape[1] % n:
        raise ValueError(f"{where}: fn must have n*C columns with n = {n}, got shape {tuple(fn.shape)}")
    _checks.check_shape("scale", scale, (3,), where)
    _checks.check_shape("base", base, (fn.shape[0],), where, f" = (n*n+2*n,) for n = {n}")
    return {"phi": jnp.asarray(fn).T, "alpha": jnp.asarray(scale), "b": jnp.asarray(base)}


def to_deepseek(params: dict) -> dict:
    """Inverse of `from_deepseek` (params of preset deepseek_v4, i.e. col_major layout)."""
    return {"fn": params["phi"].T, "scale": params["alpha"], "base": params["b"]}


def head_from_deepseek(hc_head_fn, hc_head_scale, hc_head_base) -> dict:
    """{phi_head (n*C, n), alpha_head (1,), b_head (n,)} for the head collapse of preset deepseek_v4."""
    where = "head_from_deepseek"
    _checks.check_array("hc_head_fn", hc_head_fn, where, ndim_min=0)
    if hc_head_fn.ndim != 2:
        raise ValueError(f"{where}: hc_head_fn must be 2-D (n, n*C), got shape {tuple(hc_head_fn.shape)}")
    n = hc_head_fn.shape[0]
    _checks.check_shape("hc_head_scale", _checks.check_array("hc_head_scale", hc_head_scale, where, 0), (1,), where)
    _checks.check_shape("hc_head_base", _checks.check_array("hc_head_base", hc_head_base, where, 0), (n,), where)
    return {"phi_head": jnp.asarray(hc_head_fn).T, "alpha_head": jnp.asarray(hc_head_scale),
            "b_head": jnp.asarray(hc_head_base)}


def _copy(module, params: dict, where: str) -> None:
    for name, value in params.items():
        target = getattr(module, name)
        if tuple(value.shape) != tuple(target.shape):
            raise ValueError(f"{where}: {name} must have shape {tuple(target.shape)} for this module "
                             f"(n = {module.n}, C = {module.dim}), got {tuple(value.shape)}")
    for name, value in params.items():
        target = getattr(module, name)
        value = jnp.asarray(value, target.dtype)
        if hasattr(target, "set_value"):  # flax >= 0.12 (the .value setter is deprecated there)
            target.set_value(value)
        else:
            target.value = value


def load_deepseek(module, fn, scale, base) -> None:
    """Copy DeepSeek-V4 (fn, scale, base) into an `MHC(mode="mhc", preset="deepseek_v4")`."""
    where = "load_deepseek"
    if getattr(module, "mode", None) != "mhc":
        raise ValueError(f"{where}: module must be an MHC with mode='mhc', got {type(module).__name__} "
                         f"mode={getattr(module, 'mode', None)!r}")
    if module.options["res_layout"] != "col_major":
        raise ValueError(f"{where}: DeepSeek's comb layout needs res_layout='col_major' (preset='{PRESET}'), the "
                         f"module has preset={module.preset!r} res_layout={module.options['res_layout']!r}")
    _copy(module, from_deepseek(fn, scale, base), where)


def load_deepseek_head(module, hc_head_fn, hc_head_scale, hc_head_base) -> None:
    """Copy DeepSeek-V4's head into a `CollapseStreams(mode="head", preset="deepseek_v4")`."""
    where = "load_deepseek_head"
    if getattr(module, "mode", None) != "head":
        raise ValueError(f"{where}: module must be a CollapseStreams with mode='head', got "
                         f"{type(module).__name__} mode={getattr(module, 'mode', None)!r}")
    _copy(module, head_from_deepseek(hc_head_fn, hc_head_scale, hc_head_base), where)


def load_deepseek_block(attn, ffn, state_dict: dict, prefix: str = "") -> None:
    """Load `{prefix}hc_attn_{fn,scale,base}` into `attn` and `{prefix}hc_ffn_{fn,scale,base}` into `ffn`."""
    for module, tag in ((attn, "attn"), (ffn, "ffn")):
        keys = [f"{prefix}hc_{tag}_{k}" for k in ("fn", "scale", "base")]
        missing = [k for k in keys if k not in state_dict]
        if missing:
            raise KeyError(f"load_deepseek_block: missing {missing} in the state dict")
        load_deepseek(module, *(jnp.asarray(state_dict[k]) for k in keys))
