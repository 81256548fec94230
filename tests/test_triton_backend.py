"""The `torch-triton` backend object: discovery, claims, device string, and gradients through its generic `vjp`."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
K = pytest.importorskip("mhc_backends.torch.kernels")  # before anything imports triton: it sets TRITON_INTERPRET

from mhc_backends import load_backend  # noqa: E402
from mhc_spec.table import load, resolve_shape  # noqa: E402

SPEC = load()


@pytest.fixture(scope="module")
def backend():
    return load_backend("torch-triton")


def test_backend_identity(backend):
    assert backend.name == "torch-triton"
    assert set(backend.capabilities.ops) == {"sinkhorn", "mhc_coeffs", "mhc_pre", "mhc_post_res", "mhc_layer",
                                              "mhc_stack"}
    assert backend.capabilities.grad_ops == backend.capabilities.ops
    assert {"float32", "bfloat16"} <= set(backend.capabilities.dtypes)
    if K.interpret_mode():
        assert backend.device.endswith("(TRITON_INTERPRET=1)")
    assert backend.versions()["triton"]


@pytest.mark.parametrize("op", ["sinkhorn", "mhc_coeffs", "mhc_pre", "mhc_post_res", "mhc_layer", "mhc_stack"])
def test_backend_vjp_matches_numpy_backend(backend, rng, op):
    """Every claimed op and its VJP through the contract, against the reference backend (float32, deepseek_v4)."""
    reference = load_backend("numpy")
    spec = SPEC.op(op)
    options = SPEC.op_options(op, "deepseek_v4", t_max=3) if "t_max" in spec.options else {}
    sizes = {"n": 3, "C": 8, "L": 2}
    lead = (2, 3)
    arrays = [rng.standard_normal(resolve_shape(a, lead, **sizes)) * (0.3 if a.name in ("phi", "w_sub") else 1)
              for a in spec.inputs]
    outs_ref = reference.call(op, [reference.from_numpy(a, "float32") for a in arrays], **options)
    outs_ref = outs_ref if isinstance(outs_ref, tuple) else (outs_ref,)
    cots = [rng.standard_normal(o.shape) for o in outs_ref]

    inputs = [backend.from_numpy(a, "float32") for a in arrays]
    outs = backend.call(op, inputs, **options)
    outs = outs if isinstance(outs, tuple) else (outs,)
    for got, want in zip(outs, outs_ref):
        assert got.dtype == torch.float32
        np.testing.assert_allclose(backend.to_numpy(got), want, rtol=0, atol=1e-4)
    grads = backend.vjp(op, inputs, [backend.from_numpy(c, "float32") for c in cots], **options)
    grads_ref = reference.vjp(op, [reference.from_numpy(a, "float32") for a in arrays],
                              [reference.from_numpy(c, "float32") for c in cots], **options)
    assert set(grads) == set(grads_ref) == set(spec.diff_inputs)
    for name in grads:
        want = grads_ref[name]
        np.testing.assert_allclose(backend.to_numpy(grads[name]), want, rtol=0,
                                   atol=2e-3 * max(1.0, float(np.abs(want).max())), err_msg=f"{op} d{name}")
