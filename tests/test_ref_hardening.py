"""Named errors instead of raw ones (issue 9 Sec. 3): the backend registry's `module:object` form and the reference's
`mhc_ref.model.Stack` configuration."""

from __future__ import annotations

import numpy as np
import pytest

from mhc_backends import load_backend
from mhc_ref.model import Stack
from mhc_ref.sublayer import ProbeSublayer


@pytest.mark.parametrize("name, exc, words", [
    (":obj", ValueError, "'package.module:object' with both parts non-empty"),
    ("math:", ValueError, "both parts non-empty"),
    ("math:a..b", ValueError, "both parts non-empty"),
    ("math:pi", TypeError, "must name a mhc_backends.Backend or a zero-argument callable returning one, got float"),
    ("os:getcwd", TypeError, "must be a mhc_backends.Backend or return one"),
    ("no_such_module_xyz:obj", ValueError, "cannot import module 'no_such_module_xyz'"),
    ("math:no_such_attr", ValueError, "has no attribute 'no_such_attr'"),
])
def test_registry_module_object_errors_are_named(name, exc, words):
    with pytest.raises(exc) as info:
        load_backend(name)
    assert words in str(info.value) and repr(name) in str(info.value)


SUB = ProbeSublayer(np.eye(3))


@pytest.mark.parametrize("kw, exc, words", [
    (dict(sublayers=[object()], params=[{}]), TypeError, "sublayers[0] must have forward(u)"),
    (dict(sublayers=SUB, params=[{}]), TypeError, "sublayers must be a list"),
    (dict(sublayers=[SUB], params={"phi": 1}), TypeError, "params must be a list of dicts"),
    (dict(sublayers=[SUB], params=[3]), TypeError, "params[0] must be a dict with keys ['phi', 'alpha', 'b']"),
    (dict(sublayers=[SUB], params=[{"phi": 1}]), ValueError, "params[0] misses ['alpha', 'b'] for mode='mhc'"),
    (dict(sublayers=[SUB], params=[{}], mode="hc"), ValueError, "params[0] misses ['theta_pre'"),
    (dict(sublayers=[SUB], preset="nope", mode="fixed"), ValueError, "Stack: preset must be one of"),
    (dict(sublayers=[SUB], params=[], mode="mhc"), ValueError, "one params dict per sublayer"),
])
def test_stack_configuration_errors_are_named(kw, exc, words):
    with pytest.raises(exc) as info:
        Stack(n=4, **kw)
    assert words in str(info.value) and str(info.value).startswith("Stack: ")


def test_stack_fixed_and_residual_need_no_params(rng):
    h = rng.standard_normal((2, 3))
    for mode in ("fixed", "residual"):
        y, _ = Stack(n=4, sublayers=[SUB, SUB], mode=mode).forward(h)
        assert y.shape == h.shape and np.all(np.isfinite(y))


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16", "float16"])
@pytest.mark.parametrize("preset", ["paper", "deepseek_v4"])
def test_sinkhorn_keeps_the_compute_dtype(dtype, preset, rng):
    """The eps branch of the log-domain step computes in the compute dtype (a Python-float log eps once promoted
    bfloat16 to float32)."""
    import mhc_ref
    from mhc_ref._common import DTYPES

    L = rng.standard_normal((2, 3, 3)).astype(DTYPES[dtype])
    assert mhc_ref.sinkhorn(L, preset=preset, compute_dtype=dtype).dtype == DTYPES[dtype]
    assert mhc_ref.sinkhorn_vjp(L, L, preset=preset, compute_dtype=dtype)["logits"].dtype == DTYPES[dtype]
