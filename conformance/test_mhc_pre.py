"""Conformance of `mhc_pre` (P Eq. 3 (H_pre x)): weighted sum of the streams, the sublayer's input.

The tests are generated from the op's row in the spec table (inputs and shapes, options, tolerance class,
invariants); `mhc_conformance.generic` says what each one checks.
"""

from mhc_conformance import generic

OP = "mhc_pre"

test_values = generic.values_test(OP)
test_gradients = generic.gradients_test(OP)
test_large = generic.large_test(OP)
test_invariants = generic.invariants_test(OP)
test_bad_calls = generic.bad_calls_test(OP)
test_nonfinite_inputs = generic.nonfinite_test(OP)
