"""Conformance of `amax_gain` (P Sec. 3.1, Figs. 3 and 7): per-layer and composite (over depth) forward gain max_i
|sum_j M_ij| and backward gain max_j |sum_i M_ij|, averaged over tokens.

The tests are generated from the op's row in the spec table (inputs and shapes, options, tolerance class,
invariants); `mhc_conformance.generic` says what each one checks.
"""

from mhc_conformance import generic

OP = "amax_gain"

test_values = generic.values_test(OP)
# no test_gradients: no input of amax_gain is differentiable (diff = false in the table)
test_large = generic.large_test(OP)
test_invariants = generic.invariants_test(OP)
test_bad_calls = generic.bad_calls_test(OP)
test_nonfinite_inputs = generic.nonfinite_test(OP)
