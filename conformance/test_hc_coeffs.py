"""Conformance of `hc_coeffs` (P Eq. 5 (HC baseline), HC Eqs. 10-13): Hyper-Connections baseline maps: per-stream
RMSNorm over C, H = alpha * tanh(theta x_tilde^T) + b, unconstrained.

The tests are generated from the op's row in the spec table (inputs and shapes, options, tolerance class,
invariants); `mhc_conformance.generic` says what each one checks.
"""

from mhc_conformance import generic

OP = "hc_coeffs"

test_values = generic.values_test(OP)
test_gradients = generic.gradients_test(OP)
test_large = generic.large_test(OP)
test_invariants = generic.invariants_test(OP)
test_bad_calls = generic.bad_calls_test(OP)
test_nonfinite_inputs = generic.nonfinite_test(OP)
