"""Input validation at the public edge of the jnp ops, and the scoped float64 switch.

Rules shared by every op (the same messages as the reference and the torch backend: argument, expected, got):
- every array argument is a `jax.Array` (a tracer under jit/grad/vmap) or a `numpy.ndarray` with a float dtype
  (float64, float32, bfloat16, float16);
- parameters and maps (phi, alpha, b, h_pre, ...) have x's dtype, or float32 when x is 16-bit (mixed precision:
  float32 parameters and maps with bf16/fp16 activations); anything else is a TypeError;
- shapes follow the spec table; n comes from x and every other argument must agree with it. Shapes, dtypes and
  options are static under jit, so these checks run at trace time and cost nothing per call;
- NaN/Inf in an input is a ValueError. This value check needs concrete data: it runs on eager calls (arrays, not
  tracers) and is skipped for tracers, i.e. inside `jax.jit`, `jax.grad`, `jax.vmap`, `jax.checkpoint` and
  `lax.scan` bodies (a jitted function cannot raise on data without `jax.experimental.checkify`). Switch it off
  for eager calls too with `set_check_finite(False)` or `MHC_JAX_CHECK_FINITE=0` (it costs one pass over the data
  and a host sync). A jit user who wants the check calls the op once eagerly, or checks the inputs before `jit`.
  The same switch covers the spec's "overflow is refused" rule on eager calls (`check_outputs`: a non-finite output
  or gradient from finite inputs, e.g. overflowing map logits or a float16 result above 65504, is a ValueError);
- options are checked against the spec table's bounds (e.g. 1 <= t_max <= 1000), n >= 1 and C >= 1; empty leading
  dims are fine and give empty results;

float64: JAX computes in float64 only while `jax_enable_x64` is on. Importing this backend never changes that flag;
every op enters `x64_scope(...)` (jax.enable_x64, scoped to the call) when one of its inputs is float64, so float64
arrays made by `JaxBackend.from_numpy` (or under the user's own x64 switch) are computed in float64 and the user's
global setting is left alone. Inside a trace the flag is whatever the caller's trace was started with.
"""

from __future__ import annotations

import contextlib
import os

import jax
import jax.numpy as jnp
import numpy as np

from mhc_spec.table import load

from .. import _contract

SPEC = load()

FLOAT_DTYPES = (jnp.dtype(jnp.float64), jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
LOW_PRECISION = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))

_state = {"check_finite": os.environ.get("MHC_JAX_CHECK_FINITE", "1") not in ("0", "false", "False", "")}


def set_check_finite(enabled: bool) -> bool:
    """Switch the NaN/Inf scan of eager inputs on or off; returns the previous setting."""
    previous = _state["check_finite"]
    _state["check_finite"] = bool(enabled)
    return previous


def is_concrete(a) -> bool:
    """Whether `a` holds data (an array, not a tracer of jit/grad/vmap)."""
    return not isinstance(a, jax.core.Tracer)


def _enable_x64():
    if hasattr(jax, "enable_x64"):  # jax >= 0.7: jax.enable_x64(True) is a scoped switch
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # older jax

    return enable_x64()


def x64_enabled() -> bool:
    return bool(jax.config.read("jax_enable_x64"))


def x64_scope(*arrays, force: bool = False):
    """A context that turns float64 on for this call only, if an input is float64 (or `force`) and it is off."""
    if x64_enabled():
        return contextlib.nullcontext()
    if force or any(a is not None and jnp.dtype(a.dtype) == jnp.float64 for a in arrays if hasattr(a, "dtype")):
        return _enable_x64()
    return contextlib.nullcontext()


def compute_dtype(dtype) -> jnp.dtype:
    """The dtype the coefficient path and the stream mixing run in: float32 for 16-bit activations."""
    dtype = jnp.dtype(dtype)
    return jnp.dtype(jnp.float32) if dtype in LOW_PRECISION else dtype


def check_array(name: str, a, op: str, ndim_min: int = 1, scan: bool = True):
    """A floating jax.Array / numpy.ndarray with at least `ndim_min` dims and (if `scan`) no NaN/Inf."""
    if not isinstance(a, (jax.Array, np.ndarray)):
        raise TypeError(f"{op}: {name} must be a jax.Array (or numpy.ndarray), got {type(a).__name__}")
    if jnp.dtype(a.dtype) not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} must have a float dtype (float64, float32, bfloat16, float16), got {a.dtype}")
    if a.ndim < ndim_min:
        raise ValueError(f"{op}: {name} must have at least {ndim_min} dims, got shape {tuple(a.shape)}")
    if scan:
        check_finite(name, a, op)
    return a


def check_finite(name: str, a, op: str) -> None:
    """No NaN/Inf in a, unless the scan is off or a is a tracer (see the module docstring)."""
    if not _state["check_finite"] or not is_concrete(a) or a.size == 0:
        return
    v = np.asarray(a)  # numpy, not jnp: a concrete array closed over by a jit trace must not become a tracer
    finite = np.isfinite(v.astype(np.float32) if v.dtype.itemsize == 2 else v)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"{op}: {name} must be finite, got {bad} NaN/Inf entries "
                         f"(switch the scan off with mhc_backends.jax.set_check_finite(False))")


