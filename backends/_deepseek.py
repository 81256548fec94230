"""DeepSeek-V4's mHC parameter layout, framework-free: the shape arithmetic and the checks of the torch and jax
loaders (`mhc_backends.<framework>.deepseek`, which check array types and then only transpose and copy).

Per layer DeepSeek stores `fn` (n*n+2*n, n*C) = phi^T, `scale` (3,) = alpha, `base` (n*n+2*n,) = b, in the spec's
`col_major` res_layout; the head stores `hc_head_fn` (n, n*C), `hc_head_scale` (1,), `hc_head_base` (n,). A V4 block
holds two layers, `hc_attn_{fn,scale,base}` and `hc_ffn_{fn,scale,base}`. Reads only `.shape` / `.ndim` and module
attributes; imports no framework.
"""

from __future__ import annotations

import math

from ._contract import check_shape

PRESET = "deepseek_v4"
# parameter -> the DeepSeek argument it comes from (phi / phi_head are the transposed fn / hc_head_fn)
SOURCES = {"phi": "fn", "alpha": "scale", "b": "base",
           "phi_head": "hc_head_fn", "alpha_head": "hc_head_scale", "b_head": "hc_head_base"}


def n_from_width(width: int, where: str) -> int:
    n = int(round(math.sqrt(1 + width) - 1))  # width = n^2 + 2n = (n + 1)^2 - 1
    if n < 1 or n * n + 2 * n != width:
        raise ValueError(f"{where}: fn must have n*n+2*n rows for some n, got {width}")
    return n


def check_layer(fn, scale, base, where: str) -> int:
    """Shapes of one layer's (fn, scale, base), arrays; returns n."""
    if fn.ndim != 2:
        raise ValueError(f"{where}: fn must be 2-D (n*n+2*n, n*C), got shape {tuple(fn.shape)}")
    n = n_from_width(fn.shape[0], where)
    if fn.shape[1] % n:
        raise ValueError(f"{where}: fn must have n*C columns with n = {n}, got shape {tuple(fn.shape)}")
    check_shape("scale", scale, (3,), where)
    check_shape("base", base, (fn.shape[0],), where, f" = (n*n+2*n,) for n = {n}")
    return n


def check_head(hc_head_fn, hc_head_scale, hc_head_base, where: str) -> int:
    """Shapes of the head's (hc_head_fn, hc_head_scale, hc_head_base), arrays; returns n."""
    if hc_head_fn.ndim != 2:
        raise ValueError(f"{where}: hc_head_fn must be 2-D (n, n*C), got shape {tuple(hc_head_fn.shape)}")
    n = hc_head_fn.shape[0]
    check_shape("hc_head_scale", hc_head_scale, (1,), where)
    check_shape("hc_head_base", hc_head_base, (n,), where)
    return n


def check_module(module, mode: str, where: str) -> None:
    """The target of a loader: an MHC(mode='mhc') in col_major layout, or a CollapseStreams(mode='head')."""
    kind = {"mhc": "an MHC", "head": "a CollapseStreams"}[mode]
    if getattr(module, "mode", None) != mode:
        raise ValueError(f"{where}: module must be {kind} with mode={mode!r}, got {type(module).__name__} "
                         f"mode={getattr(module, 'mode', None)!r}")
    if mode == "mhc" and module.options["res_layout"] != "col_major":
        raise ValueError(f"{where}: DeepSeek's comb layout needs res_layout='col_major' (preset='{PRESET}'), the "
                         f"module has preset={module.preset!r} res_layout={module.options['res_layout']!r}")


def check_fits(module, params: dict, where: str) -> None:
    """Each converted parameter has the module's shape; a mismatch names the caller's DeepSeek argument."""
    for name, value in params.items():
        target = tuple(getattr(module, name).shape)
        if tuple(value.shape) != target:
            transposed = name.startswith("phi")
            want = target[::-1] if transposed else target
            got = tuple(value.shape)[::-1] if transposed else tuple(value.shape)
            raise ValueError(f"{where}: {SOURCES[name]} must have shape {want} for this module "
                             f"(n = {module.n}, C = {module.dim}), got {got}")


def block_layers(attn, ffn, state_dict, prefix: str = ""):
    """[(module, [fn, scale, base])] of a V4 block: `{prefix}hc_attn_*` for attn, `{prefix}hc_ffn_*` for ffn."""
    layers = []
    for module, tag in ((attn, "attn"), (ffn, "ffn")):
        keys = [f"{prefix}hc_{tag}_{k}" for k in ("fn", "scale", "base")]
        missing = [k for k in keys if k not in state_dict]
        if missing:
            raise KeyError(f"load_deepseek_block: missing {missing} in the state dict")
        layers.append((module, [state_dict[k] for k in keys]))
    return layers
