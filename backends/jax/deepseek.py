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

import jax.numpy as jnp

from .. import _deepseek
from . import _checks

PRESET = _deepseek.PRESET


def from_deepseek(fn, scale, base) -> dict:
    """{phi (n*C, n*n+2*n), alpha (3,), b (n*n+2*n,)} from DeepSeek's (fn, scale, base); use preset deepseek_v4."""
    where = "from_deepseek"
    for name, v in (("fn", fn), ("scale", scale), ("base", base)):
        _checks.check_array(name, v, where, ndim_min=0)
    _deepseek.check_layer(fn, scale, base, where)
    return {"phi": jnp.asarray(fn).T, "alpha": jnp.asarray(scale), "b": jnp.asarray(base)}


def to_deepseek(params: dict) -> dict:
    """Inverse of `from_deepseek` (params of preset deepseek_v4, i.e. col_major layout)."""
    return {"fn": params["phi"].T, "scale": params["alpha"], "base": params["b"]}


def head_from_deepseek(hc_head_fn, hc_head_scale, hc_head_base) -> dict:
    """{phi_head (n*C, n), alpha_head (1,), b_head (n,)} for the head collapse of preset deepseek_v4."""
    where = "head_from_deepseek"
    for name, v in (("hc_head_fn", hc_head_fn), ("hc_head_scale", hc_head_scale), ("hc_head_base", hc_head_base)):
        _checks.check_array(name, v, where, ndim_min=0)
    _deepseek.check_head(hc_head_fn, hc_head_scale, hc_head_base, where)
    return {"phi_head": jnp.asarray(hc_head_fn).T, "alpha_head": jnp.asarray(hc_head_scale),
            "b_head": jnp.asarray(hc_head_base)}


def _copy(module, params: dict, where: str) -> None:
    _deepseek.check_fits(module, params, where)
    for name, value in params.items():
        target = getattr(module, name)
        value = jnp.asarray(value, target.dtype)
        if hasattr(target, "set_value"):  # flax >= 0.12 (the .value setter is deprecated there)
            target.set_value(value)
        else:
            target.value = value


def load_deepseek(module, fn, scale, base) -> None:
    """Copy DeepSeek-V4 (fn, scale, base) into an `MHC(mode="mhc", preset="deepseek_v4")`."""
    _deepseek.check_module(module, "mhc", "load_deepseek")
    _copy(module, from_deepseek(fn, scale, base), "load_deepseek")


def load_deepseek_head(module, hc_head_fn, hc_head_scale, hc_head_base) -> None:
    """Copy DeepSeek-V4's head into a `CollapseStreams(mode="head", preset="deepseek_v4")`."""
    _deepseek.check_module(module, "head", "load_deepseek_head")
    _copy(module, head_from_deepseek(hc_head_fn, hc_head_scale, hc_head_base), "load_deepseek_head")


def load_deepseek_block(attn, ffn, state_dict: dict, prefix: str = "") -> None:
    """Load `{prefix}hc_attn_{fn,scale,base}` into `attn` and `{prefix}hc_ffn_{fn,scale,base}` into `ffn`."""
    for module, arrays in _deepseek.block_layers(attn, ffn, state_dict, prefix):
        load_deepseek(module, *(jnp.asarray(a) for a in arrays))
