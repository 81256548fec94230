"""Run one op on the backend and on the reference, and judge the result with the spec's tolerance rule.

A `Case` holds the inputs of one call *in the backend dtype* (NumPy arrays; bfloat16 as ml_dtypes.bfloat16); the
float64 reference sees exactly those values upcast. `forward` and `gradient` compare every output (every gradient)
with `tolerance.compare`, record the verdicts in the run's report, and fail with a message that ends in a
copy-pasteable NumPy repro snippet. Every call also checks the spec's functional-call rule (§11): the inputs
(and cotangents) hold the same bits afterwards and no output or gradient shares memory with an input; and the
cotangents of a gradient check are never constant along an axis (§8).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

import mhc_ref
from mhc_spec.table import load, resolve_shape

from .strategies import Draw
from .tolerance import DTYPES, Verdict, compare, perturb

SPEC = load()


@dataclass(frozen=True)
class Case:
    op: str
    dtype: str
    sizes: dict[str, int]
    lead: tuple[int, ...]
    preset: str
    options: dict[str, Any]
    inputs: tuple[np.ndarray | None, ...]  # in the op's table order, values in `dtype`

    @classmethod
    def from_draw(cls, op: str, dtype: str, d: Draw) -> Case:
        inputs = tuple(None if a is None else np.asarray(a).astype(DTYPES[dtype]) for a in d.arrays.values())
        return cls(op, dtype, dict(d.sizes), tuple(d.lead), d.preset, dict(d.options), inputs)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in SPEC.op(self.op).inputs)

    def input(self, name: str) -> np.ndarray | None:
        return self.inputs[self.names.index(name)]

    def with_inputs(self, **arrays: np.ndarray | None) -> Case:
        """A copy with some inputs replaced (given in any float dtype; cast to the case's dtype)."""
        unknown = set(arrays) - set(self.names)
        if unknown:
            raise KeyError(f"{self.op} has no inputs {sorted(unknown)}; inputs: {self.names}")
        new = [None if arrays.get(k, a) is None else np.asarray(arrays.get(k, a)).astype(DTYPES[self.dtype])
               for k, a in zip(self.names, self.inputs)]
        return replace(self, inputs=tuple(new))

    def with_options(self, **options: Any) -> Case:
        return replace(self, options=SPEC.op_options(self.op, self.preset, **{**self.options, **options}))

    def params(self) -> dict[str, Any]:
        return {**self.sizes, "lead": self.lead, "preset": self.preset, **self.options}


def perturbed(case: Case) -> Case:
    """The case with float64 inputs moved by one rounding of its dtype (for the tolerance rule's perturbed term)."""
    return replace(case, inputs=tuple(perturb(case.inputs, case.dtype)))


# -- calling ---------------------------------------------------------------------------------------------------------
def outputs_list(op: str, out) -> list:
    """A backend's or the reference's return value as a list in the table's output order."""
    names = [o.name for o in SPEC.op(op).outputs]
    if isinstance(out, dict):
        missing = [k for k in names if k not in out]
        assert not missing, f"{op}: returned dict lacks outputs {missing} (has {sorted(out)})"
        return [out[k] for k in names]
    if isinstance(out, (tuple, list)):
        assert len(out) == len(names), f"{op}: returned {len(out)} outputs, the table lists {names}"
        return list(out)
    assert len(names) == 1, f"{op}: returned one array, the table lists outputs {names}"
    return [out]


def _snapshot(be, natives) -> list[np.ndarray | None]:
    """Copies of the values of native arrays (to compare with after a call)."""
    return [None if a is None else np.array(be.to_numpy(a), copy=True) for a in natives]


def _views(be, natives) -> list[np.ndarray | None]:
    return [None if a is None else np.asarray(be.to_numpy(a)) for a in natives]


def assert_unmodified(be, what: str, names, natives, before, case: Case) -> None:
    """Every input (and cotangent) after the call holds the same bits as before: calls never write to inputs."""
    for name, a, old in zip(names, natives, before):
        if a is None:
            continue
        new = np.asarray(be.to_numpy(a))
        if new.shape != old.shape or new.dtype != old.dtype or new.tobytes() != old.tobytes():
            changed = np.argwhere(np.asarray(new, np.float64) != np.asarray(old, np.float64)) if (
                new.shape == old.shape) else []
            where = f"; first change at {tuple(int(i) for i in changed[0])}" if len(changed) else ""
            raise AssertionError(f"{case.op}: {what} modified its input {name} in place{where} (spec: calls never "
                                 f"write to their inputs) [{case.dtype} {case.params()}]")


def assert_no_alias(be, what: str, out_names, outs, in_names, natives, case: Case) -> None:
    """No output shares memory with an input, checked where `to_numpy` exposes the backend's own, writable memory
    (NumPy, CPU tensors); immutable arrays (JAX) come back read-only, and sharing them is unobservable."""
    ins = _views(be, natives)
    for oname, y in zip(out_names, outs):
        for iname, x in zip(in_names, ins):
            if x is None or not x.size or not x.flags.writeable or not np.size(y):
                continue
            if np.shares_memory(np.asarray(y), x):
                raise AssertionError(f"{case.op}: {what} {oname} shares memory with the input {iname} (spec: outputs "
                                     f"are new arrays) [{case.dtype} {case.params()}]")


def call_backend(ctx, case: Case) -> list[np.ndarray]:
    """Run the op on the backend; check the number, shapes and dtypes of its outputs, that the call left its inputs
    unchanged and that no output aliases an input; return the outputs as NumPy arrays."""
    be = ctx.backend
    native = [None if a is None else be.from_numpy(a, case.dtype) for a in case.inputs]
    before = _snapshot(be, native)
    with np.errstate(all="ignore"):  # NumPy-based backends: overflow shows up as a non-finite result instead
        outs = [be.to_numpy(o) for o in outputs_list(case.op, getattr(be, case.op)(*native, **case.options))]
    names = [o.name for o in SPEC.op(case.op).outputs]
    assert_unmodified(be, "the call", case.names, native, before, case)
    assert_no_alias(be, "output", names, outs, case.names, native, case)
    for spec, y in zip(SPEC.op(case.op).outputs, outs):
        want = resolve_shape(spec, case.lead, **case.sizes)
        assert tuple(y.shape) == want, (f"{case.op}: output {spec.name} has shape {tuple(y.shape)}, expected {want} "
                                        f"[{case.dtype} {case.params()}]")
        if case.op != "amax_gain":  # amax_gain reports float64 statistics whatever the input dtype
            assert y.dtype == DTYPES[case.dtype], (f"{case.op}: output {spec.name} has dtype {y.dtype}, expected the "
                                                   f"input dtype {case.dtype}")
    return outs


def call_vjp(ctx, case: Case, cotangents: list[np.ndarray | None]) -> dict[str, np.ndarray]:
    """backend.vjp on the case (cotangents in the case dtype, None = zero): the gradients as NumPy arrays, after
    checking that the call left inputs and cotangents unchanged and that no gradient aliases an input."""
    be, op = ctx.backend, case.op
    assert_cotangents_vary(case, cotangents)
    native = [None if a is None else be.from_numpy(a, case.dtype) for a in case.inputs]
    cots = [None if c is None else be.from_numpy(c, case.dtype) for c in cotangents]
    before, cots_before = _snapshot(be, native), _snapshot(be, cots)
    with np.errstate(all="ignore"):
        got = be.vjp(op, native, cots, **case.options)
    want = {k for k, a in zip(case.names, case.inputs) if a is not None and k in SPEC.op(op).diff_inputs}
    assert isinstance(got, dict) and set(got) == want, (
        f"{op}: vjp must return gradients for {sorted(want)}, got {sorted(got) if isinstance(got, dict) else got!r}")
    assert_unmodified(be, "vjp", case.names, native, before, case)
    out_names = [f"g_{o.name}" for o in SPEC.op(op).outputs]
    assert_unmodified(be, "vjp", out_names, cots, cots_before, case)
    grads = {k: be.to_numpy(v) for k, v in got.items()}
    assert_no_alias(be, "gradient", [f"d/d {k}" for k in grads], list(grads.values()), case.names, native, case)
    return grads


def assert_cotangents_vary(case: Case, cotangents) -> None:
    """The suite's cotangents are never constant along an axis: a constant (sum-loss) cotangent hides wrong
    gradients, e.g. every Sinkhorn gradient is ~0 for one because the row sums of H_res are always 1 (spec §8)."""
    for spec, c in zip(SPEC.op(case.op).outputs, cotangents):
        if c is None or np.size(c) == 0:
            continue
        c = np.asarray(c, np.float64)
        for axis in range(c.ndim):
            if c.shape[axis] > 1 and np.all(np.ptp(c, axis=axis) == 0):
                raise AssertionError(f"{case.op}: the cotangent of {spec.name} is constant along axis {axis}: the "
                                     f"suite's cotangents must vary (spec §8) [{case.dtype} {case.params()}]")


def call_reference(case: Case, compute_dtype: str = "float64") -> list[np.ndarray]:
    """The reference on the case's inputs: upcast exactly to float64, or computed in `compute_dtype` (naive).

    A naive run that breaks down (overflow caught by the reference's own checks) returns NaN outputs: no bound
    from the naive baseline, so the ceiling decides.
    """
    if compute_dtype != "float64":
        try:
            return _call_reference(case, compute_dtype)
        except (ValueError, FloatingPointError):
            return [np.full(np.shape(y), np.nan) for y in _call_reference(case, "float64")]
    return _call_reference(case, compute_dtype)


def _call_reference(case: Case, compute_dtype: str) -> list[np.ndarray]:
    fn = getattr(mhc_ref, case.op)
    if case.op == "amax_gain":  # always accumulates in float64
        return outputs_list(case.op, fn(*[a.astype(np.float64) for a in case.inputs]))
    inputs = [None if a is None else a.astype(np.float64) for a in case.inputs]
    with np.errstate(all="ignore"):  # a naive low-precision baseline may overflow; the tolerance rule copes
        return outputs_list(case.op, fn(*inputs, **case.options, compute_dtype=compute_dtype))


def reference_vjp(case: Case, cotangents, compute_dtype: str = "float64") -> dict[str, np.ndarray]:
    """The reference VJP on the upcast inputs and cotangents (NaN gradients if a naive run breaks down)."""
    if compute_dtype != "float64":
        try:
            return _reference_vjp(case, cotangents, compute_dtype)
        except (ValueError, FloatingPointError):
            return {k: np.full(np.shape(v), np.nan) for k, v in _reference_vjp(case, cotangents, "float64").items()}
    return _reference_vjp(case, cotangents, compute_dtype)


def _reference_vjp(case: Case, cotangents, compute_dtype: str) -> dict[str, np.ndarray]:
    fn = getattr(mhc_ref, case.op + "_vjp")
    inputs = [None if a is None else a.astype(np.float64) for a in case.inputs]
    cots = [None if c is None else c.astype(np.float64) for c in cotangents]
    with np.errstate(all="ignore"):
        grads = fn(*inputs, *cots, **case.options, compute_dtype=compute_dtype)
    return {k: v for k, v in grads.items() if k in SPEC.op(case.op).diff_inputs}


# -- judging -----------------------------------------------------------------------------------------------------
def _judge(ctx, verdicts: list[Verdict], repro) -> None:
    for v in verdicts:
        ctx.record(v)
    failed = [v for v in verdicts if not v.passed]
    if failed:
        raise AssertionError("\n".join(v.message() for v in failed) + "\n" + repro())


def forward(ctx, case: Case) -> list[np.ndarray]:
    """Check every output of one call against the reference; returns the backend's outputs."""
    ys = call_backend(ctx, case)
    y64s = call_reference(case)
    naive = call_reference(case, case.dtype)
    moved = call_reference(perturbed(case))
    names = [o.name for o in SPEC.op(case.op).outputs]
    verdicts = [compare(case.op, name, "forward", case.dtype, y, y64, yn, yp, case.params())
                for name, y, y64, yn, yp in zip(names, ys, y64s, naive, moved)]
    _judge(ctx, verdicts, lambda: repro(ctx, case))
    return ys


def gradient(ctx, case: Case, cotangents: list[np.ndarray | None]) -> dict[str, np.ndarray]:
    """Check backend.vjp against the reference VJP for cotangents (in the case dtype; None = zero)."""
    op = case.op
    got = call_vjp(ctx, case, cotangents)
    g64 = reference_vjp(case, cotangents)
    gnaive = reference_vjp(case, cotangents, case.dtype)
    gmoved = reference_vjp(perturbed(case), perturb(cotangents, case.dtype))
    verdicts = []
    for name in sorted(got):
        g = got[name]
        x = case.input(name)
        assert g.shape == x.shape, f"{op}: gradient of {name} has shape {g.shape}, expected {x.shape}"
        assert g.dtype == x.dtype, f"{op}: gradient of {name} has dtype {g.dtype}, expected {x.dtype}"
        verdicts.append(compare(op, name, "gradient", case.dtype, g, g64[name], gnaive[name], gmoved[name],
                                case.params()))
    _judge(ctx, verdicts, lambda: repro(ctx, case, cotangents))
    return got


def random_cotangents(case: Case, seed: int, drop: tuple[int, ...] = ()) -> list[np.ndarray | None]:
    """Standard-normal cotangents (in the case dtype) for the op's outputs; outputs listed in `drop` get None.
    Never constant along an axis (redrawn in the rare case that rounding to a 16-bit dtype makes them so)."""
    rng = np.random.default_rng(seed)
    out = []
    for i, spec in enumerate(SPEC.op(case.op).outputs):
        shape = resolve_shape(spec, case.lead, **case.sizes)
        g = None
        while i not in drop:
            g = rng.standard_normal(shape).astype(DTYPES[case.dtype])
            if not any(g.shape[a] > 1 and np.all(np.ptp(g.astype(np.float64), axis=a) == 0) for a in range(g.ndim)):
                break
        out.append(g)
    return out


# -- repro snippets ----------------------------------------------------------------------------------------------
_DTYPE_EXPR = {"float64": "np.float64", "float32": "np.float32", "float16": "np.float16",
               "bfloat16": "ml_dtypes.bfloat16"}
INLINE_MAX = 64  # arrays up to this many entries are written inline, bigger ones go to an .npz file


def _arrays_code(ctx, label: str, names: list[str], arrays: list, dtype: str) -> list[str]:
    big = {k: np.asarray(a, np.float64) for k, a in zip(names, arrays) if a is not None and a.size > INLINE_MAX}
    lines = []
    if big:
        digest = hashlib.sha1(b"".join(v.tobytes() for v in big.values())).hexdigest()[:12]
        ctx.repro_dir.mkdir(parents=True, exist_ok=True)
        path = ctx.repro_dir / f"{label}-{digest}.npz"
        np.savez(path, **big)
        lines.append(f"saved = np.load({str(path)!r})  # float64 copies of the {dtype} values")
    items = []
    for k, a in zip(names, arrays):
        if a is None:
            items.append("None")
        elif k in big:
            items.append(f"saved[{k!r}].astype({_DTYPE_EXPR[dtype]})")
        else:
            values = np.asarray(a, np.float64).tolist()
            items.append(f"np.array({values!r}, dtype=np.float64).astype({_DTYPE_EXPR[dtype]})")
    lines.append(f"{label} = [  # {', '.join(names)}")
    lines += [f"    {item}," for item in items]
    lines.append("]")
    return lines


def repro(ctx, case: Case, cotangents: list | None = None) -> str:
    """A NumPy script that rebuilds the exact inputs and makes the same backend and reference calls."""
    opts = ", ".join(f"{k}={v!r}" for k, v in case.options.items())
    dt = case.dtype
    lines = ["# --- repro (copy-paste into python) ---", "import ml_dtypes, numpy as np", "import mhc_ref",
             "from mhc_backends import load_backend", f"be = load_backend({ctx.backend_spec!r})"]
    lines += _arrays_code(ctx, "inputs", list(case.names), list(case.inputs), dt)
    lines.append(f"native = [None if a is None else be.from_numpy(a, {dt!r}) for a in inputs]")
    up = "[None if a is None else a.astype(np.float64) for a in inputs]"
    if cotangents is None:
        lines.append(f"got = be.{case.op}(*native{', ' + opts if opts else ''})")
        kw = "" if case.op == "amax_gain" else f"{', ' + opts if opts else ''}"
        lines.append(f"want = mhc_ref.{case.op}(*{up}{kw})  # float64 reference")
    else:
        outs = [o.name for o in SPEC.op(case.op).outputs]
        lines += _arrays_code(ctx, "cotangents", outs, cotangents, dt)
        lines.append(f"got = be.vjp({case.op!r}, native, [None if c is None else be.from_numpy(c, {dt!r}) "
                     f"for c in cotangents]{', ' + opts if opts else ''})")
        lines.append(f"want = mhc_ref.{case.op}_vjp(*{up}, *[None if c is None else c.astype(np.float64) "
                     f"for c in cotangents]{', ' + opts if opts else ''})")
    return "\n".join(lines)
