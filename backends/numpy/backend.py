"""Adapter from the backend contract to `mhc_ref`: op `<op>` calls `mhc_ref.<op>`, vjp calls `mhc_ref.<op>_vjp`."""

from __future__ import annotations

import numpy as np

import mhc_ref
from mhc_ref._common import DTYPES, dtype_name
from mhc_spec.table import load

from ..base import Backend, Capabilities

SPEC = load()


class NumpyBackend(Backend):
    name = "numpy"
    capabilities = Capabilities.every_op(devices=("cpu",))

    def from_numpy(self, array, dtype):
        return np.asarray(array).astype(DTYPES[dtype])

    def to_numpy(self, value):
        return np.asarray(value)

    def versions(self):
        return {"numpy": np.__version__}

    def _dtype(self, inputs):
        return dtype_name(next(a for a in inputs if a is not None).dtype)

    def call(self, op, inputs, **options):
        if op not in self.capabilities.ops:
            raise NotImplementedError(f"backend 'numpy' does not implement {op!r}")
        kwargs = dict(options)
        if op != "amax_gain":
            kwargs["compute_dtype"] = self._dtype(inputs)
        return getattr(mhc_ref, op)(*inputs, **kwargs)

    def vjp(self, op, inputs, cotangents, **options):
        spec = SPEC.op(op)
        if not spec.differentiable:
            raise NotImplementedError(f"op {op!r} is not differentiable")
        grads = getattr(mhc_ref, op + "_vjp")(*inputs, *cotangents, compute_dtype=self._dtype(inputs), **options)
        return {k: v for k, v in grads.items() if k in spec.diff_inputs}


for _op in SPEC.ops:  # expose every op as a method with the contract's signature
    setattr(NumpyBackend, _op, (lambda op: lambda self, *inputs, **options: self.call(op, inputs, **options))(_op))


def backend() -> NumpyBackend:
    return NumpyBackend()
