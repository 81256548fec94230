"""Shared helpers of the reference: compute dtypes, input validation, a few primitives.

Validation lives at the public edge: every op calls `check_array` on each argument and `check_n` on the stream axis,
so a bad call fails with the argument's name, the expected and the received value.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

from mhc_spec.table import load

SPEC = load()

DTYPES: dict[str, np.dtype] = {
    "float64": np.dtype(np.float64),
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}


def compute_dtype_of(compute_dtype: Any) -> np.dtype:
    """Resolve `compute_dtype` (a name or a NumPy dtype) to one of the supported float dtypes."""
    if isinstance(compute_dtype, str):
        if compute_dtype not in DTYPES:
            raise ValueError(f"compute_dtype must be one of {list(DTYPES)}, got {compute_dtype!r}")
        return DTYPES[compute_dtype]
    try:
        dt = np.dtype(compute_dtype)
    except TypeError:
        raise TypeError(f"compute_dtype must be a dtype name {list(DTYPES)}, got {compute_dtype!r}") from None
    if dt not in DTYPES.values():
        raise ValueError(f"compute_dtype must be one of {list(DTYPES)}, got {dt}")
    return dt


def dtype_name(dt: np.dtype) -> str:
    for name, d in DTYPES.items():
        if d == dt:
            return name
    raise ValueError(f"unsupported dtype {dt}")


def check_array(name: str, value: Any, ndim_min: int, op: str, allow_nonfinite: bool = False) -> np.ndarray:
    """A real floating array of at least `ndim_min` dims, with no NaN/Inf, or a TypeError/ValueError naming it."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(value).__name__}")
    if value.dtype not in DTYPES.values():
        raise TypeError(f"{op}: {name} must have a float dtype {list(DTYPES)}, got {value.dtype}")
    if value.ndim < ndim_min:
        raise ValueError(f"{op}: {name} must have at least {ndim_min} dims, got shape {value.shape}")
    if not allow_nonfinite and not np.all(np.isfinite(value.astype(np.float64))):
        bad = int(np.sum(~np.isfinite(value.astype(np.float64))))
        raise ValueError(f"{op}: {name} must be finite, got {bad} NaN/Inf entries")
    return value


def check_shape(name: str, value: np.ndarray, expected: tuple[int, ...], op: str) -> None:
    if tuple(value.shape) != tuple(expected):
        raise ValueError(f"{op}: {name} must have shape {tuple(expected)}, got {tuple(value.shape)}")


def check_cotangent(name: str, value: Any, expected: tuple[int, ...], op: str) -> np.ndarray:
    """A cotangent: a finite float array of exactly the shape of the output it belongs to."""
    check_array(name, value, 0, op)
    check_shape(name, value, expected, op)
    return value


def check_map_cotangents(op: str, x_shape: tuple[int, ...], g_h_pre, g_h_post, g_h_res) -> None:
    """Cotangents of (H_pre (..., n), H_post (..., n), H_res (..., n, n)) for x (..., n, C); None means zero."""
    lead, n = tuple(x_shape[:-2]), x_shape[-2]
    for name, g, shape in (("g_h_pre", g_h_pre, lead + (n,)), ("g_h_post", g_h_post, lead + (n,)),
                           ("g_h_res", g_h_res, lead + (n, n))):
        if g is not None:
            check_cotangent(name, g, shape, op)


def check_n(name: str, got: int, n: int, op: str, what: str = "streams") -> None:
    if got != n:
        raise ValueError(f"{op}: {name} has {got} {what}, expected n = {n} (from x)")