def check_stream_state(name: str, x, op: str) -> tuple[int, int]:
    """x (..., n, C) with n >= 1 and C >= 1 (empty leading dims are fine: empty results); returns (n, C)."""
    check_array(name, x, op, ndim_min=2)
    return _contract.stream_dims(name, x, op)


def check_dtype(name: str, a, x, op: str) -> None:
    """a has x's dtype, or float32 when x is 16-bit."""
    xd = jnp.dtype(x.dtype)
    allowed = (xd, jnp.dtype(jnp.float32)) if xd in LOW_PRECISION else (xd,)
    if jnp.dtype(a.dtype) not in allowed:
        want = " or ".join(str(d) for d in allowed)
        raise TypeError(f"{op}: {name} must have dtype {want} to match x ({xd}), got {a.dtype}")


check_shape = _contract.check_shape  # the shape and choice rules (and their messages) are framework-free
check_choice = _contract.check_choice


def check_like_x(name: str, a, x, expected: tuple[int, ...], op: str, why: str = "") -> None:
    """The full check of a companion array of x: type, dtype, shape, then finiteness."""
    check_array(name, a, op, ndim_min=0, scan=False)
    check_dtype(name, a, x, op)
    check_shape(name, a, expected, op, why)
    check_finite(name, a, op)


def _table_max(name: str):
    opt = SPEC.options.get(name)
    return None if opt is None else opt.max


def check_int(name: str, value, op: str, minimum: int) -> int:
    """An int >= minimum and <= the spec table's max for an option of that name (t_max <= 1000)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{op}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    maximum = _table_max(name)
    if maximum is not None and value > maximum:
        raise ValueError(f"{op}: {name} must be <= {int(maximum)}, got {value!r}")
    return int(value)


def check_float(name: str, value, op: str, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{op}: {name} must be a float, got {type(value).__name__} {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"{op}: {name} must be finite, got {value!r}")
    if not value >= minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    maximum = _table_max(name)
    if maximum is not None and value > maximum:
        raise ValueError(f"{op}: {name} must be <= {maximum}, got {value!r}")
    return float(value)


def check_nonzero_tokens(x, rms_eps: float, op: str, name: str = "x") -> None:
    """With rms_eps = 0 an all-zero token has RMS r = 0 and its maps are 0/0; refuse it (eager calls, as the scan)."""
    if rms_eps != 0 or not _state["check_finite"] or not is_concrete(x) or x.size == 0:
        return
    flat = np.asarray(x, dtype=np.float64).reshape(*x.shape[:-2], -1)
    if bool(np.any(np.all(flat == 0, axis=-1))):
        raise ValueError(f"{op}: {name} has a token whose n*C entries are all zero, and rms_eps = 0 makes its RMS "
                         f"r = 0; pass rms_eps > 0 (e.g. the preset's) or a nonzero {name}")


def check_outputs(op: str, outputs, *inputs) -> None:
    """Overflow is refused, not returned (spec): on eager calls (concrete inputs, scan on), a non-finite output (map
    logits that overflow, or a 16-bit result above its max, e.g. 65504 in float16) is a ValueError. Under jit there
    is no data to check (see the module docstring)."""
    if not _state["check_finite"] or not all(is_concrete(a) for a in inputs if a is not None):
        return
    for i, y in enumerate(outputs if isinstance(outputs, (tuple, list)) else (outputs,)):
        if y is None or not is_concrete(y) or y.size == 0:
            continue
        v = np.asarray(y)
        finite = np.isfinite(v.astype(np.float32) if v.dtype.itemsize == 2 else v)
        if not bool(finite.all()):
            raise ValueError(f"{op}: output {i} overflows {y.dtype} in {int((~finite).sum())} entries (finite "
                             f"inputs: the map logits alpha * (x_bar @ phi) / r + b, or a value beyond the dtype's "
                             f"max); scale the inputs or parameters down")


def rms_scaled(v, eps: float):
    """(v / t, rho) with sqrt(mean(v^2) + eps) = t * rho over the last axis, without overflow or underflow (spec
    "RMS without overflow"): t is the power of two in (s/2, s], s = max(max|v|, sqrt eps), so v / t is exact and
    in [-2, 2] (2^e above s would overflow to inf for s near the dtype's max). t is piecewise constant: it enters
    under stop_gradient, and the gradient is that of the plain formula."""
    root = float(np.sqrt(np.float64(eps)))
    s = jnp.maximum(jnp.max(jnp.abs(v), axis=-1, keepdims=True, initial=0.0), jnp.asarray(root, v.dtype))
    _, e = jnp.frexp(jax.lax.stop_gradient(s))
    t = jnp.ldexp(jnp.ones_like(s), e - 1)  # s = f 2^e, f in [1/2, 1): t = 2^(e-1) in (s/2, s]; 1/2 for s = 0
    y = v / t
    rho = jnp.sqrt(jnp.mean(y * y, axis=-1, keepdims=True) + jnp.square(jnp.asarray(root, v.dtype) / t))
    return y, rho
