"""Conformance of `mhc_post_res` (P Eq. 3 (H_res x + H_post^T f)): mix the streams with H_res and add the sublayer
output scattered by H_post.

The tests are generated from the op's row in the spec table (inputs and shapes, options, tolerance class,
invariants); `mhc_conformance.generic` says what each one checks.
"""

from mhc_conformance import generic

OP = "mhc_post_res"

test_values = generic.values_test(OP)
test_gradients = generic.gradients_test(OP)
test_large = generic.large_test(OP)
test_invariants = generic.invariants_test(OP)
test_bad_calls = generic.bad_calls_test(OP)
test_nonfinite_inputs = generic.nonfinite_test(OP)
