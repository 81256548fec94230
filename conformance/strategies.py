"""Hypothesis profiles and draws built from the spec table's [conformance] section.

Every draw is labelled (`data.draw(..., label=...)`), so a failing example prints n, C, the leading dims, the preset,
the options, the scales and the seed of the arrays. Arrays come from a drawn seed through NumPy's generator, not
element by element: the numbers that matter (sizes, scales, options) shrink, the bulk stays cheap.

Options are not only the presets' values: each float option is drawn at its preset value, at the ends of its range or
inside it, and each choice option (res_layout, mode) over its choices, independently of the preset
([conformance.option_draws]). Sizes come from [conformance] (per op narrowed by [conformance.ops.<op>]);
`draw_large` gives the one large example per op and dtype ([conformance.large]).

Profiles (pick one with MHC_HYPOTHESIS_PROFILE or --mhc-profile; --max-examples / --derandomize override):
- `ci`: few examples per test so that the CPU suite of the numpy backend stays well under two minutes;
- `ci-slow`: fewer still and no shrinking, for backends that are slow to call (Triton in interpreter mode) and for
  the mutant meta-tests;
- `thorough`: many examples, for release checks and GPUs.
No profile has a deadline: a kernel's first call compiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from mhc_spec.table import load, resolve_shape

SPEC = load()
CONF = SPEC.conformance
N_VALUES: tuple[int, ...] = tuple(CONF["n"])
C_VALUES: tuple[int, ...] = tuple(CONF["C"])
T_MAX_VALUES: tuple[int, ...] = tuple(CONF["t_max"])
LOGIT_SCALES: tuple[float, ...] = tuple(float(s) for s in CONF["logit_scales"])
L_VALUES = (1, 2, 3, 6)  # depth of an amax_gain input: one layer, a few, and enough for composites to drift

PROFILES: dict[str, dict[str, Any]] = {
    "ci": dict(max_examples=25),
    "ci-slow": dict(max_examples=3, phases=(Phase.explicit, Phase.reuse, Phase.generate)),
    "thorough": dict(max_examples=300),
}
DEFAULT_PROFILE = "ci"
_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.differing_executors))


def profile_name(name: str) -> str:
    """The Hypothesis-registry name of one of our profiles (prefixed: other projects may own a 'ci')."""
    if name not in PROFILES:
        raise ValueError(f"Hypothesis profile must be one of {sorted(PROFILES)}, got {name!r}")
    return f"mhc-{name}"


def register_profiles() -> None:
    for name, values in PROFILES.items():
        settings.register_profile(profile_name(name), **_COMMON, **values)


def run_profile(name: str, max_examples: int | None = None, derandomize: bool = False, shrink: bool = True) -> str:
    """Register and return the profile of one run: profile `name` plus the command-line overrides."""
    register_profiles()
    overrides: dict[str, Any] = {}
    if not shrink:
        overrides["phases"] = (Phase.explicit, Phase.reuse, Phase.generate)
    if max_examples is not None:
        overrides["max_examples"] = max_examples
    if derandomize:
        overrides["derandomize"] = True
    settings.register_profile("mhc-run", parent=settings.get_profile(profile_name(name)), **overrides)
    return "mhc-run"


# -- sizes, options, presets -------------------------------------------------------------------------------------
def letters(op: str) -> set[str]:
    """The size letters (n, C, L) that the shapes of op's inputs use."""
    found: set[str] = set()
    for arg in SPEC.op(op).inputs:
        for dim in arg.shape:
            found |= {c for c in dim if c in SPEC.letters}
    return found


def size_values(op: str, letter: str, default: tuple[int, ...]) -> tuple[int, ...]:
    """The values of one size letter for `op`: the table's per-op narrowing ([conformance.ops.<op>]) if any."""
    return tuple(CONF.get("ops", {}).get(op, {}).get(letter, default))


