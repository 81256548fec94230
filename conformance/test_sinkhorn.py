"""Conformance of `sinkhorn` (P Eq. 9): Sinkhorn-Knopp projection of exp(logits): t_max pairs of (column, row)
normalisations, row last.

The tests are generated from the op's row in the spec table (inputs and shapes, options, tolerance class,
invariants); `mhc_conformance.generic` says what each one checks.
"""

import numpy as np

from mhc_conformance import generic
from mhc_conformance.tolerance import eps

OP = "sinkhorn"

test_values = generic.values_test(OP)
test_gradients = generic.gradients_test(OP)
test_large = generic.large_test(OP)
test_invariants = generic.invariants_test(OP)
test_bad_calls = generic.bad_calls_test(OP)
test_nonfinite_inputs = generic.nonfinite_test(OP)


def test_known_answer(mhc, dtype):
    """The spec brief's fact: sinkhorn([[1, 0], [0, 1]], t_max=20) in paper mode, to 6 decimals (independent of the
    reference, so a bug shared by the reference and a backend still shows)."""
    mhc.require(OP, dtype)
    be = mhc.backend
    h = be.to_numpy(be.sinkhorn(be.from_numpy(np.eye(2), dtype), t_max=20, eps=0.0)).astype(np.float64)
    want = np.array([[0.731059, 0.268941], [0.268941, 0.731059]])
    assert np.max(np.abs(h - want)) <= max(5e-7, 4 * eps(dtype)), f"sinkhorn(I, t_max=20) = {h.tolist()} [{dtype}]"
