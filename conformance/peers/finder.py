"""The convention finder: which spec options (or named deviations) reproduce a peer's outputs, and by how much.

For one `Subject` (a peer's op mapped onto a spec op) it draws inputs in three regimes (logit scale ~1, ~4 where the
conventions separate, ~60 where linear-domain iterations underflow), runs the peer, and scores every candidate
(every combination of the presets' option values and the table's extra values, with every subset of the op's
deviations) by `max err / allowed` over all outputs and draws, `allowed` being the suite's tolerance rule for the
peer's dtype. The best candidate is the one with the smallest score; ties go to fewer deviations, then to fewer
options off a preset. Then it checks the peer's gradient against directional finite differences of the best
candidate (float64), the doubly-stochastic invariants of any H_res output, and builds a small failing example for
every difference it names.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mhc_spec.table import load

from .. import tolerance
from .models import MODELS, implicit_sinkhorn_vjp, input_names

SPEC = load()
PEERS = SPEC.conformance["peers"]
REGIMES = {"moderate": 1.0, "spread": 4.0, "large": 60.0}  # logit scale of each draw
SEED = 20260101


@dataclass
class Subject:
    """One peer op, mapped onto a spec op (`op`, a key of `models.MODELS`).

    `run(inputs)` takes the spec op's inputs (float64 NumPy, already rounded to `dtype`) and returns its outputs;
    `draw(rng, scale)` returns inputs inside the part of the parameter space the peer can express, with map logits
    of roughly `scale`; `vjp(inputs, cotangents)` returns the peer's gradients by input name.
    """

    peer: str
    variant: str
    op: str
    run: Callable[[Sequence[np.ndarray]], tuple[np.ndarray, ...]]
    draw: Callable[[np.random.Generator, float], list[np.ndarray]]
    vjp: Callable[[Sequence[np.ndarray], Sequence[np.ndarray]], dict[str, np.ndarray]] | None = None
    dtype: str = "float32"
    declared: tuple[str, ...] = ()  # structural deviations read from the peer's code (not visible in its outputs here)
    note: str = ""


@dataclass(frozen=True)
class Candidate:
    options: tuple[tuple[str, Any], ...]
    deviations: frozenset[str]

    @property
    def opts(self) -> dict[str, Any]:
        return dict(self.options)

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options)
        devs = " + ".join(sorted(self.deviations))
        return f"{opts}{' with ' + devs if devs else ''}" if opts else (devs or "spec")


@dataclass
class Example:
    what: str  # the difference it demonstrates
    regime: str
    index: tuple[int, ...]
    output: str
    got: list
    want: list
    err: float
    allowed: float
    inputs: dict[str, list] = field(default_factory=dict)


@dataclass
class Finding:
    subject: Subject
    best: Candidate
    score: float  # max err / allowed of the best candidate (<= 1: it reproduces the peer)
    preset: str  # the preset nearest to the best candidate
    off_preset: dict[str, Any]  # options of the best candidate that differ from that preset
    spec_err: float  # max |peer - spec| for the best candidate's options without its deviations
    invariants: dict[str, str]
    gradient: str
    examples: list[Example]

    @property
    def verdict(self) -> str:
        devs = sorted(self.best.deviations | set(self.subject.declared))
        off = ", ".join(f"{k}={v}" + (" (no 2σ)" if k == "post_scale" and v == 1.0 else "")
                        for k, v in self.off_preset.items())
        if self.score > 1:
            return (f"differs: no candidate reproduces it; closest {self.best.describe()} "
                    f"(err/allowed {self.score:.3g})")
        if devs:
            with_opts = f"; options {off} off preset {self.preset}" if off else f"; otherwise preset {self.preset}"
            return f"differs: {' + '.join(devs)}{with_opts}; max error vs the spec {self.spec_err:.2g}"
        if off:
            return f"conforms with options {off} (preset {self.preset} otherwise)"
        if not self.best.options:
            return "conforms (the op has no options)"
        return f"conforms to preset {self.preset}"


# -- candidates ------------------------------------------------------------------------------------------------------
def candidates(op: str) -> list[Candidate]:
    _, spec_op, devs = MODELS[op]
    names = SPEC.op(spec_op).options
    values = {}
    for name in names:
        vals = [SPEC.op_options(spec_op, preset)[name] for preset in SPEC.presets]
        vals += PEERS["extra_values"].get(name, [])
        values[name] = sorted(set(vals), key=lambda v: (isinstance(v, str), v))
    subsets = [frozenset(c) for r in range(len(devs) + 1) for c in itertools.combinations(devs, r)]
    combos = [tuple(zip(names, vs)) for vs in itertools.product(*(values[k] for k in names))]
    return [Candidate(opts, d) for d in subsets for opts in combos]


def nearest_preset(op: str, opts: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    spec_op = MODELS[op][1]
    best = None
    for preset in SPEC.presets:
        ref = SPEC.op_options(spec_op, preset)
        off = {k: v for k, v in opts.items() if ref[k] != v}
        if best is None or len(off) < len(best[1]):
            best = (preset, off)
    return best


# -- scoring ---------------------------------------------------------------------------------------------------------
def _model(op, inputs, cand: Candidate, dtype: str) -> tuple[np.ndarray, ...]:
    with np.errstate(all="ignore"):
        return tuple(np.asarray(y, np.float64) for y in MODELS[op][0](inputs, cand.opts, cand.deviations, dtype))


def _errors(got, want) -> np.ndarray:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    both_bad = ~np.isfinite(got) & ~np.isfinite(want)
    diff = np.where(both_bad, 0.0, np.abs(got - want))
    return np.where(np.isfinite(diff), diff, np.inf)


def _allowed(op: str, dtype: str, inputs, cand: Candidate) -> list[float]:
    """The suite's allowed error per output for `cand` on these inputs (naive run in the peer's dtype)."""
    spec_op = MODELS[op][1]
    y64, naive = _model(op, inputs, cand, "float64"), _model(op, inputs, cand, dtype)
    return [tolerance.bound(spec_op, "forward", dtype, a, b, a).allowed for a, b in zip(y64, naive)]


def score(subject: Subject, draws, peer_out, cand: Candidate, allowed) -> tuple[float, float]:
    """(max err / allowed, max err) of the peer against `cand` over every draw and output."""
    worst, worst_err = 0.0, 0.0
    for inputs, got, allow in zip(draws, peer_out, allowed):
        for g, w, a in zip(got, _model(subject.op, inputs, cand, "float64"), allow):
            err = float(np.max(_errors(g, w))) if np.size(g) else 0.0
            worst = max(worst, err / a if a > 0 else (0.0 if err == 0 else math.inf))
            worst_err = max(worst_err, err)
    return worst, worst_err


def _sort_key(op: str, cand: Candidate, s: float):
    """Reproducing candidates first, simplest first; otherwise the closest."""
    n_off = len(nearest_preset(op, cand.opts)[1])
    return (0, len(cand.deviations), n_off, s) if s <= 1 else (1, s, len(cand.deviations), n_off)


# -- invariants, gradients, examples ---------------------------------------------------------------------------------
def invariants(subject: Subject, draws, peer_out, best: Candidate) -> dict[str, str]:
    """Row/column sums, non-negativity and closure of any H_res output, the spec's own values beside the peer's."""
    outputs = SPEC.op(MODELS[subject.op][1]).outputs
    names = [o.name for o in outputs]
    if "h_res" not in names or subject.op not in ("sinkhorn", "mhc_coeffs"):
        return {}
    k = names.index("h_res")
    inputs, got = draws[1], peer_out[1]  # the spread regime, where the marginals separate
    spec_h = _model(subject.op, inputs, Candidate(best.options, frozenset()), "float64")[k]
    peer_h = np.asarray(got[k], np.float64)

    def marg(h):
        h2 = h.reshape(-1, *h.shape[-2:])
        prod = h2[:-1] @ h2[1:] if len(h2) > 1 else h2
        return {"rows": np.max(np.abs(h.sum(-1) - 1)), "cols": np.max(np.abs(h.sum(-2) - 1)),
                "min": np.min(h), "closure": max(np.max(np.abs(prod.sum(-1) - 1)), np.max(np.abs(prod.sum(-2) - 1)))}

    p, s = marg(peer_h), marg(spec_h)
    # rows are exact in the spec (row_sums_one); columns and products only converge: judged against the spec's own
    atol = tolerance.invariant_atol("row_sums_one", subject.dtype)
    out = {}
    for key in ("rows", "cols", "closure"):
        ok = "✔" if p[key] <= max(atol, 2 * s[key]) else "✘"
        out[key] = f"{ok} {p[key]:.1e} (spec {s[key]:.1e})"
    out["nonnegative"] = "✔" if p["min"] >= 0 else f"✘ min {p['min']:.2g}"
    return out


def _directions(rng, inputs, diff: Sequence[bool]):
    return [rng.standard_normal(np.shape(a)) if d else None for a, d in zip(inputs, diff)]


def gradient_check(subject: Subject, best: Candidate, seed: int = SEED) -> str:
    """Peer gradient vs central finite differences of the best candidate in float64, along random directions."""
    if subject.vjp is None:
        return "not checked (no gradient)"
    rng = np.random.default_rng(seed + 7)
    spec_op = SPEC.op(MODELS[subject.op][1])
    inputs = subject.draw(rng, REGIMES["spread"])
    outs = _model(subject.op, inputs, best, "float64")
    cot = [rng.standard_normal(np.shape(y)) for y in outs]  # random, never constant: a sum loss hides errors
    grads = subject.vjp(inputs, cot)
    names = input_names(subject.op)
    diff = [n in grads for n in names]  # the inputs the peer differentiates
    tol = SPEC.tolerance_ceiling(spec_op.name, subject.dtype, "gradient")
    worst = 0.0
    for _ in range(3):
        v = _directions(rng, inputs, diff)
        h = 1e-6
        plus = _model(subject.op, [a if d is None else a + h * d for a, d in zip(inputs, v)], best, "float64")
        minus = _model(subject.op, [a if d is None else a - h * d for a, d in zip(inputs, v)], best, "float64")
        fd = sum(float(np.sum(c * (p - m))) for c, p, m in zip(cot, plus, minus)) / (2 * h)
        pg = sum(float(np.sum(np.asarray(grads[n], np.float64) * d)) for n, d in zip(names, v)
                 if d is not None and n in grads)
        worst = max(worst, abs(fd - pg) / max(abs(fd), 1e-12))
    checked = ", ".join(n for n, d in zip(names, diff) if d)
    if worst <= tol:
        return f"✔ agree on {checked} (rel err {worst:.1e} ≤ {tol:g})"
    if subject.op == "sinkhorn":  # is it the fixed-point gradient?
        P = _model("sinkhorn", inputs, best, "float64")[0]
        fp = implicit_sinkhorn_vjp(P, cot[0])
        err = np.max(np.abs(np.asarray(grads["logits"], np.float64) - fp)) / max(np.max(np.abs(fp)), 1e-12)
        if err <= tol:
            return (f"✘ differ on {checked} (rel err {worst:.1e}): fixed_point_grad (matches the implicit gradient "
                    f"to {err:.1e})")
    return f"✘ differ on {checked} (rel err {worst:.1e} > {tol:g})"


def _example(subject, what, draws, peer_out, cand: Candidate) -> Example:
    """The worst entry of the peer against `cand` (the candidate without the difference named `what`)."""
    names = [o.name for o in SPEC.op(MODELS[subject.op][1]).outputs]
    best = None
    for regime, inputs, got in zip(REGIMES, draws, peer_out):
        allow = _allowed(subject.op, subject.dtype, inputs, cand)
        for k, (g, w) in enumerate(zip(got, _model(subject.op, inputs, cand, "float64"))):
            e = _errors(g, w)
            if not e.size:
                continue
            idx = np.unravel_index(int(np.argmax(e)), e.shape)
            ratio = float(e[idx]) / allow[k] if allow[k] > 0 else math.inf
            if best is None or ratio > best[0]:
                best = (ratio, regime, inputs, k, idx, g, w, float(e[idx]), allow[k])
    _, regime, inputs, k, idx, g, w, err, allow = best
    tok = idx[:-2] if names[k] == "h_res" else idx[:-1]  # the token the worst entry belongs to
    shown_in = {}
    if subject.op == "sinkhorn":
        shown_in["logits"] = np.round(np.asarray(inputs[0])[tok], 3).tolist()
    return Example(what, regime, tuple(int(i) for i in idx), names[k], np.round(np.asarray(g)[tok], 6).tolist(),
                   np.round(np.asarray(w)[tok], 6).tolist(), err, allow, shown_in)


def find(subject: Subject, seed: int = SEED) -> Finding:
    rng = np.random.default_rng(seed)
    draws = [subject.draw(rng, scale) for scale in REGIMES.values()]
    with np.errstate(all="ignore"):
        peer_out = [tuple(np.asarray(y, np.float64) for y in subject.run(inputs)) for inputs in draws]
    cands = candidates(subject.op)
    ref_cand = Candidate(tuple(SPEC.op_options(MODELS[subject.op][1], "paper").items()), frozenset())
    allowed = [_allowed(subject.op, subject.dtype, inputs, ref_cand) for inputs in draws]
    scores = {c: score(subject, draws, peer_out, c, allowed) for c in cands}
    best = min(cands, key=lambda c: _sort_key(subject.op, c, scores[c][0]))
    best_s = scores[best][0]
    spec_err = scores[Candidate(best.options, frozenset())][1]  # the same options without the deviations
    preset, off = nearest_preset(subject.op, best.opts)
    examples = []
    if best_s <= 1:
        for dev in sorted(best.deviations):
            examples.append(_example(subject, dev, draws, peer_out,
                                     Candidate(best.options, best.deviations - {dev})))
        preset_opts = SPEC.op_options(MODELS[subject.op][1], preset)
        for key in off:
            opts = tuple((k, preset_opts[k] if k == key else v) for k, v in best.options)
            examples.append(_example(subject, f"{key}={best.opts[key]} (preset {preset}: {preset_opts[key]})",
                                     draws, peer_out, Candidate(opts, best.deviations)))
    return Finding(subject, best, best_s, preset, off, spec_err, invariants(subject, draws, peer_out, best),
                   gradient_check(subject, best, seed), examples)
