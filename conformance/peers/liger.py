"""Adapter for liger-kernel's mHC ops (`liger_kernel.transformers.functional.liger_mhc_coeffs / _pre / _post_res`).

Liger's parameters map one to one onto the spec's: phi (n*C, n^2+2n) with the same column order, b, and the three
alphas as scalars; `tmax`, `rms_eps`, `pre_eps`, `sinkhorn_eps`, `post_mult` are the spec's t_max, rms_eps, pre_eps,
sinkhorn_eps, post_scale. It has no layout switch for H_res. Its Triton kernels run on the CPU under
TRITON_INTERPRET=1 (set here before Triton is imported); float32 needs `allow_fp32=True`.
"""

from __future__ import annotations

import os
from importlib.metadata import version

os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

from mhc_spec.table import load  # noqa: E402

from . import draws  # noqa: E402
from ._torch import autograd_vjp, numpy, tensors  # noqa: E402
from .finder import Subject  # noqa: E402

DISTRIBUTION = "liger-kernel"
SPEC = load()
TOKENS = int(SPEC.conformance["peers"]["tokens"])
# liger's own defaults (liger_mhc_coeffs signature): what a user gets without passing options
DEFAULTS = dict(tmax=20, rms_eps=1e-6, pre_eps=0.0, sinkhorn_eps=1e-6, post_mult=2.0)


def _functional():
    from liger_kernel.transformers import functional

    return functional


def coeffs(x, phi, alpha, b, **kw):
    f = _functional()
    return f.liger_mhc_coeffs(x, phi, b, alpha[0], alpha[1], alpha[2], allow_fp32=True, **{**DEFAULTS, **kw})


def pre(x, h_pre):
    return _functional().liger_mhc_pre(x, h_pre)


def post_res(x, f_out, h_post, h_res):
    return _functional().liger_mhc_post_res(x, f_out, h_post, h_res)


def _subject(op: str, fn, names, dtype: str = "float32") -> Subject:
    def run(inputs):
        with torch.no_grad():
            out = fn(*tensors(inputs, dtype))
        return tuple(numpy(o) for o in (out if isinstance(out, tuple) else (out,)))

    return Subject(f"{DISTRIBUTION} {version(DISTRIBUTION)}", f"liger_mhc_{op.removeprefix('mhc_')}", op, run,
                   lambda rng, scale: draws.draw(op, rng, scale, TOKENS, dtype),
                   lambda inputs, cot: autograd_vjp(fn, names, inputs, cot, dtype), dtype)


def subjects() -> list[Subject]:
    return [
        _subject("mhc_coeffs", coeffs, ("x", "phi", "alpha", "b")),
        _subject("mhc_pre", pre, ("x", "h_pre")),
        _subject("mhc_post_res", post_res, ("x", "f_out", "h_post", "h_res")),
    ]


# -- as a conformance backend: `pytest --pyargs mhc_conformance --mhc-backend mhc_conformance.peers.liger:backend`
def _coeffs_op(x, phi, alpha, b, *, t_max, sinkhorn_eps, pre_eps, post_scale, rms_eps, res_layout):
    if res_layout != "row_major":
        raise NotImplementedError(f"liger-kernel has no H_res layout switch (it reads the logits row-major); "
                                  f"cannot express res_layout={res_layout!r}")
    return coeffs(x, phi, alpha, b, tmax=t_max, sinkhorn_eps=sinkhorn_eps, pre_eps=pre_eps, post_mult=post_scale,
                  rms_eps=rms_eps)


def backend():
    """liger-kernel's three mHC ops under the spec's names and options (float32 through allow_fp32=True)."""
    from mhc_backends.base import Capabilities
    from mhc_backends.torch.backend import TorchBackend

    ops = frozenset({"mhc_coeffs", "mhc_pre", "mhc_post_res"})

    class LigerBackend(TorchBackend):
        name = f"peer:{DISTRIBUTION}"
        op_functions = {"mhc_coeffs": _coeffs_op, "mhc_pre": pre, "mhc_post_res": post_res}
        capabilities = Capabilities(ops=ops, dtypes=frozenset({"float32", "bfloat16", "float16"}), grad_ops=ops,
                                    devices=("cpu", "cuda"))

        def versions(self):
            return {**super().versions(), DISTRIBUTION: version(DISTRIBUTION)}

    return LigerBackend()