def draw_sizes(data, op: str, n: int | None = None, C: int | None = None, n_values: tuple[int, ...] | None = None,
               c_values: tuple[int, ...] | None = None, L: int | None = None) -> dict[str, int]:
    need = letters(op)
    sizes: dict[str, int] = {}
    if "n" in need or "n" in SPEC.op(op).options:
        values = n_values if n_values is not None else size_values(op, "n", N_VALUES)
        sizes["n"] = n if n is not None else data.draw(st.sampled_from(values), label="n")
    if "C" in need:
        values = c_values if c_values is not None else size_values(op, "C", C_VALUES)
        sizes["C"] = C if C is not None else data.draw(st.sampled_from(values), label="C")
    if "L" in need:
        sizes["L"] = L if L is not None else data.draw(st.sampled_from(size_values(op, "L", L_VALUES)), label="L")
    return sizes


def draw_lead(data, min_dims: int = 0) -> tuple[int, ...]:
    """Free leading dims (B, T, ...): none, one or two, each of size 1..max_leading_size."""
    dims = st.lists(st.integers(1, int(CONF["max_leading_size"])), min_size=min_dims,
                    max_size=max(min_dims, int(CONF["max_leading_dims"])))
    return tuple(data.draw(dims, label="lead"))


def draw_preset(data, backend) -> str:
    return data.draw(st.sampled_from(sorted(backend.capabilities.presets)), label="preset")


def draw_range(name: str) -> dict[str, float]:
    """[conformance.option_draws] entry of a float option (or of the preset key it reads), with its bounds."""
    spec = SPEC.options[name]
    draws = CONF["option_draws"]
    entry = draws.get(name, draws.get(spec.preset_key or name)) or {}
    bounds = [float(v) for v in (spec.max, entry.get("draw_max")) if v is not None]
    top = min(bounds) if bounds else math.inf
    if not math.isfinite(top):
        raise KeyError(f"float option {name!r} has no finite `max` and no draw_max in [conformance.option_draws]: "
                       f"the suite cannot draw it off the presets")
    lo = float(spec.min) if spec.min is not None else -float(top)
    return {"min": lo, "max": top, "log_from": float(entry.get("log_from", 0.0))}


def option_values(name: str, preset_value: Any = None) -> st.SearchStrategy:
    """Values of one option: the preset's value first (Hypothesis shrinks towards it), else its whole range."""
    spec = SPEC.options[name]
    if spec.choices is not None:
        off = st.sampled_from(spec.choices)
    elif spec.type == "float":
        r = draw_range(name)
        if r["log_from"] > 0:
            lo, hi = math.log10(r["log_from"]), math.log10(r["max"])
            inside = st.floats(lo, hi).map(lambda e: min(10.0 ** e, r["max"]))
        else:
            inside = st.floats(r["min"], r["max"], allow_subnormal=False)
        off = st.one_of(st.sampled_from((r["min"], r["max"])), inside)
    else:
        raise ValueError(f"option {name!r} of type {spec.type} has no off-preset strategy")
    return off if preset_value is None else st.one_of(st.just(preset_value), off)


def draw_options(data, op: str, preset: str, **fixed: Any) -> dict[str, Any]:
    """The op's options: each at the preset's value or drawn over its range (option_values); t_max from the table's
    set; n from the sizes; `fixed` pins any of them."""
    preset_values = SPEC.preset(preset)
    values: dict[str, Any] = {}
    for name in SPEC.op(op).options:
        spec = SPEC.options[name]
        if name in fixed:
            values[name] = fixed[name]
        elif name == "t_max":
            values[name] = data.draw(st.sampled_from(T_MAX_VALUES), label="t_max")
        elif spec.type == "float" or spec.choices is not None:
            values[name] = data.draw(option_values(name, preset_values.get(spec.preset_key or name)), label=name)
    return SPEC.op_options(op, preset, **values)


for _op in SPEC.ops.values():  # every float option an op takes needs a draw range: fail at import, not mid-run
    for _name in _op.options:
        if SPEC.options[_name].type == "float":
            draw_range(_name)


