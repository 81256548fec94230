"""Conformance of `collapse_streams` (HC Algorithm 1 (sum) / DeepSeek-V4 hc_head): (..., n, C) -> (..., C) by sum,
or by w = sigma(alpha * (x_bar phi_head) / r + b_head) + eps, y = sum_k w_k x_k.

The tests are generated from the op's row in the spec table (inputs and shapes, options, tolerance class,
invariants); `mhc_conformance.generic` says what each one checks.
"""

from mhc_conformance import generic

OP = "collapse_streams"

test_values = generic.values_test(OP)
test_gradients = generic.gradients_test(OP)
test_large = generic.large_test(OP)
test_invariants = generic.invariants_test(OP)
test_bad_calls = generic.bad_calls_test(OP)
test_nonfinite_inputs = generic.nonfinite_test(OP)
