"""Framework-free configuration of the mHC layer modules (torch `nn.Module`s, Flax NNX modules, the jax functional
layer): the constructor's argument checks, a preset's options with keyword overrides, and the H_pre bias of the
init. Imports no framework; the option values are then checked by each backend's `validate_options`.
"""

from __future__ import annotations

import math
from numbers import Integral

from mhc_spec.table import load

from ._contract import COLLAPSE_MODES, check_choice

SPEC = load()
MODES = ("mhc", "hc", "fixed", "residual")  # the maps: mHC, the HC baseline, P Table 1's fixed maps, plain residual
INITS = ("default", "near_identity", "prenorm")  # the mhc init schemes


def pre_bias(n: int) -> float:
    """b_pre with sigmoid(b_pre) = 1/n; n = 1 has no finite solution, so a large logit (as mhc_ref.init)."""
    return -math.log(n - 1) if n > 1 else 20.0


def default_recompute_every(n: int, L: int) -> int:
    """L_r* = round(sqrt(n L / (n + 2))), P Eq. 20, clipped to [1, L]: the layers per recompute block."""
    return max(1, min(L, round(math.sqrt(n * L / (n + 2)))))


def check_preset(preset, where: str) -> str:
    if preset not in SPEC.presets:
        raise ValueError(f"{where}: preset must be one of {list(SPEC.presets)}, got {preset!r}")
    return preset


def preset_options(preset: str, overrides: dict, where: str) -> dict:
    """The mhc_coeffs options of `preset` with `overrides` (a ValueError for an unknown preset, a TypeError for an
    unknown option name); the values are not checked here."""
    check_preset(preset, where)
    known = list(SPEC.op("mhc_coeffs").options)
    unknown = set(overrides) - set(known)
    if unknown:
        raise TypeError(f"{where}: unknown options {sorted(unknown)}; options are {known}")
    return SPEC.op_options("mhc_coeffs", preset, **overrides)


def check_count(name: str, value, where: str, minimum: int) -> int:
    """A Python (or numpy) integer >= minimum, returned as int: n, dim, layer_index."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{where}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{where}: {name} must be >= {minimum}, got {value!r}")
    return int(value)


def check_layer(sublayer, n, dim, mode, impl, init, layer_index, *, impls: tuple[str, ...], module: str,
                where: str = "MHC") -> None:
    """The structural arguments of an MHC layer module; `module` names the framework's module class in the
    message ("nn.Module", "nnx.Module"). dim (C) is required by the modes with parameters."""
    if not callable(sublayer):
        raise TypeError(f"{where}: sublayer must be an {module} or callable (..., C) -> (..., C), "
                        f"got {type(sublayer).__name__}")
    check_count("n", n, where, 1)
    check_choice("mode", mode, MODES, where)
    check_choice("impl", impl, impls, where)
    check_choice("init", init, INITS, where)
    check_count("layer_index", layer_index, where, 0)
    if mode in ("mhc", "hc"):
        if dim is None:
            raise ValueError(f"{where}: mode={mode!r} needs dim = C (channels per stream), got None")
        check_count("dim", dim, where, 1)


def check_collapse(n, dim, mode, preset, where: str = "CollapseStreams") -> dict:
    """The structural arguments of a CollapseStreams module (dim = C is required by mode 'head'); returns
    collapse_streams' options (rms_eps, pre_eps) under `preset`."""
    check_count("n", n, where, 1)
    check_choice("mode", mode, COLLAPSE_MODES, where)
    check_preset(preset, where)
    if mode == "head":
        if dim is None:
            raise ValueError(f"{where}: mode='head' needs dim = C (channels per stream), got None")
        check_count("dim", dim, where, 1)
    return SPEC.op_options("collapse_streams", preset, mode=mode)
