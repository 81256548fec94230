"""Conformance of `mhc_layer` (P Eq. 3 with Eqs. 7-9): one mHC layer around the probe sublayer F(u) =
tanh(rmsnorm(u) @ w_sub): mhc_coeffs, mhc_pre, F, mhc_post_res.

The tests are generated from the op's row in the spec table (inputs and shapes, options, tolerance class,
invariants); `mhc_conformance.generic` says what each one checks.
"""

from mhc_conformance import generic

OP = "mhc_layer"

test_values = generic.values_test(OP)
test_gradients = generic.gradients_test(OP)
test_large = generic.large_test(OP)
test_invariants = generic.invariants_test(OP)
test_bad_calls = generic.bad_calls_test(OP)
test_nonfinite_inputs = generic.nonfinite_test(OP)
