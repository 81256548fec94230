"""Input validation at the public edge of the torch ops: cheap, compile-friendly, with messages that name the tensor,
the expected and the received shape / dtype / device.

Rules shared by every op:
- every array argument is a floating `torch.Tensor` (float64, float32, bfloat16, float16) on the device of `x`;
- parameters and maps (phi, alpha, b, h_pre, ...) have x's dtype, or float32 when x is 16-bit (mixed precision:
  fp32 parameters and fp32 maps with bf16/fp16 activations, as DeepSeek keeps them); anything else is a TypeError
  (e.g. float64 x with float32 phi, or bfloat16 phi with float32 x);
- shapes follow the spec table; the stream count n comes from x and every other argument must agree with it;
- NaN/Inf in any input is a ValueError. The scan is one pass over the data (`aminmax`: a NaN propagates into both
  extremes, an Inf is one of them; no full-size temporary) and one host read of the verdict. Where it runs
  (`set_check_finite(mode)` or the environment variable `MHC_TORCH_CHECK_FINITE` = auto | 1 | 0):
    "auto" (default)  the functional ops (the backend contract, the public edge) scan every input on any device;
                      the nn.Modules (the training hot path, `hot=True`) scan on the CPU, where the verdict costs no
                      sync, and not on CUDA, where reading it would stall the stream once per layer: there they
                      behave like torch's own modules (a NaN propagates). Switch to True to hunt a NaN on a GPU.
    True              every scan everywhere (a host sync per checked tensor on CUDA);
    False             no scan (nor the other data-dependent checks: zero tokens, float16 overflow).
  Every scan is skipped while `torch.compile` traces (`torch.compiler.is_compiling()`);
- strides do not matter to the eager ops (they `reshape`, which copies when it must); `check_contiguous` is for
  backends whose kernels index raw pointers (torch-triton) and rejects non-contiguous inputs instead of crashing.
"""

from __future__ import annotations

import math
import os

import torch

from mhc_spec.table import load

from .. import _contract

OPTIONS = load().options  # option types and ranges (t_max's max, the epsilons' min) come from the spec table

FLOAT_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
LOW_PRECISION = (torch.bfloat16, torch.float16)

MODES = (True, False, "auto")


def _mode_from_env(value: str | None):
    value = (value or "auto").strip().lower()
    return False if value in ("0", "false", "off", "no", "") else "auto" if value == "auto" else True


_state = {"check_finite": _mode_from_env(os.environ.get("MHC_TORCH_CHECK_FINITE"))}


def set_check_finite(mode) -> bool | str:
    """Set where the NaN/Inf scan runs: True (everywhere), False (nowhere) or "auto" (the default: see the module
    docstring); returns the previous setting."""
    if mode not in MODES or (mode != "auto" and not isinstance(mode, bool)):
        raise ValueError(f"set_check_finite: mode must be True, False or 'auto', got {mode!r}")
    previous = _state["check_finite"]
    _state["check_finite"] = mode
    return previous


def check_finite_enabled(t: torch.Tensor | None = None, hot: bool = False) -> bool:
    """Whether the data-dependent checks run for tensor t; `hot`: a module's per-layer check (see "auto")."""
    mode = _state["check_finite"]
    if not mode or torch.compiler.is_compiling():
        return False
    return mode is True or not hot or t is None or t.device.type == "cpu"


def finite_flag(t: torch.Tensor) -> torch.Tensor:
    """0-d bool tensor: every entry of t is finite. One pass (aminmax), no full-size temporary, no host sync."""
    lo, hi = torch.aminmax(t.detach())
    return torch.isfinite(lo) & torch.isfinite(hi)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the coefficient path and the stream mixing run in: float32 for 16-bit activations."""
    return torch.float32 if dtype in LOW_PRECISION else dtype


def check_tensor(name: str, t, op: str, ndim_min: int = 1, scan: bool = True) -> torch.Tensor:
    """A floating tensor with at least `ndim_min` dims and (if `scan`) no NaN/Inf."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} must have a float dtype (float64, float32, bfloat16, float16), got {t.dtype}")
    if t.dim() < ndim_min:
        raise ValueError(f"{op}: {name} must have at least {ndim_min} dims, got shape {tuple(t.shape)}")
    if scan:
        check_finite(name, t, op)
    return t


