"""The control subject: the reference itself, optionally with planted deviations or off-preset options, run in a
peer's dtype. The finder must say "conforms to preset paper" for the plain control and name every planted change."""

from __future__ import annotations

import numpy as np

import mhc_ref
from mhc_spec.table import load

from . import draws
from .finder import Subject
from .models import MODELS, implicit_sinkhorn_vjp

SPEC = load()
TOKENS = int(SPEC.conformance["peers"]["tokens"])


def subject(op: str = "sinkhorn", preset: str = "paper", deviations=(), dtype: str = "float32",
            **options) -> Subject:
    """A Subject whose outputs are the reference model of `op` under `preset` + `options` with `deviations`
    ('fixed_point_grad' replaces the Sinkhorn gradient; only for op 'sinkhorn')."""
    model, spec_op, _ = MODELS[op]
    opts = SPEC.op_options(spec_op, preset, **options)
    fwd = frozenset(deviations) - {"fixed_point_grad"}

    def run(inputs):
        return model(inputs, opts, fwd, dtype)

    def vjp(inputs, cot):
        if "fixed_point_grad" in deviations:
            return {"logits": implicit_sinkhorn_vjp(run(inputs)[0], cot[0])}
        if op == "sinkhorn" and "row_first" in fwd:  # the reference's VJP on transposed axes
            d = mhc_ref.sinkhorn_vjp(_swap(inputs[0]), _swap(cot[0]), opts["t_max"], opts["eps"])
            return {"logits": _swap(d["logits"])}
        return getattr(mhc_ref, op + "_vjp")(*inputs, *cot, **opts)

    changes = [*(f"{k}={v}" for k, v in options.items()), *sorted(deviations)]
    variant = f"reference {op} ({preset}{', ' + ', '.join(changes) if changes else ''})"
    exact_vjp = not (fwd - {"row_first"}) and op in ("sinkhorn", "mhc_coeffs")
    return Subject("mhc_ref (control)", variant, op, run, lambda rng, scale: draws.draw(op, rng, scale, TOKENS, dtype),
                   vjp if exact_vjp or "fixed_point_grad" in deviations else None, dtype)


def _swap(a):
    return np.swapaxes(a, -1, -2)
