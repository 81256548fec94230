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

import math

import torch

from . import _checks

PRESET = "deepseek_v4"


def _n_from_width(width: int, where: str) -> int:
    n = int(round(math.sqrt(1 + width) - 1))  # width = n^2 + 2n = (n + 1)^2 - 1
    if n < 1 or n * n + 2 * n != width:
        raise ValueError(f"{where}: fn must have n*n+2*n rows for some n, got {width}")
    return n


def _tensor(name, value, where) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(value).__name__}")
    return _checks.check_tensor(name, value, where)


def from_deepseek(fn: torch.Tensor, scale: torch.Tensor, base: torch.Tensor) -> dict[str, torch.Tensor]:
    """{phi (n*C, n*n+2*n), alpha (3,), b (n*n+2*n,)} from DeepSeek's (fn, scale, base); use preset deepseek_v4."""
    where = "from_deepseek"
    fn, scale, base = (_tensor(k, v, where) for k, v in (("fn", fn), ("scale", scale), ("base", base)))
    if fn.dim() != 2:
        raise ValueError(f"{where}: fn must be 2-D (n*n+2*n, n*C), got shape {tuple(fn.shape)}")
    n = _n_from_width(fn.shape[0], where)
    if fn.shape[1] % n:
        raise ValueError(f"{where}: fn must have n*C columns with n = {n}, got shape {tuple(fn.shape)}")
    _checks.check_shape("scale", scale, (3,), where)
    _checks.check_shape("base", base, (fn.shape[0],), where, f" = (n*n+2*n,) for n = {n}")
    return {"phi": fn.t().contiguous(), "alpha": scale.clone(), "b": base.clone()}


def to_deepseek(phi: torch.Tensor, alpha: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
    """Inverse of `from_deepseek` (the parameters must be in col_major layout)."""
    return {"fn": phi.t().contiguous(), "scale": alpha.clone(), "base": b.clone()}


def head_from_deepseek(hc_head_fn, hc_head_scale, hc_head_base) -> dict[str, torch.Tensor]:
    """{phi_head (n*C, n), alpha_head (1,), b_head (n,)} for CollapseStreams(mode='head', preset='deepseek_v4')."""
    where = "head_from_deepseek"
    fn = _tensor("hc_head_fn", hc_head_fn, where)
    if fn.dim() != 2:
        raise ValueError(f"{where}: hc_head_fn must be 2-D (n, n*C), got shape {tuple(fn.shape)}")
    n = fn.shape[0]
    _checks.check_shape("hc_head_scale", _tensor("hc_head_scale", hc_head_scale, where), (1,), where)
    _checks.check_shape("hc_head_base", _tensor("hc_head_base", hc_head_base, where), (n,), where)
    return {"phi_head": fn.t().contiguous(), "alpha_head": hc_head_scale.clone(), "b_head": hc_head_base.clone()}


def _copy(module, params: dict[str, torch.Tensor], where: str, sources: dict[str, str]) -> None:
    """Copy params into the module; a shape mismatch names the caller's argument (`sources`: parameter -> argument;
    phi / phi_head come from the transposed `fn` / `hc_head_fn`)."""
    for name, value in params.items():
        target = getattr(module, name)
        if tuple(value.shape) != tuple(target.shape):
            transposed = name.startswith("phi")
            want = tuple(target.shape)[::-1] if transposed else tuple(target.shape)
            got = tuple(value.shape)[::-1] if transposed else tuple(value.shape)
            raise ValueError(f"{where}: {sources[name]} must have shape {want} for this module "
                             f"(n = {module.n}, C = {module.dim}), got {got}")
    with torch.no_grad():
        for name, value in params.items():
            getattr(module, name).copy_(value)


def load_deepseek(module, fn, scale, base) -> None:
    """Copy DeepSeek-V4 (fn, scale, base) into an `MHC(mode="mhc", preset="deepseek_v4")`."""
    where = "load_deepseek"
    if getattr(module, "mode", None) != "mhc":
        raise ValueError(f"{where}: module must be an MHC with mode='mhc', got {type(module).__name__} "
                         f"mode={getattr(module, 'mode', None)!r}")
    if module.options["res_layout"] != "col_major":
        raise ValueError(f"{where}: DeepSeek's comb layout needs res_layout='col_major' (preset='{PRESET}'), the "
                         f"module has preset={module.preset!r} res_layout={module.options['res_layout']!r}")
    _copy(module, from_deepseek(fn, scale, base), where, {"phi": "fn", "alpha": "scale", "b": "base"})


def load_deepseek_head(module, hc_head_fn, hc_head_scale, hc_head_base) -> None:
    """Copy DeepSeek-V4's head into a `CollapseStreams(mode="head", preset="deepseek_v4")`."""
    where = "load_deepseek_head"
    if getattr(module, "mode", None) != "head":
        raise ValueError(f"{where}: module must be a CollapseStreams with mode='head', got "
                         f"{type(module).__name__} mode={getattr(module, 'mode', None)!r}")
    _copy(module, head_from_deepseek(hc_head_fn, hc_head_scale, hc_head_base), where,
          {"phi_head": "hc_head_fn", "alpha_head": "hc_head_scale", "b_head": "hc_head_base"})


def load_deepseek_block(attn, ffn, state_dict: dict[str, torch.Tensor], prefix: str = "") -> None:
    """Load `{prefix}hc_attn_{fn,scale,base}` into `attn` and `{prefix}hc_ffn_{fn,scale,base}` into `ffn`."""
    for module, tag in ((attn, "attn"), (ffn, "ffn")):
        keys = [f"{prefix}hc_{tag}_{k}" for k in ("fn", "scale", "base")]
        missing = [k for k in keys if k not in state_dict]
        if missing:
            raise KeyError(f"load_deepseek_block: missing {missing} in the state dict")
        load_deepseek(module, *(state_dict[k] for k in keys))