def draw_seed(data) -> int:
    return data.draw(st.integers(0, 2**32 - 1), label="seed")


# -- arrays --------------------------------------------------------------------------------------------------------
# One generator per input (keyed "op.input" or "input"): float64 values in the range the op is used with. Scales are
# drawn (labelled) so that both well- and ill-conditioned regimes appear. 16-bit dtypes get the scales real models
# feed them (normalised activations, logits up to 4) and C >= 3: a naive 16-bit evaluation overflows at activation
# scales of 1e2, loses all digits of exp(u) at logits of 30 (the log-domain u has a spacing of 0.25 there), and with
# C = 1 an RMSNorm over C is x / |x|, whose zero gradient it gets only by cancellation. float32 and float64 test
# those regimes, and finite_large_logits tests logits of 1e4 in every dtype. Activations are not drawn much smaller
# than 1: 1/rms then scales up the terms an RMSNorm gradient cancels, and the rounding of that cancellation is no
# longer measured by the output's scale.
LOW_PRECISION = ("bfloat16", "float16")


def _normal(scales: tuple[float, ...], low: tuple[float, ...] | None = None):
    def gen(rng, shape, data, label, dtype):
        choices = low if low is not None and dtype in LOW_PRECISION else scales
        scale = data.draw(st.sampled_from(choices), label=f"{label}_scale")
        return rng.standard_normal(shape) * scale
    return gen


def _fan_in(scales: tuple[float, ...], low: tuple[float, ...] | None = None):
    """Projection weights (n*C, ...) scaled by 1/sqrt(n*C): m = x_bar phi / r is O(scale) for every n and C."""
    normal = _normal(scales, low)
    return lambda rng, shape, data, label, dtype: normal(rng, shape, data, label, dtype) / np.sqrt(shape[0])


def _uniform(lo: float, hi: float):
    return lambda rng, shape, data, label, dtype: rng.uniform(lo, hi, shape)


def _alpha(rng, shape, data, label, dtype):
    scale = data.draw(st.sampled_from((0.01, 1.0)), label=f"{label}_scale")
    return rng.uniform(0.5, 1.5, shape) * scale


def _logits(rng, shape, data, label, dtype):
    scales = LOGIT_SCALES if dtype not in LOW_PRECISION else tuple(s for s in LOGIT_SCALES if s <= 4.0)
    return rng.standard_normal(shape) * data.draw(st.sampled_from(scales), label="logit_scale")


def _res_maps(rng, shape, data, label, dtype):
    """h_res of amax_gain: doubly stochastic (Birkhoff mix of permutations), mHC-like, or HC-like unconstrained."""
    kind = data.draw(st.sampled_from(("birkhoff", "positive", "signed")), label=f"{label}_kind")
    n = shape[-1]
    if kind == "signed":
        return np.eye(n) + 0.5 * rng.standard_normal(shape)
    if kind == "positive":
        return rng.uniform(0.0, 2.0 / n, shape)
    weights = rng.dirichlet(np.ones(3), shape[:-2])  # (..., 3): convex mix of three random permutations
    perms = np.stack([np.eye(n)[rng.permutation(n)] for _ in range(3)])  # (3, n, n)
    return np.einsum("...k,kij->...ij", weights, perms)


DOMAINS = {
    "logits": _logits,
    "x": _normal((1.0, 1e2), low=(1.0,)),
    "phi": _fan_in((0.1, 1.0, 4.0), low=(0.1, 1.0)),
    "alpha": _alpha,
    "b": _normal((0.1, 1.0, 4.0), low=(0.1, 1.0)),
    "w_sub": lambda rng, shape, data, label, dtype: rng.standard_normal(shape) / np.sqrt(shape[0]),
    "h_pre": _uniform(0.0, 1.0),
    "f_out": _normal((1.0,)),
    "h_post": _uniform(0.0, 2.0),
    "h_res": _uniform(0.0, 1.0),
    "amax_gain.h_res": _res_maps,
    "theta_pre": _normal((0.1, 1.0)),
    "theta_post": _normal((0.1, 1.0)),
    "theta_res": _normal((0.1, 1.0)),
    "b_pre": _normal((1.0,)),
    "b_post": _normal((1.0,)),
    "b_res": _normal((1.0,)),
    "h": _normal((1.0, 1e2), low=(1.0,)),
    "phi_head": _fan_in((0.1, 1.0, 4.0), low=(0.1, 1.0)),
    "alpha_head": _alpha,
    "b_head": _normal((1.0,)),
}


