"""Helpers shared by the kernel files: run mode, compute dtype, padding, the launch parameters of pallas_call."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

from .config import KernelConfig, choose

BACKWARDS = ("pallas", "reference")


def default_interpret() -> bool:
    """Interpret (run the kernel body as XLA ops) on CPU; compile on GPU / TPU."""
    return jax.default_backend() == "cpu"


def resolve(interpret: bool | None, backward: str, op: str) -> bool:
    """The run mode of one call; checks `backward`."""
    if backward not in BACKWARDS:
        raise ValueError(f"{op}: backward must be one of {list(BACKWARDS)}, got {backward!r}")
    if interpret is not None and not isinstance(interpret, bool):
        raise TypeError(f"{op}: interpret must be None or a bool, got {type(interpret).__name__}")
    return default_interpret() if interpret is None else interpret


def compute_dtype(dtype) -> jnp.dtype:
    """float64 math for float64 inputs, float32 for everything else (16-bit inputs are widened on load)."""
    return jnp.dtype(jnp.float64) if jnp.dtype(dtype) == jnp.float64 else jnp.dtype(jnp.float32)


def pad_to(a: jax.Array, axis: int, size: int, value: float = 0.0) -> jax.Array:
    """`a` padded with `value` at the end of `axis` to `size` (no copy when it already has that size)."""
    extra = size - a.shape[axis]
    if extra == 0:
        return a
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, extra)
    return jnp.pad(a, widths, constant_values=value)


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def stream_conf(op: str, x, interpret: bool) -> tuple[KernelConfig, dict]:
    """The block config of the token-parallel op `op` (mhc_pre, mhc_post_res) for x (..., n, C), and the padded
    token and channel counts {Np, Cp} (multiples of its block_t and block_c)."""
    n, C = x.shape[-2:]
    N = math.prod(x.shape[:-2])
    conf = choose(op, n=n, C=C, tokens=N, interpret=interpret)
    return conf, dict(Np=round_up(max(N, 1), conf.block_t), Cp=round_up(max(C, 1), conf.block_c))


def compiler_params(conf: KernelConfig, interpret: bool):
    """Triton launch parameters (they select pallas_call's Triton lowering) when compiled for a GPU; none when
    interpreted or on TPU (Mosaic TPU lowering, untested). Compiled on a CPU-only host this still picks Triton,
    so that `jax.jit(...).trace(...).lower(lowering_platforms=("cuda",))` checks the GPU lowering without a GPU."""
    if interpret or jax.default_backend() == "tpu":
        return None
    return pl_triton.CompilerParams(num_warps=conf.num_warps, num_stages=conf.num_stages)


def scalar_spec(a: jax.Array):
    """BlockSpec of a small 1-D array of runtime scalars (options), the whole array in every program."""
    return pl.BlockSpec(a.shape, lambda *_: (0,) * a.ndim)


def static_part(conf: KernelConfig) -> KernelConfig:
    """The config without its runtime values (the Sinkhorn segment is passed as a scalar): the compile-cache key."""
    return dataclasses.replace(conf, sinkhorn_seg=0)
