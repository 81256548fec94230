"""The reference's `compute_dtype` baseline really computes in low precision: its float32 / bfloat16 / float16 results
are close to float64 at that dtype's precision (within the spec table's ceiling for the op) and not identical to
float64 (they carry that dtype's rounding). The conformance tolerance rule scales with this baseline's error, so a
baseline that secretly ran in float64 would make every backend's bound zero.

Inputs are built in the low dtype first and upcast exactly for the float64 run (style: flash-attention's oracle).
"""

from __future__ import annotations

import inspect

import ml_dtypes
import numpy as np
import pytest

import mhc_ref
from mhc_spec.table import load, resolve_shape

SPEC = load()
DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16), "float16": np.dtype(np.float16)}
OPS = tuple(name for name in SPEC.ops if "compute_dtype" in inspect.signature(getattr(mhc_ref, name)).parameters)
N, C, LEAD = 4, 8, (3, 5)
# Copies and the sum collapse's gradient (a copy of g_y) are exact at any precision once the input is representable.
EXACT = {("expand_streams", "forward"), ("collapse_streams[sum]", "gradient")}
CASES = [(op, mode) for op in OPS for mode in (("sum", "head") if op == "collapse_streams" else (None,))]


def _inputs(op, mode, rng, dt):
    """Inputs in table order, drawn in float64, rounded to dt; None for 'head'-only arguments in 'sum' mode."""
    sizes = {"n": N, "C": C, "L": 2}
    out = []
    for arg in SPEC.op(op).inputs:
        if arg.required_when and arg.required_when != mode:
            out.append(None)
            continue
        shape = resolve_shape(arg, LEAD, **sizes)
        scale = 1 / np.sqrt(N * C) if arg.name in ("phi", "phi_head") else 1.0
        out.append((scale * rng.standard_normal(shape)).astype(dt))
    return out


def _opts(op, mode):
    return {"n": N} if op == "expand_streams" else {"mode": mode} if mode else {}


def _as_list(y):
    return list(y) if isinstance(y, tuple) else [y]


def _check(op, mode, kind, lo, hi, dt):
    ceiling = SPEC.tolerance_ceiling(op, dtype_name(dt), kind)
    label = f"{op}[{mode}]" if mode else op
    exact = (label, kind) in EXACT
    eps = float(ml_dtypes.finfo(dt).eps)
    for i, (a, b) in enumerate(zip(lo, hi)):
        assert a.dtype == dt, f"{label} {kind} output {i}: dtype {a.dtype}, expected the compute dtype {dt}"
        err = float(np.max(np.abs(a.astype(np.float64) - b)))
        scale = float(np.max(np.abs(b)))
        assert err <= ceiling * max(1.0, scale), (
            f"{label} {kind} output {i} [{dt}]: max err {err:.2e} > ceiling {ceiling:.1e} x max(1, {scale:.2e})")
        if exact:
            assert err == 0.0
        else:
            assert err > 0.01 * eps * scale, (
                f"{label} {kind} output {i} [{dt}]: err {err:.1e} is far below {dt}'s rounding ({eps:.1e} x "
                f"{scale:.1e}): is the baseline computing in float64?")


def dtype_name(dt):
    return next(k for k, v in DTYPES.items() if v == dt)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("op,mode", CASES)
def test_forward_in_compute_dtype(op, mode, dtype, rng):
    dt = DTYPES[dtype]
    xs = _inputs(op, mode, rng, dt)
    xs64 = [None if x is None else x.astype(np.float64) for x in xs]
    fwd = getattr(mhc_ref, op)
    lo = _as_list(fwd(*xs, compute_dtype=dtype, **_opts(op, mode)))
    hi = _as_list(fwd(*xs64, **_opts(op, mode)))
    assert all(h.dtype == np.float64 for h in hi)
    _check(op, mode, "forward", lo, hi, dt)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("op,mode", [(op, mode) for op, mode in CASES if SPEC.op(op).differentiable])
def test_vjp_in_compute_dtype(op, mode, dtype, rng):
    dt = DTYPES[dtype]
    xs = _inputs(op, mode, rng, dt)
    xs64 = [None if x is None else x.astype(np.float64) for x in xs]
    outs = _as_list(getattr(mhc_ref, op)(*xs64, **_opts(op, mode)))
    gs = [rng.standard_normal(o.shape).astype(dt) for o in outs]
    vjp = getattr(mhc_ref, op + "_vjp")
    lo = vjp(*xs, *gs, compute_dtype=dtype, **_opts(op, mode))
    hi = vjp(*xs64, *[g.astype(np.float64) for g in gs], **_opts(op, mode))
    names = [a for a in SPEC.op(op).diff_inputs if a in hi]
    assert len(names) == (1 if mode == "sum" else len(SPEC.op(op).diff_inputs))
    _check(op, mode, "gradient", [lo[k] for k in names], [hi[k] for k in names], dt)
