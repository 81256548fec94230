"""Test factories: each `test_<op>.py` module builds its tests from the op's row in the spec table.

- `values_test`: every output against the float64 reference, within the tolerance rule (forward row), for random
  sizes from the table's [conformance] set, free leading dims, presets and options;
- `gradients_test`: `backend.vjp` against the reference VJP (gradient row), with random (never constant) cotangents,
  some of them None (= zero);
- `large_test`: one example per dtype at the table's [conformance.large] sizes (values and gradients);
- `invariants_test`: one test per invariant the op's row names, run by `invariants.CHECKS[name]`;
- `bad_calls_test` / `nonfinite_test`: the calls of `badcalls` must raise ValueError or TypeError.

The `dtype` argument is parametrized by the plugin over the spec dtypes (or `--mhc-dtypes`); each test skips what the
backend does not claim (capabilities) and fails what it claims and gets wrong. `mhc` is the run's `Context`.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mhc_spec.table import load

from . import badcalls, check
from .check import Case
from .invariants import CHECKS
from .strategies import draw, draw_large, draw_seed
from .tolerance import DTYPES

SPEC = load()
REJECT = (ValueError, TypeError)


def _named(fn, name: str, doc: str):
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc
    return fn


def values_test(op: str):
    @given(data=st.data())
    def test(mhc, dtype, data):
        mhc.require(op, dtype)
        check.forward(mhc, Case.from_draw(op, dtype, draw(data, op, mhc.backend, dtype)))
    return _named(test, "test_values", f"{op}: every output vs the float64 reference within the forward tolerance.")


def gradients_test(op: str):
    if not SPEC.op(op).differentiable:
        raise ValueError(f"op {op!r} has no differentiable inputs in the spec table")
    n_out = len(SPEC.op(op).outputs)

    @given(data=st.data())
    def test(mhc, dtype, data):
        mhc.require(op, dtype, grad=True)
        case = Case.from_draw(op, dtype, draw(data, op, mhc.backend, dtype))
        # zero cotangents (None) for a strict subset of the outputs exercise the backend's handling of unused ones
        drop = data.draw(st.sets(st.integers(0, n_out - 1), max_size=n_out - 1), label="cotangents_none")
        check.gradient(mhc, case, check.random_cotangents(case, draw_seed(data), tuple(sorted(drop))))
    return _named(test, "test_gradients", f"{op}: backend.vjp vs the reference VJP within the gradient tolerance.")


def large_test(op: str):
    """One example per dtype at the table's large sizes (>= 20 tokens, 3 leading dims, n*C > 1024): every output,
    and every gradient with a random cotangent for every output. A single Hypothesis example: it is the costliest
    call of the suite, and tile boundaries need one call, not many."""
    grad = SPEC.op(op).differentiable

    @settings(max_examples=1)
    @given(data=st.data())
    def test(mhc, dtype, data):
        mhc.require(op, dtype)
        case = Case.from_draw(op, dtype, draw_large(data, op, mhc.backend, dtype))
        check.forward(mhc, case)
        if grad and mhc.backend.claims(op, dtype, grad=True):
            check.gradient(mhc, case, check.random_cotangents(case, draw_seed(data)))
    return _named(test, "test_large", f"{op}: values{' and gradients' if grad else ''} at the table's large sizes.")


def invariants_test(op: str):
    names = SPEC.op(op).invariants
    missing = [n for n in names if n not in CHECKS]
    if missing:
        raise KeyError(f"{op}: invariants {missing} named in the spec table have no check in invariants.CHECKS")

    @pytest.mark.parametrize("invariant", names)
    @given(data=st.data())
    def test(mhc, dtype, invariant, data):
        mhc.require(op, dtype)
        CHECKS[invariant](mhc, op, dtype, data)
    return _named(test, "test_invariants", f"{op}: the invariants its spec-table row names ({', '.join(names)}).")


def _arrays(call: badcalls.BadCall, dtype: str) -> dict[str, np.ndarray | None]:
    rng = np.random.default_rng(0)
    out = {}
    for name, shape in call.shapes.items():
        if shape is None:
            out[name] = None
            continue
        a = rng.uniform(0.1, 0.9, shape)  # inside every input's domain (logits, maps, weights, activations)
        if call.nonfinite and call.nonfinite[0] == name and a.size:
            a.flat[0] = call.nonfinite[1]
        out[name] = a.astype(DTYPES[dtype])
    return out


def _expect_rejection(mhc, op: str, call: badcalls.BadCall) -> None:
    be = mhc.backend
    dtype = mhc.first_dtype(op)
    control_shapes, control_options = badcalls.base_call(op)
    control = badcalls.BadCall("control", "valid", control_shapes, control_options)
    native = lambda c: [None if a is None else be.from_numpy(a, dtype) for a in _arrays(c, dtype).values()]  # noqa
    getattr(be, op)(*native(control), **control.options)  # a valid call must go through
    try:
        getattr(be, op)(*native(call), **call.options, **call.extra)
    except REJECT:
        return
    except Exception as e:  # noqa: BLE001 (the point is to report what was raised instead)
        raise AssertionError(f"{op}: bad call {call.id} ({call.why}) raised {type(e).__name__}: {e}; the contract "
                             f"asks for ValueError or TypeError") from e
    shapes = {k: v for k, v in call.shapes.items() if v is not None}
    raise AssertionError(f"{op}: bad call {call.id} was accepted ({call.why}); shapes {shapes}, options "
                         f"{call.options}{', extra ' + str(call.extra) if call.extra else ''}, {dtype}")


def _rejection_test(op: str, calls, name: str, doc: str):
    @pytest.mark.parametrize("call", calls, ids=[c.id for c in calls])
    def test(mhc, call):
        mhc.require(op)
        _expect_rejection(mhc, op, call)
    return _named(test, name, doc)


def bad_calls_test(op: str):
    return _rejection_test(op, badcalls.bad_calls(op), "test_bad_calls",
                           f"{op}: shapes and options outside the table raise ValueError/TypeError.")


def nonfinite_test(op: str):
    return _rejection_test(op, badcalls.nonfinite_calls(op), "test_nonfinite_inputs",
                           f"{op}: NaN or Inf in any input raises ValueError.")
