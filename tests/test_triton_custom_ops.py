"""The torch-triton kernels as torch.library custom ops: registration (opcheck) and torch.compile without graph breaks.

Each fused kernel is a custom op `torch.ops.mhc_triton.<op>` with a fake implementation (shapes and dtypes only) and
a registered autograd formula whose backward is itself a custom op. `opcheck` checks the schema, the autograd
registration, the fake implementation against the real one and AOT dispatch with dynamic shapes; the compile test
traces an `MHC(impl="triton")` module with `fullgraph=True` (any graph break is an error) and compares its output
and gradients with the eager-ops module (`impl="eager"`, a different implementation) on the same parameters.
On CPU the kernels run in Triton's interpreter, which is why the shapes are tiny.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
K = pytest.importorskip("mhc_backends.torch.kernels")  # before anything imports triton: it sets TRITON_INTERPRET

from torch import nn  # noqa: E402
from torch.library import opcheck  # noqa: E402

from mhc_backends.torch import MHC  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def leaf(*shape, dtype=torch.float32, scale=1.0, positive=False):
    t = torch.rand(*shape, dtype=dtype, device=DEVICE) if positive else torch.randn(*shape, dtype=dtype, device=DEVICE)
    return (t * scale).requires_grad_(True)


def op_cases(dtype):
    N, n, C = 5, 4, 8  # 5 tokens: not a multiple of any block size
    w = n * n + 2 * n
    return {
        "sinkhorn": (torch.ops.mhc_triton.sinkhorn.default, (leaf(N, n, n, dtype=dtype, scale=3), 5, 1e-6)),
        "mhc_coeffs": (torch.ops.mhc_triton.mhc_coeffs.default,
                       (leaf(N, n, C, dtype=dtype), leaf(n * C, w, dtype=dtype, scale=0.3), leaf(3, dtype=dtype),
                        leaf(w, dtype=dtype), 4, 1e-6, 1e-6, 2.0, 1e-6, True)),
        "mhc_pre": (torch.ops.mhc_triton.mhc_pre.default,
                    (leaf(N, n, C, dtype=dtype), leaf(N, n, dtype=dtype, positive=True))),
        "mhc_post_res": (torch.ops.mhc_triton.mhc_post_res.default,
                         (leaf(N, n, C, dtype=dtype), leaf(N, C, dtype=dtype), leaf(N, n, dtype=dtype, positive=True),
                          leaf(N, n, n, dtype=dtype, positive=True))),
    }


@pytest.mark.parametrize("op", ["sinkhorn", "mhc_coeffs", "mhc_pre", "mhc_post_res"])
def test_custom_op_registration(op):
    torch.manual_seed(0)
    fn, args = op_cases(torch.float32)[op]
    result = opcheck(fn, args)
    assert all(v == "SUCCESS" for v in result.values()), result


@pytest.mark.parametrize("backend, preset", [("aot_eager", "deepseek_v4"), ("inductor", "paper")])
def test_compiled_triton_module_has_no_graph_breaks(backend, preset):
    """fullgraph=True raises on any graph break; values and gradients match the eager-ops module."""
    torch.manual_seed(0)
    C, n = 16, 4
    fused = MHC(nn.Linear(C, C), n=n, dim=C, preset=preset, impl="triton").to(DEVICE)
    eager = MHC(nn.Linear(C, C), n=n, dim=C, preset=preset, impl="eager").to(DEVICE)
    eager.load_state_dict(fused.state_dict())
    torch._dynamo.reset()
    compiled = torch.compile(fused, fullgraph=True, backend=backend)
    x = torch.randn(2, 5, n, C, device=DEVICE)
    cot = torch.randn(2, 5, n, C, device=DEVICE)
    outs = []
    for module in (compiled, eager):
        xi = x.clone().requires_grad_(True)
        y = module(xi)
        grads = torch.autograd.grad(y, [xi, *module.parameters()], cot)
        outs.append((y, *grads))
    for got, want in zip(*outs):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
