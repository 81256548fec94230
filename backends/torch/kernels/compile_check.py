"""Compile every torch-triton kernel for an NVIDIA target without a GPU and report its resource use.

    python -m mhc_backends.torch.kernels.compile_check [--arch 90] [--n 1 4 16] [--dtypes fp32 bf16] [--strict]

Triton compiles to a cubin with the ptxas it bundles, so on a CPU-only machine this catches what the interpreter
cannot: code that does not lower (layouts, tl.dot shapes, dtypes), and launch configurations from `config.choose`
that would not fit the device: shared memory above the per-block limit (a launch error) or register spills to
local memory (slow). It is static: it says nothing about speed. Each kernel is compiled with the block sizes the
heuristic picks for a large GPU problem (16k tokens, C = 2560). It needs compiled-mode kernels, so under
TRITON_INTERPRET=1 it re-runs itself with TRITON_INTERPRET=0.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import tempfile

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from . import config as cfg
from ._common import interpret_mode
from .mhc_coeffs import _coeffs_bwd_kernel, _coeffs_dphi_kernel, _coeffs_fwd_kernel, _tile_dims
from .mhc_post_res import _post_res_bwd_kernel, _post_res_fwd_kernel
from .mhc_pre import _pre_bwd_kernel, _pre_fwd_kernel
from .sinkhorn import _sinkhorn_bwd_kernel, _sinkhorn_fwd_kernel

SHARED_LIMIT = {90: 232448, 80: 166912, 100: 232448}  # max dynamic shared memory per block (bytes)
TOKENS, C = 16384, 2560
FLOATS = {"root_eps_hi", "root_eps_lo", "pre_eps_hi", "pre_eps_lo", "post_scale_hi", "post_scale_lo", "log_eps_hi",
          "log_eps_lo", "log_eps"}
INTS = {"N", "D", "C", "t_max", "seg", "tokens_per_split"}


def _signature(fn, pointer_types: dict[str, str], constexprs: dict) -> dict[str, str]:
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in INTS:
            sig[name] = "i32"
        elif name in FLOATS:
            sig[name] = "fp32"
        else:
            sig[name] = pointer_types.get(name, pointer_types["*"])
    return sig


def _resources(cubin: bytes) -> dict[str, int]:
    tool = os.path.join(os.path.dirname(importlib.import_module("triton.backends.nvidia").__file__), "bin",
                        "cuobjdump")
    with tempfile.NamedTemporaryFile("wb", suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True).stdout
    found = {k: re.search(rf"{k}:(\d+)", out) for k in ("REG", "STACK", "LOCAL")}
    return {k.lower(): int(m.group(1)) if m else -1 for k, m in found.items()}


def cases(n: int, dtype: str):
    """(name, kernel, pointer types, constexprs, conf) of every kernel launch for stream count n, activation dtype."""
    act = {"fp32": "*fp32", "bf16": "*bf16"}[dtype]
    acc = tl.float32
    NP = triton.next_power_of_2(n)
    RP, _ = _tile_dims(n)
    sk = cfg.choose("sinkhorn", n=n, C=1, tokens=TOKENS)
    co = cfg.choose("mhc_coeffs", n=n, C=C, tokens=TOKENS)
    pr = cfg.choose("mhc_pre", n=n, C=C, tokens=TOKENS)
    po = cfg.choose("mhc_post_res", n=n, C=C, tokens=TOKENS)
    f32 = "*fp32"
    for eps in (False, True):
        yield (f"sinkhorn_fwd eps={eps}", _sinkhorn_fwd_kernel, {"*": act},
               dict(n=n, NP=NP, HAS_EPS=eps, ACC=acc, BLOCK_T=sk.block_t), sk)
        yield (f"sinkhorn_bwd eps={eps}", _sinkhorn_bwd_kernel, {"*": act},
               dict(n=n, NP=NP, HAS_EPS=eps, ACC=acc, BLOCK_T=sk.block_t), sk)
    maps = {k: f32 for k in ("HPRE_ptr", "HPOST_ptr", "HRES_ptr", "M_ptr", "R_ptr", "GPRE_ptr", "GPOST_ptr",
                             "GRES_ptr", "DZ_ptr", "DPHI_PART_ptr")}
    dot = 1 if dtype == "bf16" else 0
    for phi in ((act, f32) if dtype == "bf16" else (act,)):
        mode = 2 if phi != act else dot
        types = {"*": act, **maps, "PHI_ptr": phi, "ALPHA_ptr": phi, "B_ptr": phi}
        for col_major in (False, True):
            yield (f"coeffs_fwd phi={phi} col_major={col_major}", _coeffs_fwd_kernel, types,
                   dict(n=n, NP=NP, RP=RP, COL_MAJOR=col_major, HAS_EPS=True, ACC=acc, DOT=mode, WIDEN=False,
                        BLOCK_T=co.block_t, BLOCK_K=co.block_k), co)
        yield (f"coeffs_bwd phi={phi}", _coeffs_bwd_kernel, types,
               dict(n=n, NP=NP, RP=RP, COL_MAJOR=False, HAS_EPS=True, ACC=acc, BLOCK_T=co.block_t,
                    BLOCK_K=co.block_k), co)
        yield (f"coeffs_dphi phi={phi}", _coeffs_dphi_kernel, types,
               dict(n=n, NP=NP, RP=RP, ACC=acc, BLOCK_T=co.dphi_block_t, BLOCK_K=co.dphi_block_k), co)
    maps = {"*": act, "H_ptr": f32, "DH_ptr": f32, "HP_ptr": f32, "HR_ptr": f32, "DHP_ptr": f32, "DHR_ptr": f32}
    yield ("pre_fwd", _pre_fwd_kernel, maps, dict(n=n, NP=NP, ACC=acc, BLOCK_T=pr.block_t, BLOCK_C=pr.block_c), pr)
    yield ("pre_bwd", _pre_bwd_kernel, maps, dict(n=n, NP=NP, ACC=acc, BLOCK_T=pr.block_t, BLOCK_C=pr.block_c), pr)
    yield ("post_res_fwd", _post_res_fwd_kernel, maps,
           dict(n=n, NP=NP, ACC=acc, BLOCK_T=po.block_t, BLOCK_C=po.block_c), po)
    yield ("post_res_bwd", _post_res_bwd_kernel, maps,
           dict(n=n, NP=NP, ACC=acc, BLOCK_T=po.block_t, BLOCK_C=po.block_c), po)


def check(ns=(1, 4, 16), dtypes=("fp32", "bf16"), arch: int = 90, verbose: bool = True) -> list[dict]:
    """Compile all cases; returns one record per kernel with `ok`, `error`, `shared`, `reg`, `stack`."""
    target = GPUTarget("cuda", arch, 32)
    records = []
    for n in ns:
        for dtype in dtypes:
            for name, fn, types, constexprs, conf in cases(n, dtype):
                rec = {"kernel": f"{name} n={n} {dtype}", "ok": False, "error": ""}
                try:
                    src = ASTSource(fn=fn, signature=_signature(fn, types, constexprs),
                                    constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()})
                    k = triton.compile(src, target=target,
                                       options={"num_warps": conf.num_warps, "num_stages": conf.num_stages})
                    rec.update(_resources(k.asm["cubin"]), shared=int(k.metadata.shared))
                    rec["ok"] = rec["shared"] <= SHARED_LIMIT.get(arch, 232448)
                    if not rec["ok"]:
                        rec["error"] = f"shared memory {rec['shared']} B > limit {SHARED_LIMIT.get(arch)} B"
                except Exception as e:  # a lowering / ptxas failure is the finding
                    rec["error"] = f"{type(e).__name__}: {e}"[:500]
                records.append(rec)
                if verbose:
                    res = (f"reg {rec.get('reg')} stack {rec.get('stack')} B shared {rec.get('shared')} B"
                           if "reg" in rec else "")
                    print(f"{'ok  ' if rec['ok'] else 'FAIL'} {rec['kernel']:<48} {res} {rec['error']}", flush=True)
    return records


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", type=int, default=90, help="compute capability x10 (90 = H100)")
    p.add_argument("--n", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--strict", action="store_true", help="also fail on register spills (stack > 0)")
    args = p.parse_args(argv)
    if interpret_mode():  # the kernels above are interpreter objects: start over in compiled mode
        env = {**os.environ, "TRITON_INTERPRET": "0"}
        argv = sys.argv[1:] if argv is None else list(argv)
        return subprocess.run([sys.executable, "-m", "mhc_backends.torch.kernels.compile_check", *argv],
                              env=env).returncode
    records = check(args.n, args.dtypes, args.arch)
    bad = [r for r in records if not r["ok"] or (args.strict and r.get("stack", 0) > 0)]
    print(f"{len(records) - len(bad)} of {len(records)} kernels ok for sm_{args.arch}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
