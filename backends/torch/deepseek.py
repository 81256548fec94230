"""DeepSeek-V4 parameter layout <-> this package's modules.

DeepSeek stores per mHC layer `fn` (n*n+2*n, n*C) = phi^T, `scale` (3,) = alpha, `base` (n*n+2*n,) = b, with the
residual logits in comb[src, dst] order, i.e. the spec's `col_major` res_layout: so they load unchanged (apart from
the transpose of `fn`) into an `MHC(..., preset="deepseek_v4")`, whose options (eps 1e-6 in the RMS, on H_pre and in
Sinkhorn, col_major) reproduce DeepSeek's hc_pre / hc_post. The head (`hc_head_fn` (n, n*C), `hc_head_scale` (1,),
`hc_head_base` (n,)) loads into `CollapseStreams(mode="head", preset="deepseek_v4")`.

A V4 block holds two layers, `hc_attn_{fn,scale,base}` and `hc_ffn_{fn,scale,base}` (the names of DeepSeek-V4's
inference `model.py` as its ports quote it); `load_deepseek_block` reads them from a state dict. The loaders copy
into the existing float32 parameters (no dtype change) under `torch.no_grad()`.
"""

from __future__ import annotations

import torch

from .. import _deepseek
from . import _checks

PRESET = _deepseek.PRESET


def _tensor(name, value, where) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(value).__name__}")
    return _checks.check_tensor(name, value, where)


def from_deepseek(fn: torch.Tensor, scale: torch.Tensor, base: torch.Tensor) -> dict[str, torch.Tensor]:
    """{phi (n*C, n*n+2*n), alpha (3,), b (n*n+2*n,)} from DeepSeek's (fn, scale, base); use preset deepseek_v4."""
    where = "from_deepseek"
    fn, scale, base = (_tensor(k, v, where) for k, v in (("fn", fn), ("scale", scale), ("base", base)))
    _deepseek.check_layer(fn, scale, base, where)
    return {"phi": fn.t().contiguous(), "alpha": scale.clone(), "b": base.clone()}


def to_deepseek(phi: torch.Tensor, alpha: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
    """Inverse of `from_deepseek` (the parameters must be in col_major layout)."""
    return {"fn": phi.t().contiguous(), "scale": alpha.clone(), "base": b.clone()}


def head_from_deepseek(hc_head_fn, hc_head_scale, hc_head_base) -> dict[str, torch.Tensor]:
    """{phi_head (n*C, n), alpha_head (1,), b_head (n,)} for CollapseStreams(mode='head', preset='deepseek_v4')."""
    where = "head_from_deepseek"
    fn, scale, base = (_tensor(k, v, where) for k, v in (("hc_head_fn", hc_head_fn), ("hc_head_scale", hc_head_scale),
                                                          ("hc_head_base", hc_head_base)))
    _deepseek.check_head(fn, scale, base, where)
    return {"phi_head": fn.t().contiguous(), "alpha_head": scale.clone(), "b_head": base.clone()}


def _copy(module, params: dict[str, torch.Tensor], where: str) -> None:
    """Copy params into the module's existing parameters (dtype kept), after every shape is checked."""
    _deepseek.check_fits(module, params, where)
    with torch.no_grad():
        for name, value in params.items():
            getattr(module, name).copy_(value)


def load_deepseek(module, fn, scale, base) -> None:
    """Copy DeepSeek-V4 (fn, scale, base) into an `MHC(mode="mhc", preset="deepseek_v4")`."""
    _deepseek.check_module(module, "mhc", "load_deepseek")
    _copy(module, from_deepseek(fn, scale, base), "load_deepseek")


def load_deepseek_head(module, hc_head_fn, hc_head_scale, hc_head_base) -> None:
    """Copy DeepSeek-V4's head into a `CollapseStreams(mode="head", preset="deepseek_v4")`."""
    _deepseek.check_module(module, "head", "load_deepseek_head")
    _copy(module, head_from_deepseek(hc_head_fn, hc_head_scale, hc_head_base), "load_deepseek_head")


def load_deepseek_block(attn, ffn, state_dict: dict[str, torch.Tensor], prefix: str = "") -> None:
    """Load `{prefix}hc_attn_{fn,scale,base}` into `attn` and `{prefix}hc_ffn_{fn,scale,base}` into `ffn`."""
    for module, tensors in _deepseek.block_layers(attn, ffn, state_dict, prefix):
        load_deepseek(module, *tensors)
