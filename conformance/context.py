"""The state of one conformance run: the backend under test, the selected dtypes, and the report being collected.

The plugin builds one `Context` per session (fixture `mhc`); checks record their verdicts into it, and the plugin
writes it out as the `--mhc-report` JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mhc_backends.base import Backend


@dataclass
class CheckRecord:
    """The worst verdict of one (test, kind, output) over all the examples Hypothesis ran."""

    op: str
    dtype: str
    kind: str
    output: str
    checks: int = 0
    failures: int = 0
    worst_headroom: float = 0.0
    max_err: float = 0.0
    allowed: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)

    def add(self, verdict) -> None:
        self.checks += 1
        self.failures += not verdict.passed
        if verdict.headroom >= self.worst_headroom or self.checks == 1:
            self.worst_headroom = verdict.headroom
            self.max_err, self.allowed = verdict.max_err, verdict.bound.allowed
            self.params = {k: v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
                           for k, v in verdict.params.items()}

    def as_json(self) -> dict[str, Any]:
        finite = lambda v: v if math.isfinite(v) else str(v)  # noqa: E731 (JSON has no inf)
        return {"op": self.op, "dtype": self.dtype, "kind": self.kind, "output": self.output, "checks": self.checks,
                "failures": self.failures, "max_err": finite(self.max_err), "allowed": finite(self.allowed),
                "headroom": finite(self.worst_headroom), "passed": self.failures == 0, "params": self.params}


@dataclass
class Context:
    backend: Backend
    backend_spec: str  # the name given to load_backend ('numpy', 'pkg.mod:obj'), for repro snippets
    dtypes: tuple[str, ...]
    repro_dir: Path
    nodeid: str = ""  # the test being run (set by the plugin)
    records: dict[tuple[str, str, str], CheckRecord] = field(default_factory=dict)

    def __repr__(self) -> str:  # short: Hypothesis prints the test's arguments on failure
        return f"Context(backend={self.backend!r}, dtypes={list(self.dtypes)})"

    def _repr_pretty_(self, printer, cycle) -> None:  # Hypothesis' pretty printer would list every record
        printer.text(repr(self))

    def require(self, op: str, dtype: str | None = None, grad: bool = False) -> None:
        """Skip unless the backend claims `op` (in `dtype`, with gradients)."""
        caps = self.backend.capabilities
        if op not in caps.ops:
            pytest.skip(f"backend {self.backend.name!r} does not claim op {op!r}")
        if dtype is not None and dtype not in caps.dtypes:
            pytest.skip(f"backend {self.backend.name!r} does not claim dtype {dtype}")
        if grad and op not in caps.grad_ops:
            pytest.skip(f"backend {self.backend.name!r} does not claim gradients of {op!r}")

    def first_dtype(self, op: str) -> str:
        """A claimed dtype for dtype-independent checks (bad calls): float32 if claimed, else float64, else any."""
        claimed = [d for d in ("float32", "float64", "bfloat16", "float16") if d in self.backend.capabilities.dtypes]
        if not claimed:
            pytest.skip(f"backend {self.backend.name!r} claims no dtype")
        return claimed[0]

    def record(self, verdict) -> None:
        key = (self.nodeid, verdict.kind, verdict.output)
        if key not in self.records:
            self.records[key] = CheckRecord(verdict.op, verdict.dtype, verdict.kind, verdict.output)
        self.records[key].add(verdict)