def input_present(op: str, name: str, options: dict[str, Any]) -> bool:
    """False for an optional input whose `required_when` choice is not selected (it is passed as None)."""
    arg = SPEC.op(op).input(name)
    return arg.required_when is None or arg.required_when in options.values()


def draw_arrays(data, op: str, sizes: dict[str, int], lead: tuple[int, ...], options: dict[str, Any],
                seed: int, dtype: str) -> dict[str, np.ndarray | None]:
    """float64 inputs of `op` by name (None for absent optional inputs), drawn from DOMAINS."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray | None] = {}
    for arg in SPEC.op(op).inputs:
        if not input_present(op, arg.name, options):
            out[arg.name] = None
            continue
        gen = DOMAINS.get(f"{op}.{arg.name}", DOMAINS.get(arg.name))
        if gen is None:
            raise KeyError(f"no value domain for input {arg.name!r} of {op!r}: add one to DOMAINS")
        out[arg.name] = np.asarray(gen(rng, resolve_shape(arg, lead, **sizes), data, arg.name, dtype), np.float64)
    return out


@dataclass(frozen=True)
class Draw:
    """Everything one example of an op needs: sizes, leading dims, preset, options and float64 inputs."""

    sizes: dict[str, int]
    lead: tuple[int, ...]
    preset: str
    options: dict[str, Any]
    arrays: dict[str, np.ndarray | None]


def draw(data, op: str, backend, dtype: str, *, n: int | None = None, C: int | None = None, L: int | None = None,
         lead: tuple[int, ...] | None = None, preset: str | None = None, n_values: tuple[int, ...] | None = None,
         **fixed_options: Any) -> Draw:
    """One labelled example of `op` in `dtype`; n, C, L, lead, preset and options may be pinned by the caller."""
    c_values = size_values(op, "C", C_VALUES)
    if dtype in LOW_PRECISION:
        c_values = tuple(c for c in c_values if c > 1) or c_values
    sizes = draw_sizes(data, op, n=n, C=C, n_values=n_values, c_values=c_values, L=L)
    if "n" in SPEC.op(op).options:
        fixed_options.setdefault("n", sizes["n"])
    lead = draw_lead(data) if lead is None else lead
    preset = draw_preset(data, backend) if preset is None else preset
    options = draw_options(data, op, preset, **fixed_options)
    arrays = draw_arrays(data, op, sizes, lead, options, draw_seed(data), dtype)
    return Draw(sizes, lead, preset, options, arrays)


def large_sizes(op: str) -> dict[str, int]:
    """The table's [conformance.large] sizes of the letters `op` uses (n also when it is an option)."""
    large = CONF["large"]
    need = letters(op) | ({"n"} if "n" in SPEC.op(op).options else set())
    missing = sorted(need - set(large))
    if missing:
        raise KeyError(f"[conformance.large] has no size for {missing} (used by {op!r})")
    return {k: int(large[k]) for k in sorted(need)}


def draw_large(data, op: str, backend, dtype: str) -> Draw:
    """The large example of `op`: the table's [conformance.large] sizes, leading dims and t_max; the rest drawn."""
    large = CONF["large"]
    pins = {"t_max": int(large["t_max"])} if "t_max" in SPEC.op(op).options else {}
    return draw(data, op, backend, dtype, lead=tuple(int(d) for d in large["lead"]), **large_sizes(op), **pins)
