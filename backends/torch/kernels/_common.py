"""Helpers shared by the kernel files: run mode, compute dtype, the device check of every launcher."""

from __future__ import annotations

import functools
import os
import threading

import torch
import triton.language as tl

from .. import _checks


def interpret_mode() -> bool:
    """True when the kernels run in Triton's interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0", "false", "False")


_INTERPRETER_LOCK = threading.RLock()


def serialised_in_interpreter(launcher):
    """Run a kernel launcher under one process-wide lock when the kernels are interpreted: Triton's interpreter
    patches `triton.language` globally while a kernel runs, so concurrent interpreted launches from several threads
    corrupt each other (3 of 4 callers died). Compiled (CUDA) launches are not serialised."""

    @functools.wraps(launcher)
    def run(*args, **kwargs):
        if not interpret_mode():
            return launcher(*args, **kwargs)
        with _INTERPRETER_LOCK:
            return launcher(*args, **kwargs)

    return run


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 math for float64 inputs, float32 for everything else (16-bit inputs are widened on load)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def tl_dtype(dtype: torch.dtype):
    return {torch.float64: tl.float64, torch.float32: tl.float32}[dtype]


def check_runnable(name: str, t: torch.Tensor, op: str) -> None:
    """Kernels need CUDA tensors, or the interpreter (which runs them on any device's tensors); contiguous memory."""
    if t.device.type != "cuda" and not interpret_mode():
        raise ValueError(f"{op}: {name} is on {t.device}; the torch-triton kernels need CUDA tensors, or "
                         f"TRITON_INTERPRET=1 set before triton is imported to run them on CPU")
    _checks.check_contiguous(name, t, op)
