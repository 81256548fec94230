"""The backend contract: a name, the spec version it implements, declared capabilities, array conversion, the spec
ops by their table names, and one VJP entry.

Calling convention (the same for every backend and for the conformance suite):
- `backend.<op>(*inputs, **options)`: inputs are native arrays in the spec table's order (None for an absent
  optional input such as collapse_streams' head parameters); options are all given explicitly as keywords, already
  resolved from a preset (`mhc_spec.table.load().op_options(op, preset)`). Returns one array, a tuple in the table's
  output order, or (amax_gain) a dict keyed by output name.
- `backend.vjp(op, inputs, cotangents, **options)`: `cotangents` has one entry per output (None = zero); returns
  {input name: gradient} for every differentiable input that is not None.
- A backend declares what it claims in `capabilities`; the suite skips what is not claimed and fails what is
  claimed and wrong.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mhc_spec.table import load


@dataclass(frozen=True)
class Capabilities:
    ops: frozenset[str]
    dtypes: frozenset[str]
    grad_ops: frozenset[str]
    devices: tuple[str, ...] = ("cpu",)
    presets: frozenset[str] = field(default_factory=lambda: frozenset(load().presets))

    def __post_init__(self):
        spec = load()
        unknown = (set(self.ops) | set(self.grad_ops)) - set(spec.ops)
        if unknown:
            raise ValueError(f"Capabilities: unknown ops {sorted(unknown)}; spec ops are {list(spec.ops)}")
        if not set(self.grad_ops) <= set(self.ops):
            raise ValueError(f"Capabilities: grad_ops {sorted(set(self.grad_ops) - set(self.ops))} not in ops")
        bad = set(self.dtypes) - set(spec.conformance["dtypes"])
        if bad:
            raise ValueError(f"Capabilities: unknown dtypes {sorted(bad)}; spec dtypes {spec.conformance['dtypes']}")

    @classmethod
    def every_op(cls, devices: tuple[str, ...]) -> Capabilities:
        """Every spec op in every conformance dtype, with the gradient of every differentiable op."""
        spec = load()
        return cls(ops=frozenset(spec.ops), dtypes=frozenset(spec.conformance["dtypes"]),
                   grad_ops=frozenset(name for name, op in spec.ops.items() if op.differentiable), devices=devices)


class Backend(ABC):
    """Base class of every backend. Subclasses set `name`, `capabilities` and implement the claimed ops."""

    name: str = ""
    spec_version: str = load().spec_version
    capabilities: Capabilities
    # op name -> function(*inputs, **options); `backend.<op>` resolves here unless the class defines a method
    op_functions: Mapping[str, Callable[..., Any]] = {}

    def __getattr__(self, name: str):
        fn = type(self).op_functions.get(name)
        if fn is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return fn

    # -- arrays ---------------------------------------------------------------------------------------------------
    @abstractmethod
    def from_numpy(self, array, dtype: str) -> Any:
        """A native array holding `array` cast to the spec dtype name `dtype` on this backend's device."""

    @abstractmethod
    def to_numpy(self, value) -> Any:
        """A numpy.ndarray of the native array's values in its own dtype (bfloat16 as ml_dtypes.bfloat16)."""

    # -- metadata for reports -------------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        return "cpu"

    def versions(self) -> dict[str, str]:
        return {}

    # -- gradients ------------------------------------------------------------------------------------------------
    def vjp(self, op: str, inputs: Sequence[Any], cotangents: Sequence[Any], **options) -> dict[str, Any]:
        raise NotImplementedError(f"backend {self.name!r} implements no VJP for {op!r}")

    @staticmethod
    def vjp_arguments(op: str, inputs: Sequence[Any], cotangents: Sequence[Any]) -> tuple[list[str], list[int]]:
        """The checks of a `vjp` call against the spec table (op differentiable, one input per table input, one
        cotangent per output); returns (input names, indices of the inputs to differentiate: the table's
        differentiable inputs that are not None)."""
        spec = load().op(op)
        if not spec.differentiable:
            raise NotImplementedError(f"op {op!r} is not differentiable")
        names = [a.name for a in spec.inputs]
        if len(inputs) != len(names):
            raise ValueError(f"vjp({op!r}): expected {len(names)} inputs {names}, got {len(inputs)}")
        if len(cotangents) != len(spec.outputs):
            raise ValueError(f"vjp({op!r}): expected {len(spec.outputs)} cotangents "
                             f"{[o.name for o in spec.outputs]}, got {len(cotangents)}")
        return names, [i for i, name in enumerate(names) if name in spec.diff_inputs and inputs[i] is not None]

    # -- helpers --------------------------------------------------------------------------------------------------
    def claims(self, op: str, dtype: str | None = None, grad: bool = False) -> bool:
        c = self.capabilities
        return op in c.ops and (dtype is None or dtype in c.dtypes) and (not grad or op in c.grad_ops)

    def call(self, op: str, inputs: Sequence[Any], **options):
        """Run op `op` by its spec name."""
        fn = getattr(self, op, None)
        if fn is None or op not in self.capabilities.ops:
            raise NotImplementedError(f"backend {self.name!r} does not implement {op!r}")
        return fn(*inputs, **options)

    def __repr__(self) -> str:
        return f"<mHC backend {self.name!r} spec {self.spec_version} on {self.device}>"