def check_finite(name: str, t: torch.Tensor, op: str, hot: bool = False) -> None:
    """No NaN/Inf in t, unless the scan is off for t (see the module docstring), torch.compile is tracing, or t has
    no data (meta device). The count in the message is computed only once the one-pass scan has failed."""
    if not check_finite_enabled(t, hot) or t.numel() == 0 or t.device.type == "meta":
        return
    t = t.detach()  # the scan builds no autograd graph
    if not bool(finite_flag(t)):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{op}: {name} must be finite, got {bad} NaN/Inf entries "
                         f"(switch the scan off with mhc_backends.torch.set_check_finite(False))")


def check_stream_state(name: str, x, op: str) -> tuple[int, int]:
    """x (..., n, C) with n, C >= 1 (empty leading dims are fine: the result is empty too): returns (n, C)."""
    check_tensor(name, x, op, ndim_min=2)
    return _contract.stream_dims(name, x, op)


def check_device(name: str, t: torch.Tensor, ref: torch.Tensor, op: str, ref_name: str = "x") -> None:
    if t.device != ref.device:
        raise ValueError(f"{op}: {name} is on device {t.device}, expected {ref.device} (the device of {ref_name})")


def check_dtype(name: str, t: torch.Tensor, x: torch.Tensor, op: str) -> None:
    """t has x's dtype, or float32 when x is 16-bit."""
    allowed = (x.dtype, torch.float32) if x.dtype in LOW_PRECISION else (x.dtype,)
    if t.dtype not in allowed:
        want = " or ".join(str(d) for d in allowed)
        raise TypeError(f"{op}: {name} must have dtype {want} to match x ({x.dtype}), got {t.dtype}")


check_shape = _contract.check_shape  # the shape and choice rules (and their messages) are framework-free
check_choice = _contract.check_choice


def check_like_x(name: str, t, x: torch.Tensor, expected: tuple[int, ...], op: str, why: str = "") -> None:
    """The full check of a companion tensor of x: type, device, dtype, shape, then finiteness."""
    check_tensor(name, t, op, scan=False)
    check_device(name, t, x, op)
    check_dtype(name, t, x, op)
    check_shape(name, t, expected, op, why)
    check_finite(name, t, op)


def check_result(name: str, t: torch.Tensor, op: str, why: str) -> None:
    """A result computed from finite inputs has no NaN/Inf (part of the opt-out scan); else a ValueError saying why."""
    if not check_finite_enabled(t) or t.numel() == 0 or t.device.type == "meta":
        return
    if not bool(finite_flag(t)):
        bad = int((~torch.isfinite(t.detach())).sum())
        raise ValueError(f"{op}: {name} has {bad} NaN/Inf entries although every input is finite: {why}")


FLOAT16_MAX = float(torch.finfo(torch.float16).max)


def fits_float16(t: torch.Tensor, what: str) -> torch.Tensor:
    """t (float32, about to be cast to float16) fits float16, else a ValueError: a finite value above 65504 would
    become inf silently. Part of the opt-out scan."""
    if check_finite_enabled(t) and t.numel() and t.device.type != "meta":
        big = float(t.detach().abs().amax())
        if big > FLOAT16_MAX:
            raise ValueError(f"{what} overflows float16: max |value| = {big:.4g} > {FLOAT16_MAX:g}; use bfloat16 or "
                             f"float32 activations, or smaller inputs")
    return t


def to_compute(x: torch.Tensor, what: str) -> torch.Tensor:
    """x in its compute dtype. For a float16 x that needs a gradient, the float32 gradient is checked to fit float16
    before autograd casts it back (e.g. 1/sqrt(rms_eps) = 1e10 at an all-zero token under the paper preset)."""
    xc = x.to(compute_dtype(x.dtype))
    if x.dtype == torch.float16 and xc.requires_grad and not torch.compiler.is_compiling():
        xc.register_hook(lambda g: fits_float16(g, f"the gradient w.r.t. {what}"))
    return xc


