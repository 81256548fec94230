"""Stdlib-only loader for the spec table `spec/mhc.toml`.

The reference, the conformance suite and the benchmarks all read the table through this module, so nothing
normative is typed twice. It must never import numpy, torch or jax.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

TABLE_PATH = Path(__file__).with_name("mhc.toml")
PROSE_PATH = Path(__file__).with_name("mhc.md")
LEAD = "..."


@dataclass(frozen=True)
class ArgSpec:
    name: str
    shape: tuple[str, ...]  # dims as written: "...", "n", "C", "n*C", "3"
    diff: bool = False
    required_when: str | None = None  # e.g. "head": only required when option mode == "head"


@dataclass(frozen=True)
class OptionSpec:
    name: str
    type: str
    default: Any
    doc: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    preset_key: str | None = None  # the preset entry this option reads, when not its own name

    def check(self, value: Any, *, where: str = "") -> Any:
        """Validate `value` for this option; raise TypeError/ValueError naming the option, expected and got."""
        label = f"{where}: " if where else ""
        if self.type == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{label}{self.name} must be an int, got {type(value).__name__} {value!r}")
        elif self.type == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{label}{self.name} must be a real number, got {type(value).__name__} {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{label}{self.name} must be finite, got {value!r}")
            value = float(value)
        elif self.type == "str":
            if not isinstance(value, str):
                raise TypeError(f"{label}{self.name} must be a str, got {type(value).__name__} {value!r}")
            if self.choices is not None and value not in self.choices:
                raise ValueError(f"{label}{self.name} must be one of {list(self.choices)}, got {value!r}")
        if self.min is not None and value < self.min:
            raise ValueError(f"{label}{self.name} must be >= {self.min}, got {value!r}")
        if self.max is not None and value > self.max:
            raise ValueError(f"{label}{self.name} must be <= {self.max}, got {value!r}")
        return value


@dataclass(frozen=True)
class OpSpec:
    name: str
    equation: str
    doc: str
    inputs: tuple[ArgSpec, ...]
    options: tuple[str, ...]
    outputs: tuple[ArgSpec, ...]
    tolerance: str
    invariants: tuple[str, ...]

    @property
    def diff_inputs(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.inputs if a.diff)

    @property
    def differentiable(self) -> bool:
        return bool(self.diff_inputs)

    def input(self, name: str) -> ArgSpec:
        for a in self.inputs:
            if a.name == name:
                return a
        raise KeyError(f"op {self.name!r} has no input {name!r}; inputs: {[a.name for a in self.inputs]}")


@dataclass(frozen=True)
class Shape:
    name: str
    B: int
    T: int
    n: int
    C: int
    dtypes: tuple[str, ...]
    device: str
    doc: str = ""
    L: int = 1  # depth of the mhc_stack benchmarks; a shape entry without `L` means one layer

    @property
    def tokens(self) -> int:
        return self.B * self.T


@dataclass(frozen=True)
class SpecTable:
    spec_version: str
    letters: Mapping[str, str]
    options: Mapping[str, OptionSpec]
    presets: Mapping[str, Mapping[str, Any]]
    ops: Mapping[str, OpSpec]
    invariants: Mapping[str, Mapping[str, Any]]
    tolerance: Mapping[str, Any]
    conformance: Mapping[str, Any]
    shapes: Mapping[str, Shape] = field(default_factory=dict)

    # -- presets -------------------------------------------------------------------------------------------------
    def preset(self, name: str) -> dict[str, Any]:
        """Option values of a named preset (without its doc string)."""
        if not isinstance(name, str):
            raise TypeError(f"preset must be a str, got {type(name).__name__} {name!r}")
        if name not in self.presets:
            raise ValueError(f"preset must be one of {sorted(self.presets)}, got {name!r}")
        return {k: v for k, v in self.presets[name].items() if k != "doc"}

    def op_options(self, op: str, preset: str = "paper", **overrides: Any) -> dict[str, Any]:
        """The keyword options of `op`: defaults, then the preset's values, then validated overrides."""
        spec = self.op(op)
        values = {name: self.options[name].default for name in spec.options}
        chosen = self.preset(preset)
        for name in values:
            key = self.options[name].preset_key or name
            if key in chosen:
                values[name] = chosen[key]
        for key, value in overrides.items():
            if key not in values:
                raise TypeError(f"{op}: unexpected option {key!r}; options are {list(spec.options)}")
            values[key] = value
        return {k: self.options[k].check(v, where=op) for k, v in values.items()}

    # -- ops -----------------------------------------------------------------------------------------------------
    def op(self, name: str) -> OpSpec:
        if name not in self.ops:
            raise ValueError(f"op must be one of {sorted(self.ops)}, got {name!r}")
        return self.ops[name]

    def tolerance_ceiling(self, op: str, dtype: str, kind: str) -> float:
        """Per-dtype ceiling (relative to max(1, max|y64|)) for `kind` in {'forward', 'gradient'}."""
        cls = self.tolerance["classes"][self.op(op).tolerance]
        return float(cls[kind][dtype])


