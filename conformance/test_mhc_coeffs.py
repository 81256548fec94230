"""Conformance of `mhc_coeffs` (P Eqs. 7-8, 14-19): the three maps H_pre, H_post, H_res of one token from its
flattened, RMS-normalised stream state.

The tests are generated from the op's row in the spec table (inputs and shapes, options, tolerance class,
invariants); `mhc_conformance.generic` says what each one checks.
"""

from mhc_conformance import generic

OP = "mhc_coeffs"

test_values = generic.values_test(OP)
test_gradients = generic.gradients_test(OP)
test_large = generic.large_test(OP)
test_invariants = generic.invariants_test(OP)
test_bad_calls = generic.bad_calls_test(OP)
test_nonfinite_inputs = generic.nonfinite_test(OP)
