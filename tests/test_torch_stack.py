"""The eager torch `mhc_stack`: `recompute_every` changes memory, never values (output bit-identical, gradients equal
up to summation order), and the recompute path really recomputes (fewer saved tensors) while matching the float64
reference. The op's values and gradients without recompute are checked by the conformance suite."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import mhc_ref  # noqa: E402
from mhc_backends.torch import mhc_stack  # noqa: E402
from mhc_spec.table import load  # noqa: E402

SPEC = load()


def make(n, C, L, lead=(2, 3), dtype=torch.float64, seed=0):
    rng = np.random.default_rng(seed)
    width = n * n + 2 * n
    arrays = {"x": rng.standard_normal(lead + (n, C)),
              "phi": rng.standard_normal((L, n * C, width)) / np.sqrt(n * C),
              "alpha": rng.uniform(0.5, 1.5, (L, 3)), "b": 0.5 * rng.standard_normal((L, width)),
              "w_sub": 1.5 * rng.standard_normal((L, C, C)) / np.sqrt(C)}
    return arrays, {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in arrays.items()}


def run(tensors, g, **kw):
    y = mhc_stack(*tensors.values(), **kw)
    grads = torch.autograd.grad(y, list(tensors.values()), g)
    return y.detach(), dict(zip(tensors, grads))


@pytest.mark.parametrize("preset", list(SPEC.presets))
@pytest.mark.parametrize("every", [1, 2, 3, "auto"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_recompute_does_not_change_values(every, dtype, preset):
    n, C, L = 3, 4, 5
    arrays, t = make(n, C, L, dtype=dtype)
    opts = SPEC.op_options("mhc_stack", preset)
    g = torch.randn(t["x"].shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    y0, g0 = run(t, g, **opts)
    y1, g1 = run(t, g, recompute_every=every, **opts)
    assert torch.equal(y0, y1), "recompute changed the forward values"
    tol = 1e-13 if dtype == torch.float64 else 1e-5
    for k in g0:
        scale = max(1.0, float(g0[k].abs().max()))
        assert float((g0[k] - g1[k]).abs().max()) <= tol * scale, k
    if dtype == torch.float64:  # and both equal the float64 reference
        want = mhc_ref.mhc_stack_vjp(*arrays.values(), g.numpy(), preset=preset)
        for k in want:
            assert np.allclose(g1[k].numpy(), want[k], rtol=1e-10, atol=1e-12), k


def _saved_numel(fn):
    """Elements of the tensors autograd keeps for the backward of fn() (distinct storages)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def test_recompute_keeps_less():
    _, t = make(4, 16, 6, lead=(4, 8), dtype=torch.float32)
    plain = _saved_numel(lambda: mhc_stack(*t.values()))
    blocks = _saved_numel(lambda: mhc_stack(*t.values(), recompute_every=3))
    assert blocks < 0.5 * plain, (blocks, plain)


def test_no_recompute_without_autograd():
    _, t = make(2, 3, 3)
    with torch.no_grad():
        assert torch.equal(mhc_stack(*t.values(), recompute_every=2), mhc_stack(*t.values()))


@pytest.mark.parametrize("bad,exc", [(-1, ValueError), (1.5, TypeError), ("every", TypeError)])
def test_recompute_every_rejected(bad, exc):
    _, t = make(2, 3, 2)
    with pytest.raises(exc, match="recompute_every"):
        mhc_stack(*t.values(), recompute_every=bad)