def check_contiguous(name: str, t: torch.Tensor, op: str) -> None:
    if not t.is_contiguous():
        raise ValueError(f"{op}: {name} must be contiguous (row-major), got shape {tuple(t.shape)} with strides "
                         f"{t.stride()}; call .contiguous() first")


def check_int(name: str, value, op: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{op}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return value


def check_float(name: str, value, op: str, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{op}: {name} must be a float, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{op}: {name} must be finite, got {value!r}")
    if not value >= minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return float(value)


def check_option(name: str, value, op: str, table_name: str | None = None):
    """An option value against its spec-table entry: type, finite, `min` / `max` (e.g. t_max <= the table's max)."""
    return OPTIONS[table_name or name].check(value, where=op)


def rms_floor(eps: float, dtype: torch.dtype) -> float:
    """sqrt(eps) as the compute dtype holds it, the least RMS `rms` can return: 0 for eps = 0, and for a positive
    eps whose square root is below the dtype's range (e.g. 1e-100 in float32)."""
    return float(torch.tensor(math.sqrt(eps), dtype=compute_dtype(dtype)))


def check_nonzero_tokens(x: torch.Tensor, rms_eps: float, op: str, name: str = "x", per_stream: bool = False,
                         hot: bool = False) -> None:
    """With rms_eps = 0 (or so small that sqrt(rms_eps) is 0 in the compute dtype) an all-zero token (or stream, for
    the per-stream RMSNorm of hc_coeffs) has RMS r = 0 and its maps are 0/0; refuse it (part of the opt-out scan)."""
    if not check_finite_enabled(x, hot) or rms_floor(rms_eps, x.dtype) != 0 or x.numel() == 0 \
            or x.device.type == "meta":
        return
    what = "stream whose C" if per_stream else "token whose n*C"
    if bool(((x if per_stream else x.flatten(-2)) == 0).all(dim=-1).any()):
        shown = f"rms_eps = {rms_eps!r} (sqrt 0 in {compute_dtype(x.dtype)})" if rms_eps else "rms_eps = 0"
        raise ValueError(f"{op}: {name} has a {what} entries are all zero, and {shown} makes its RMS r = 0; pass "
                         f"rms_eps > 0 (e.g. the preset's) or a nonzero {name}")


def rms(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, t, rho) with y = x / t and sqrt(mean(x^2, -1) + eps) = t * rho ((..., 1) each), without overflow.

    t is the power of two in (s/2, s], s = max(max|x|, sqrt eps) per row (no gradient; finite even for s near the
    dtype's max), so y = x / t is exact and in [-2, 2], and rho = sqrt(mean(y^2) + (sqrt(eps) / t)^2) cannot
    overflow: x of 1e20 in float32 (1e30 in bfloat16 computed in float32, 1e200 in float64) gives the right r
    instead of inf (issue 9 Sec. 3)."""
    t = rms_scale(x, eps)
    y = x / t
    return y, t, torch.sqrt(torch.mean(y * y, dim=-1, keepdim=True) + (math.sqrt(eps) / t) ** 2)


def rms_scale(x: torch.Tensor, eps: float, scan: tuple[str, str] | None = None) -> torch.Tensor:
    """t of `rms`: the power of two in (s/2, s], s = max(max|x|, sqrt eps) per row, (..., 1), no gradient. amax and
    amin (vectorised row reductions; `aminmax` along a dim is ~70x slower on CPU), no full-size |x| temporary.

    `scan` = (name, op): the per-row extremes double as a module's NaN/Inf scan of x (`check_finite` with hot=True;
    a NaN propagates into both, an Inf is one of them), so that scan costs no pass of its own."""
    x = x.detach()
    hi, lo = x.amax(dim=-1, keepdim=True), x.amin(dim=-1, keepdim=True)
    if scan is not None and check_finite_enabled(x, hot=True) and x.numel() and x.device.type != "meta" \
            and not bool(torch.isfinite(hi).all() & torch.isfinite(lo).all()):
        check_finite(scan[0], x, scan[1], hot=True)  # counts the entries and raises
    s = torch.clamp(torch.maximum(hi, -lo), min=math.sqrt(eps))
    return torch.ldexp(torch.ones_like(s), torch.frexp(s).exponent - 1)  # s = f 2^e, f in [1/2, 1); 1/2 at s = 0
