"""Calls every backend must reject with ValueError or TypeError, derived from the spec table.

For each op, starting from one valid call (n = 3, C = 4, L = 2, one leading dim of 2):
- shape: one dim of one input is off by one, where the table ties that dim to another (a letter used twice, a
  number, or the leading dims `...` shared with another input); a dim that nothing else constrains is skipped,
  since changing it gives another valid call;
- rank: an input with fewer dims than its shape string has named dims;
- options: out of range (below `min`, above `max`), of the wrong type, not finite (NaN, +inf), not among
  `choices`, and an unknown keyword;
- required/forbidden: an input whose `required_when` choice is selected is missing (or given when it is not);
- non-finite: NaN or Inf in one entry of an input (the reference rejects them; `nonfinite_calls`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mhc_spec.table import LEAD, load, resolve_shape

SPEC = load()
SIZES = {"n": 3, "C": 4, "L": 2}
BASE_LEAD = (2,)


@dataclass(frozen=True)
class BadCall:
    id: str
    why: str
    shapes: dict[str, tuple[int, ...] | None]  # per input name; None = passed as None
    options: dict[str, Any]
    nonfinite: tuple[str, float] | None = None  # (input name, value written into its first entry)
    extra: dict[str, Any] = field(default_factory=dict)  # keyword arguments beyond the op's options


def _choice_option(value: str) -> str:
    for name, opt in SPEC.options.items():
        if opt.choices and value in opt.choices:
            return name
    raise KeyError(f"required_when {value!r} names no choice of any option")


def base_call(op: str, enable_optional: bool = True) -> tuple[dict[str, tuple[int, ...] | None], dict[str, Any]]:
    """Shapes and options of a valid call; `enable_optional` selects the choices that require optional inputs."""
    spec = SPEC.op(op)
    overrides: dict[str, Any] = {}
    if "n" in spec.options:
        overrides["n"] = SIZES["n"]
    for arg in spec.inputs:
        if arg.required_when and enable_optional:
            overrides[_choice_option(arg.required_when)] = arg.required_when
    options = SPEC.op_options(op, "paper", **overrides)
    shapes = {a.name: (resolve_shape(a, BASE_LEAD, **SIZES)
                       if a.required_when is None or a.required_when in options.values() else None)
              for a in spec.inputs}
    return shapes, options


def _constrained(op: str, shapes: dict, name: str, pos: int) -> bool:
    """Whether changing dim `pos` of input `name` (alone) makes the call inconsistent."""
    present = [a for a in SPEC.op(op).inputs if shapes[a.name] is not None]
    token = SPEC.op(op).input(name).shape[pos]
    others = [(a.name, i, t) for a in present for i, t in enumerate(a.shape) if (a.name, i) != (name, pos)]
    if token == LEAD:
        return any(t == LEAD and n != name for n, _, t in others)
    used = {c for c in token if c in SPEC.letters}
    return not used or any(used & {c for c in t if c in SPEC.letters} for _, _, t in others)


def _bad_option_values(name: str) -> list[tuple[str, Any]]:
    opt = SPEC.options[name]
    out: list[tuple[str, Any]] = []
    if opt.type == "int":
        if opt.min is not None:
            out.append((f"{name}={int(opt.min) - 1}", int(opt.min) - 1))
        if opt.max is not None:
            out.append((f"{name}={int(opt.max) + 1}", int(opt.max) + 1))
        out += [(f"{name}=2.5", 2.5), (f"{name}=True", True)]
    elif opt.type == "float":
        if opt.min is not None:
            out.append((f"{name}={opt.min - 1.0}", opt.min - 1.0))
        if opt.max is not None:
            out.append((f"{name}={opt.max * 2 + 1.0}", opt.max * 2 + 1.0))
        out += [(f"{name}=nan", math.nan), (f"{name}=inf", math.inf), (f"{name}='0.1'", "0.1")]
    elif opt.type == "str":
        out += [(f"{name}='bogus'", "bogus"), (f"{name}=3", 3)]
    return out


def bad_calls(op: str) -> list[BadCall]:
    spec = SPEC.op(op)
    shapes, options = base_call(op)
    calls: list[BadCall] = []
    for arg in spec.inputs:
        if shapes[arg.name] is None:
            continue
        lead_pos = arg.shape.index(LEAD) if LEAD in arg.shape else None
        for pos, token in enumerate(arg.shape):
            if not _constrained(op, shapes, arg.name, pos):
                continue
            new = dict(shapes)
            if token == LEAD:
                new[arg.name] = resolve_shape(arg, tuple(d + 1 for d in BASE_LEAD), **SIZES)
                calls.append(BadCall(f"{arg.name}.lead+1", f"{arg.name}'s leading dims differ from the others'",
                                     new, options))
                continue
            i = pos if lead_pos is None or pos < lead_pos else pos + len(BASE_LEAD) - 1  # index in the array
            dims = list(shapes[arg.name])
            dims[i] += 1
            new[arg.name] = tuple(dims)
            calls.append(BadCall(f"{arg.name}.dim{pos}+1", f"{arg.name} dim {pos} ({token}) is off by one",
                                 new, options))
        named = [t for t in arg.shape if t != LEAD]
        new = dict(shapes)
        new[arg.name] = tuple(resolve_shape(arg, (), **SIZES)[1:])
        calls.append(BadCall(f"{arg.name}.rank", f"{arg.name} has {len(named) - 1} dims, fewer than {named}",
                             new, options))
        if arg.required_when:  # missing although required, and given although not used
            missing = dict(shapes)
            missing[arg.name] = None
            calls.append(BadCall(f"{arg.name}.missing", f"{arg.name} is required when {arg.required_when!r}",
                                 missing, options))
            off_shapes, off_options = base_call(op, enable_optional=False)
            off_shapes = dict(off_shapes)
            off_shapes[arg.name] = shapes[arg.name]
            calls.append(BadCall(f"{arg.name}.unused", f"{arg.name} given without {arg.required_when!r}",
                                 off_shapes, off_options))
    for name in spec.options:
        for label, value in _bad_option_values(name):
            calls.append(BadCall(label, f"option {name} = {value!r} is outside the table's domain", shapes,
                                 {**options, name: value}))
    calls.append(BadCall("unknown_option", "an option the table does not list", shapes, options,
                         extra={"not_an_option": 1}))
    return calls


def nonfinite_calls(op: str) -> list[BadCall]:
    shapes, options = base_call(op)
    return [BadCall(f"{name}.{label}", f"{label} in {name}", shapes, options, nonfinite=(name, value))
            for name, shape in shapes.items() if shape is not None
            for label, value in (("nan", math.nan), ("inf", math.inf))]