def check_int(name: str, value: Any, op: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{op}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return int(value)


def check_float(name: str, value: Any, op: str, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{op}: {name} must be a real number, got {type(value).__name__} {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"{op}: {name} must be finite, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return float(value)


def options(op: str, preset: str | None, given: dict[str, Any]) -> dict[str, Any]:
    """Resolve an op's options: spec defaults < preset < explicitly given values (None = not given)."""
    explicit = {k: v for k, v in given.items() if v is not None}
    return SPEC.op_options(op, preset or "paper", **explicit)


def cast(dt: np.dtype, *arrays: np.ndarray) -> list[np.ndarray]:
    return [np.asarray(a).astype(dt) for a in arrays]


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b in a's dtype; 16-bit types accumulate in float32 and round once, as GPU matmuls do."""
    dt = a.dtype
    if dt.itemsize >= 4:
        return np.matmul(a, b.astype(dt))
    return np.matmul(a.astype(np.float32), b.astype(np.float32)).astype(dt)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function, stable for large |z| (no overflow in exp)."""
    e = np.exp(-np.abs(z))
    one = np.ones_like(z)
    return np.where(z >= 0, one / (one + e), e / (one + e))


def rms_scaled(xbar: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, t, rho): sqrt(mean(x_bar^2) + eps) = t * rho over the last axis, y = x_bar / t, without overflow.

    t is the power of two in (s/2, s], s = max(max|x_bar|, sqrt eps) per row (finite even for s near the dtype's
    max), so y = x_bar / t is exact and in [-2, 2] and rho = sqrt(mean(y^2) + (sqrt(eps) / t)^2) cannot overflow:
    x of 1e200 in float64 (1e20 in float32) gives the right r, where x_bar^2 would be inf (issue 9 Sec. 3).
    Trailing singletons t, rho."""
    dt = xbar.dtype
    root_eps = dt.type(np.sqrt(np.float64(eps)))  # the compute dtype's sqrt(eps) (0 where eps rounds to 0)
    s = np.maximum(np.max(np.abs(xbar), axis=-1, keepdims=True, initial=0), root_eps)
    t = np.ldexp(np.ones_like(s, dtype=np.float64), np.frexp(s.astype(np.float64))[1] - 1).astype(dt)  # 1/2 at 0
    y = xbar / t
    return y, t, np.sqrt(np.mean(y * y, axis=-1, keepdims=True) + np.square(root_eps / t))


def rms(xbar: np.ndarray, eps: float) -> np.ndarray:
    """sqrt(mean(x_bar^2) + eps) over the last axis, kept as a trailing singleton (scale-safe, `rms_scaled`)."""
    _, t, rho = rms_scaled(xbar, eps)
    return t * rho


def projection(x: np.ndarray, phi: np.ndarray, rms_eps: float, op: str = "projection"
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """m = (x_bar @ phi) / r with r = sqrt(mean(x_bar^2) + rms_eps), P Eqs. 14-16 before scale and bias.

    Returns (m, x_bar, r); x (..., n, C) is flattened stream-major: x_bar[k*C + c] = x[k, c].
    """
    x_bar = x.reshape(x.shape[:-2] + (x.shape[-2] * x.shape[-1],))  # (..., n*C)
    y, t, rho = rms_scaled(x_bar, rms_eps)  # r = t * rho, (..., 1)
    r = t * rho
    check_nonzero_rms(r, rms_eps, op, "token whose n*C")
    m = matmul(y, phi) / rho  # (..., m) = (x_bar @ phi) / r: t is a power of two, so y = x_bar / t is exact
    return m, x_bar, r


def check_nonzero_rms(r: np.ndarray, rms_eps: float, op: str, what: str) -> None:
    """r = 0 (an all-zero token or stream with rms_eps = 0, or an rms_eps that rounds to 0 in the compute dtype)."""
    if np.any(r == 0):
        shown = f"rms_eps = {rms_eps!r} (sqrt 0 in {r.dtype})" if rms_eps else "rms_eps = 0"
        raise ValueError(f"{op}: x has a {what} entries are all zero, and {shown} makes its RMS r = 0; "
                         f"pass rms_eps > 0 (e.g. the preset's) or a nonzero x")


def projection_vjp(g_m, m, x_bar, r, phi, x_shape):
    """VJP of `projection`: returns (dx (..., n, C), dphi (n*C, m)).

    m = p / r, p = x_bar @ phi:  dp = g / r,  dr = -sum(g * m) / r,  dr/dx_bar = x_bar / (D r),  D = n*C.
    """
    D = x_bar.shape[-1]
    dp = g_m / r  # (..., m)
    dr = -np.sum(g_m * m, axis=-1, keepdims=True) / r  # (..., 1)
    dx_bar = matmul(dp, phi.T) + dr * (x_bar / (D * r))  # (..., n*C); x_bar / r first: no overflow at large x
    dphi = matmul(x_bar.reshape(-1, D).T, dp.reshape(-1, dp.shape[-1]))  # (n*C, m)
    return dx_bar.reshape(x_shape), dphi


def check_stream_state(name: str, x: Any, op: str) -> tuple[np.ndarray, int, int]:
    """x (..., n, C): returns (x, n, C)."""
    check_array(name, x, 2, op)
    if x.shape[-2] < 1 or x.shape[-1] < 1:
        raise ValueError(f"{op}: {name} must be (..., n, C) with n >= 1 and C >= 1, got shape {x.shape}")
    return x, x.shape[-2], x.shape[-1]


def sum_to_shape(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a broadcast gradient over the leading axes it gained."""
    extra = g.ndim - len(shape)
    return np.sum(g, axis=tuple(range(extra))) if extra > 0 else g
