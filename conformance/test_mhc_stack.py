"""Conformance of `mhc_stack` (P Eq. 3 with Eqs. 7-9, composed over depth L): L mhc_layer calls in sequence, layer l
with phi[l], alpha[l], b[l], w_sub[l] (the probe sublayer); x_L from x_0.

The tests are generated from the op's row in the spec table (inputs and shapes, options, tolerance class,
invariants); `mhc_conformance.generic` says what each one checks. L, n and C come from the table's
[conformance.ops.mhc_stack], a small space: depth multiplies the cost of every example.
"""

from mhc_conformance import generic

OP = "mhc_stack"

test_values = generic.values_test(OP)
test_gradients = generic.gradients_test(OP)
test_large = generic.large_test(OP)
test_invariants = generic.invariants_test(OP)
test_bad_calls = generic.bad_calls_test(OP)
test_nonfinite_inputs = generic.nonfinite_test(OP)