def eval_dim(dim: str, sizes: Mapping[str, int]) -> int:
    """Evaluate one dim expression such as `n*n+2*n` with the given letter sizes (no eval())."""
    total = 0
    for term in dim.replace(" ", "").split("+"):
        prod = 1
        for factor in term.split("*"):
            if factor.isdigit():
                prod *= int(factor)
            elif factor in sizes:
                prod *= int(sizes[factor])
            else:
                raise KeyError(f"dim {dim!r}: unknown size {factor!r}; known: {sorted(sizes)}")
        total += prod
    return total


def resolve_shape(arg: ArgSpec, lead: tuple[int, ...] = (), **sizes: int) -> tuple[int, ...]:
    """Concrete shape of `arg` for leading dims `lead` and letter sizes such as n=4, C=8, L=3."""
    out: list[int] = []
    for dim in arg.shape:
        if dim == LEAD:
            out.extend(lead)
        else:
            out.append(eval_dim(dim, sizes))
    return tuple(out)


def _arg(d: Mapping[str, Any]) -> ArgSpec:
    return ArgSpec(
        name=d["name"],
        shape=tuple(d["shape"].split()),
        diff=bool(d.get("diff", False)),
        required_when=d.get("required_when"),
    )


@cache
def load(path: str | None = None) -> SpecTable:
    """Parse the spec table (cached)."""
    raw = tomllib.loads(Path(path or TABLE_PATH).read_text(encoding="utf-8"))
    options = {
        name: OptionSpec(
            name=name,
            type=o["type"],
            default=o["default"],
            doc=o.get("doc", ""),
            min=o.get("min"),
            max=o.get("max"),
            choices=tuple(o["choices"]) if "choices" in o else None,
            preset_key=o.get("preset_key"),
        )
        for name, o in raw["options"].items()
    }
    ops = {
        name: OpSpec(
            name=name,
            equation=o["equation"],
            doc=o["doc"],
            inputs=tuple(_arg(a) for a in o["inputs"]),
            options=tuple(o["options"]),
            outputs=tuple(_arg(a) for a in o["outputs"]),
            tolerance=o["tolerance"],
            invariants=tuple(o["invariants"]),
        )
        for name, o in raw["ops"].items()
    }
    shapes = {
        name: Shape(name=name, B=s["B"], T=s["T"], n=s["n"], C=s["C"], dtypes=tuple(s["dtypes"]),
                    device=s["device"], doc=s.get("doc", ""), L=s.get("L", 1))
        for name, s in raw.get("shapes", {}).items()
    }
    table = SpecTable(
        spec_version=raw["spec_version"],
        letters=raw["letters"],
        options=options,
        presets=raw["presets"],
        ops=ops,
        invariants=raw["invariants"],
        tolerance=raw["tolerance"],
        conformance=raw["conformance"],
        shapes=shapes,
    )
    _check_consistency(table)
    return table


def _check_consistency(table: SpecTable) -> None:
    """Cross-references inside the table must resolve; a typo fails at load time, not in a test far away."""
    for op in table.ops.values():
        for opt in op.options:
            if opt not in table.options:
                raise ValueError(f"spec table: op {op.name!r} names unknown option {opt!r}")
        for inv in op.invariants:
            if inv not in table.invariants:
                raise ValueError(f"spec table: op {op.name!r} names unknown invariant {inv!r}")
        if op.tolerance not in table.tolerance["classes"]:
            raise ValueError(f"spec table: op {op.name!r} names unknown tolerance class {op.tolerance!r}")
    for pname, preset in table.presets.items():
        for key, value in preset.items():
            if key == "doc":
                continue
            if key not in table.options:
                raise ValueError(f"spec table: preset {pname!r} sets unknown option {key!r}")
            table.options[key].check(value, where=f"preset {pname}")


def op_names() -> tuple[str, ...]:
    return tuple(load().ops)
