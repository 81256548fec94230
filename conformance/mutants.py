"""Planted-bug backends: the numpy backend with one known mistake each. The conformance suite must fail every one.

Each mutant is a subclass of the numpy backend (load one with `--mhc-backend mhc_conformance.mutants:<Name>`) that
replaces one op or one VJP with a plausible wrong version, most of them seen in public mHC code (see the project's
peers notes): a Sinkhorn iteration short, the wrong normalisation order, a transposed H_res, eps in the wrong place,
H_post at 1 sigma, an RMS over C instead of n*C, a dropped gradient term, the implicit (fixed-point) Sinkhorn
gradient, streams collapsed in every layer, NaN on large logits, a per-row max shift, H_pre applied to H_res x, ...
and bugs that only the newer checks reach: an option handled right only at the presets' values, a tile or token
block boundary past the default search sizes, an input written in place, an output aliasing an input, a gradient
right only for constant cotangents, a backend of another spec version.
`Faithful` changes nothing: it must pass, which shows the kills come from the planted bugs.

    python -m mhc_conformance.mutants [--json PATH] [--jobs 2] [NAME ...]

runs the suite against each mutant (in a subprocess, derandomized, stopping at the first failure, restricted to the
test modules of the ops the mutant touches) and against the unmodified control, and prints the kill rate and the
control's result. A mutant counts as killed when at least one test fails (an error in setup, such as an import error,
does not count), or, for a mutant with `expect_usage_error`, when the plugin refuses it at startup.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import mhc_ref
from mhc_backends.numpy.backend import NumpyBackend
from mhc_ref._common import DTYPES, dtype_name

from .runner import run_suite

MODULE = __name__ if __name__ != "__main__" else "mhc_conformance.mutants"


class Mutant(NumpyBackend):
    """Base: `mutate_<op>` methods replace forward ops; `vjp_<op>` methods replace VJPs."""

    name = "mutant"
    ops: tuple[str, ...] = ()  # the ops the bug touches: their test modules are run against the mutant
    expect_usage_error: str | None = None  # killed by a usage error (exit status 4) containing this text instead

    def call(self, op, inputs, **options):
        hook = getattr(self, "mutate_" + op, None)
        if hook is None:
            return super().call(op, inputs, **options)
        with np.errstate(all="ignore"):
            return hook(*inputs, **options)

    def vjp(self, op, inputs, cotangents, **options):
        hook = getattr(self, "vjp_" + op, None)
        if hook is None:
            return super().vjp(op, inputs, cotangents, **options)
        with np.errstate(all="ignore"):
            return hook(*inputs, *cotangents, **options)


def _dt(a: np.ndarray) -> np.dtype:
    return DTYPES[dtype_name(a.dtype)]


def _linear_sinkhorn(logits, t_max, eps, *, shift="global", order=("col", "row"), plus_eps="after_col"):
    """Linear-domain Sinkhorn in the input dtype, with the knobs the mutants turn."""
    dt = _dt(logits)
    L = logits.astype(dt)
    if shift == "global":
        L = L - np.max(L, axis=(-2, -1), keepdims=True)
    elif shift == "row":  # not exact: the first column step does not undo a per-row scaling
        L = L - np.max(L, axis=-1, keepdims=True)
    M = np.exp(L)  # shift == "none": overflows to inf for large logits, then inf/inf = NaN
    e = dt.type(eps)
    for t in range(t_max):
        for step in order:
            axis = -2 if step == "col" else -1
            M = M / (np.sum(M, axis=axis, keepdims=True) + (e if t > 0 or step == "row" else 0))
            if t == 0 and eps > 0 and step == plus_eps.removeprefix("after_"):
                M = M + e
    return M


class Faithful(Mutant):
    """No change at all: the control that must pass."""

    name = "faithful"


class SinkhornOneShort(Mutant):
    """Sinkhorn runs t_max - 1 (column, row) pairs (for t_max = 1: only a row softmax)."""

    name = "sinkhorn-one-short"
    ops = ("sinkhorn",)

    def mutate_sinkhorn(self, logits, t_max, eps):
        if t_max == 1:
            z = np.exp(logits - np.max(logits, axis=-1, keepdims=True))
            return (z / np.sum(z, axis=-1, keepdims=True)).astype(logits.dtype)
        return mhc_ref.sinkhorn(logits, t_max - 1, eps, compute_dtype=_dt(logits))


class ColumnLast(Mutant):
    """Row normalisation first, column last: column sums exact, row sums not (the row-last rule broken)."""

    name = "column-last"
    ops = ("sinkhorn",)

    def mutate_sinkhorn(self, logits, t_max, eps):
        return _linear_sinkhorn(logits, t_max, eps, order=("row", "col"), plus_eps="after_row")


class TransposedHres(Mutant):
    """mhc_post_res applies H_res^T (rows of H_res read as input streams)."""

    name = "transposed-h-res"
    ops = ("mhc_post_res",)

    def mutate_mhc_post_res(self, x, f_out, h_post, h_res):
        return mhc_ref.mhc_post_res(x, f_out, h_post, np.swapaxes(h_res, -1, -2), compute_dtype=_dt(x))


class EpsMisplaced(Mutant):
    """DeepSeek's eps added after the first row step instead of after the first column step."""

    name = "eps-misplaced"
    ops = ("sinkhorn",)

    def mutate_sinkhorn(self, logits, t_max, eps):
        return _linear_sinkhorn(logits, t_max, eps, plus_eps="after_row")


class PostOneSigma(Mutant):
    """H_post = sigma(.) instead of post_scale * sigma(.) (the factor 2 lost)."""

    name = "h-post-one-sigma"
    ops = ("mhc_coeffs",)

    def mutate_mhc_coeffs(self, x, phi, alpha, b, **options):
        return mhc_ref.mhc_coeffs(x, phi, alpha, b, compute_dtype=_dt(x), **{**options, "post_scale": 1.0})


class RmsOverC(Mutant):
    """Each stream RMS-normalised over its C channels instead of the flattened n*C vector."""

    name = "rms-over-c"
    ops = ("mhc_coeffs",)

    def mutate_mhc_coeffs(self, x, phi, alpha, b, **options):
        dt = _dt(x)
        xs = x.astype(dt) / np.sqrt(np.mean(x.astype(dt) ** 2, axis=-1, keepdims=True) + dt.type(options["rms_eps"]))
        return mhc_ref.mhc_coeffs(xs.astype(dt), phi, alpha, b, compute_dtype=dt, **options)


class LayerGradDropsCoeffPath(Mutant):
    """d/dx of mhc_layer omits the path through the coefficients (as if H_pre, H_post, H_res were detached)."""

    name = "layer-grad-drops-coeff-path"
    ops = ("mhc_layer",)

    def vjp_mhc_layer(self, x, phi, alpha, b, w_sub, g_y, **options):
        dt = _dt(x)
        h_pre, h_post, h_res = mhc_ref.mhc_coeffs(x, phi, alpha, b, compute_dtype=dt, **options)
        sub = mhc_ref.ProbeSublayer(w_sub)
        f_out, cache = sub.forward(mhc_ref.mhc_pre(x, h_pre, compute_dtype=dt))
        g_pr = mhc_ref.mhc_post_res_vjp(x, f_out, h_post, h_res, g_y, compute_dtype=dt)
        du, g_sub = sub.vjp(cache, g_pr["f_out"])
        g_pre = mhc_ref.mhc_pre_vjp(x, h_pre, du, compute_dtype=dt)
        g_c = mhc_ref.mhc_coeffs_vjp(x, phi, alpha, b, g_pre["h_pre"], g_pr["h_post"], g_pr["h_res"],
                                     compute_dtype=dt, **options)
        return {"x": g_pr["x"] + g_pre["x"], "phi": g_c["phi"], "alpha": g_c["alpha"], "b": g_c["b"], **g_sub}


class ImplicitSinkhornGrad(Mutant):
    """The implicit (fixed-point) gradient at the returned P instead of the exact VJP of the truncated iteration."""

    name = "implicit-sinkhorn-grad"
    ops = ("sinkhorn",)

    def vjp_sinkhorn(self, logits, g_h_res, t_max, eps):
        dt = _dt(logits)
        P = mhc_ref.sinkhorn(logits, t_max, eps).reshape(-1, *logits.shape[-2:])  # float64
        G = g_h_res.astype(np.float64).reshape(P.shape)
        n = P.shape[-1]
        out = np.empty_like(P)
        for k in range(P.shape[0]):  # dL = P o (G - a 1^T - 1 b^T), a and b restoring zero row and column sums
            p, g = P[k], G[k]
            A = np.block([[np.diag(p.sum(1)), p], [p.T, np.diag(p.sum(0))]])
            rhs = np.concatenate([(p * g).sum(1), (p * g).sum(0)])
            ab = np.linalg.lstsq(A, rhs, rcond=None)[0]
            out[k] = p * (g - ab[:n, None] - ab[None, n:])
        return {"logits": out.reshape(logits.shape).astype(dt)}


class StreamsCollapsedEachLayer(Mutant):
    """mhc_layer returns every stream equal to the mean of the streams (streams collapsed inside each layer)."""

    name = "streams-collapsed-each-layer"
    ops = ("mhc_layer",)

    def mutate_mhc_layer(self, x, phi, alpha, b, w_sub, **options):
        y = mhc_ref.mhc_layer(x, phi, alpha, b, w_sub, compute_dtype=_dt(x), **options)
        return np.broadcast_to(np.mean(y, axis=-2, keepdims=True), y.shape).astype(y.dtype)


class NanOnLargeLogits(Mutant):
    """exp(logits) without any max shift: inf / inf = NaN once a logit passes ~89 (float32) or ~709 (float64)."""

    name = "nan-on-large-logits"
    ops = ("sinkhorn",)

    def mutate_sinkhorn(self, logits, t_max, eps):
        return _linear_sinkhorn(logits, t_max, eps, shift="none")


class RowMaxShift(Mutant):
    """exp(L - rowmax(L)): exact for a row-first iteration, not for the spec's column-first one."""

    name = "row-max-shift"
    ops = ("sinkhorn",)

    def mutate_sinkhorn(self, logits, t_max, eps):
        return _linear_sinkhorn(logits, t_max, eps, shift="row")


class PreOnMixedStreams(Mutant):
    """The sublayer input is H_pre (H_res x) instead of H_pre x (both maps must act on the same un-mixed x)."""

    name = "pre-on-mixed-streams"
    ops = ("mhc_layer",)

    def mutate_mhc_layer(self, x, phi, alpha, b, w_sub, **options):
        dt = _dt(x)
        h_pre, h_post, h_res = mhc_ref.mhc_coeffs(x, phi, alpha, b, compute_dtype=dt, **options)
        mixed = mhc_ref.mhc_post_res(x, np.zeros(x.shape[:-2] + x.shape[-1:], dt), h_post, h_res, compute_dtype=dt)
        f_out, _ = mhc_ref.ProbeSublayer(w_sub).forward(mhc_ref.mhc_pre(mixed, h_pre, compute_dtype=dt))
        return mhc_ref.mhc_post_res(x, f_out, h_post, h_res, compute_dtype=dt)


class ResNeverApplied(Mutant):
    """mhc_post_res returns x + H_post^T f: H_res computed but never applied."""

    name = "h-res-never-applied"
    ops = ("mhc_post_res",)

    def mutate_mhc_post_res(self, x, f_out, h_post, h_res):
        eye = np.broadcast_to(np.eye(x.shape[-2]), h_res.shape).astype(h_res.dtype)
        return mhc_ref.mhc_post_res(x, f_out, h_post, eye, compute_dtype=_dt(x))


class LayoutIgnored(Mutant):
    """res_layout ignored: the residual logits always read row-major (DeepSeek weights load transposed)."""

    name = "layout-ignored"
    ops = ("mhc_coeffs",)

    def mutate_mhc_coeffs(self, x, phi, alpha, b, **options):
        return mhc_ref.mhc_coeffs(x, phi, alpha, b, compute_dtype=_dt(x), **{**options, "res_layout": "row_major"})


class LenientOptions(Mutant):
    """Sinkhorn silently clamps bad options (t_max < 1 to 1, negative eps to 0, floats to int) instead of raising."""

    name = "lenient-options"
    ops = ("sinkhorn",)

    def mutate_sinkhorn(self, logits, t_max, eps):
        t = max(1, int(t_max)) if isinstance(t_max, (int, float)) else 20
        e = max(0.0, float(eps)) if isinstance(eps, (int, float)) and eps == eps else 0.0
        return mhc_ref.sinkhorn(logits, t, e, compute_dtype=_dt(logits))


class PhiGradFirstToken(Mutant):
    """d/d phi of mhc_coeffs summed over the first token only (a reduction over the batch forgotten)."""

    name = "phi-grad-first-token"
    ops = ("mhc_coeffs",)

    def vjp_mhc_coeffs(self, x, phi, alpha, b, g_h_pre, g_h_post, g_h_res, **options):
        dt = _dt(x)
        full = mhc_ref.mhc_coeffs_vjp(x, phi, alpha, b, g_h_pre, g_h_post, g_h_res, compute_dtype=dt, **options)
        lead = x.shape[:-2]
        if lead:
            first = (0,) * len(lead)
            pick = lambda g: None if g is None else g[first][(None,) * len(lead)]  # noqa: E731
            one = mhc_ref.mhc_coeffs_vjp(x[first][(None,) * len(lead)], phi, alpha, b, pick(g_h_pre),
                                         pick(g_h_post), pick(g_h_res), compute_dtype=dt, **options)
            full["phi"] = one["phi"]
        return full


class BackwardGainFromRows(Mutant):
    """amax_gain's backward gain taken from row sums (the forward gain) instead of column sums."""

    name = "backward-gain-from-rows"
    ops = ("amax_gain",)

    def mutate_amax_gain(self, h_res):
        return mhc_ref.amax_gain(np.swapaxes(h_res, -1, -2)) | {
            k: v for k, v in mhc_ref.amax_gain(h_res).items() if "forward" in k}


class CollapseByMean(Mutant):
    """collapse_streams(mode='sum') averages the streams instead of summing them."""

    name = "collapse-by-mean"
    ops = ("collapse_streams",)

    def mutate_collapse_streams(self, x, phi_head=None, alpha_head=None, b_head=None, **options):
        y = mhc_ref.collapse_streams(x, phi_head, alpha_head, b_head, compute_dtype=_dt(x), **options)
        return (y / x.shape[-2]).astype(y.dtype) if options["mode"] == "sum" else y


class HalfPrecisionInside(Mutant):
    """float32 Sinkhorn evaluated in float16 inside (a silently low-precision kernel)."""

    name = "half-precision-inside"
    ops = ("sinkhorn",)

    def mutate_sinkhorn(self, logits, t_max, eps):
        dt = _dt(logits)
        inner = "float16" if dt == np.float32 else dtype_name(dt)
        return mhc_ref.sinkhorn(logits, t_max, eps, compute_dtype=inner).astype(dt)


# -- bugs that only the newer checks reach: options off the presets, large sizes, in-place writes and aliasing,
# non-constant cotangents, the spec version --------------------------------------------------------------------
class PostScaleOnlyTwo(Mutant):
    """post_scale ignored: H_post = 2 sigma(.) whatever the option says (right for both presets, which set 2)."""

    name = "post-scale-only-two"
    ops = ("mhc_coeffs",)

    def mutate_mhc_coeffs(self, x, phi, alpha, b, **options):
        return mhc_ref.mhc_coeffs(x, phi, alpha, b, compute_dtype=_dt(x), **{**options, "post_scale": 2.0})


class RmsEpsClamped(Mutant):
    """rms_eps clamped to <= 1e-6 (a kernel constant sized for the presets' values)."""

    name = "rms-eps-clamped"
    ops = ("mhc_coeffs",)

    def mutate_mhc_coeffs(self, x, phi, alpha, b, **options):
        return mhc_ref.mhc_coeffs(x, phi, alpha, b, compute_dtype=_dt(x),
                                  **{**options, "rms_eps": min(options["rms_eps"], 1e-6)})


class LayoutFollowsEps(Mutant):
    """res_layout inferred from the preset's look (col_major iff sinkhorn_eps > 0) instead of read from the option."""

    name = "layout-follows-eps"
    ops = ("mhc_coeffs",)

    def mutate_mhc_coeffs(self, x, phi, alpha, b, **options):
        layout = "col_major" if options["sinkhorn_eps"] > 0 else "row_major"
        return mhc_ref.mhc_coeffs(x, phi, alpha, b, compute_dtype=_dt(x), **{**options, "res_layout": layout})


class TileTruncated(Mutant):
    """The projection x_bar @ phi stops after 1024 rows of phi (one K tile short once n*C > 1024)."""

    name = "tile-truncated"
    ops = ("mhc_coeffs",)

    def mutate_mhc_coeffs(self, x, phi, alpha, b, **options):
        cut = phi.copy()
        cut[1024:] = 0
        return mhc_ref.mhc_coeffs(x, cut, alpha, b, compute_dtype=_dt(x), **options)


class TokenTail(Mutant):
    """mhc_pre leaves the tokens after the 16th at zero (a grid of one 16-token block, the partial tail skipped)."""

    name = "token-tail"
    ops = ("mhc_pre",)

    def mutate_mhc_pre(self, x, h_pre):
        y = mhc_ref.mhc_pre(x, h_pre, compute_dtype=_dt(x))
        flat = y.reshape(-1, y.shape[-1])
        flat[16:] = 0
        return flat.reshape(y.shape)


class InPlaceInput(Mutant):
    """mhc_post_res accumulates H_post^T f into x in place (the returned y is right, the caller's x is not)."""

    name = "in-place-input"
    ops = ("mhc_post_res",)

    def mutate_mhc_post_res(self, x, f_out, h_post, h_res):
        y = mhc_ref.mhc_post_res(x, f_out, h_post, h_res, compute_dtype=_dt(x))
        x += (h_post[..., :, None] * f_out[..., None, :]).astype(x.dtype)
        return y


class VjpOverwritesCotangent(Mutant):
    """mhc_pre's VJP reuses the cotangent buffer as scratch (zeroes g_y after use)."""

    name = "vjp-overwrites-cotangent"
    ops = ("mhc_pre",)

    def vjp_mhc_pre(self, x, h_pre, g_y):
        grads = mhc_ref.mhc_pre_vjp(x, h_pre, g_y, compute_dtype=_dt(x))
        g_y[...] = 0
        return grads


class OutputAliasesInput(Mutant):
    """expand_streams returns a read-only broadcast view of h (no copy: the output aliases the input)."""

    name = "output-aliases-input"
    ops = ("expand_streams",)

    def mutate_expand_streams(self, h, n):
        return np.broadcast_to(h[..., None, :], h.shape[:-1] + (n, h.shape[-1]))


class CotangentMeanGrad(Mutant):
    """Sinkhorn's VJP of the mean cotangent: exact for a constant (sum-loss) cotangent, wrong for any other."""

    name = "cotangent-mean-grad"
    ops = ("sinkhorn",)

    def vjp_sinkhorn(self, logits, g_h_res, t_max, eps):
        mean = np.full(g_h_res.shape, np.mean(g_h_res.astype(np.float64)), _dt(logits))
        return mhc_ref.sinkhorn_vjp(logits, mean, t_max, eps, compute_dtype=_dt(logits))


def _next_minor(version: str) -> str:
    major, minor = version.split(".")[:2]
    return f"{major}.{int(minor) + 1}.0"


class WrongSpecVersion(Mutant):
    """Implements the next minor spec version (an incompatible contract): the plugin must refuse it at startup."""

    name = "wrong-spec-version"
    spec_version = _next_minor(mhc_ref.SPEC_VERSION)
    expect_usage_error = "spec_version"


MUTANTS: dict[str, type[Mutant]] = {cls.__name__: cls for cls in Mutant.__subclasses__() if cls is not Faithful}


# -- running the suite against them -------------------------------------------------------------------------------
def _failed_tests(report: dict) -> list[dict]:
    return [t for t in report.get("tests", []) if t.get("outcome") == "failed"]


def _defaults(kwargs: dict) -> dict:
    return {"extra": ["-x", "--mhc-no-shrink"], "profile": "ci", **kwargs}


def kill(name: str, **kwargs) -> dict:
    """Run the suite against one mutant: {mutant, killed, by (first failing test), message, seconds}."""
    cls = MUTANTS[name]
    report = run_suite(f"{MODULE}:{name}", k=" or ".join(cls.ops) or None, timeout=300.0, **_defaults(kwargs))
    if cls.expect_usage_error:  # refused before any test runs: exit status 4 and the reason in the error
        refused = report["rc"] == 4 and cls.expect_usage_error in report.get("tail", "")
        tail = report.get("tail", "").strip().splitlines()
        return {"mutant": name, "bug": (cls.__doc__ or "").strip(), "killed": refused,
                "by": "usage error at startup" if refused else None, "message": (tail[-1] if tail else "")[:500],
                "seconds": report["seconds"]}
    failed = _failed_tests(report)
    return {"mutant": name, "bug": (cls.__doc__ or "").strip(), "killed": bool(failed) and report["rc"] == 1,
            "by": failed[0]["nodeid"] if failed else None,
            "message": (failed[0].get("message") or "")[:500] if failed else report.get("tail", "")[-800:],
            "seconds": report["seconds"]}


def control(ops: list[str] | None = None, **kwargs) -> dict:
    """The unmodified control (`Faithful`, the reference) under the mutants' settings, over the tests of `ops` (None:
    the whole suite). It must pass, or the kills prove nothing: {passed, counts, seconds, report}."""
    report = run_suite(f"{MODULE}:Faithful", k=" or ".join(ops) if ops else None, timeout=900.0, **_defaults(kwargs))
    counts: dict[str, int] = {}
    for t in report.get("tests", []):
        counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
    passed = report["rc"] == 0 and counts.get("passed", 0) > 0 and set(counts) <= {"passed", "skipped"}
    return {"backend": "faithful", "passed": passed, "counts": counts, "seconds": report["seconds"],
            "report": report}


def kill_all(names: list[str] | None = None, jobs: int = 2, with_control: bool = True, **kwargs) -> dict:
    """Run every mutant (in parallel subprocesses) and, first, the unmodified control over the same tests (the whole
    suite when every mutant runs); returns {"kill_rate", "killed", "total", "mutants": [...], "control": {...}}."""
    chosen = names or list(MUTANTS)
    ops = None if not names else sorted({op for n in names for op in MUTANTS[n].ops})
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        ctrl = pool.submit(control, ops, **kwargs) if with_control else None
        results = list(pool.map(lambda n: kill(n, **kwargs), chosen))
        ctrl = ctrl.result() if ctrl is not None else None
    killed = sum(r["killed"] for r in results)
    return {"kill_rate": killed / len(results), "killed": killed, "total": len(results), "mutants": results,
            "control": ctrl}


def summary(result: dict) -> str:
    """One line: the kill rate, and whether the control passed."""
    line = f"conformance mutant kill rate: {result['killed']}/{result['total']} = {result['kill_rate']:.0%}"
    ctrl = result.get("control")
    if ctrl is not None:
        counts = ", ".join(f"{v} {k}" for k, v in sorted(ctrl["counts"].items())) or "nothing run"
        line += (f"; control (unmodified reference backend): {'passed' if ctrl['passed'] else 'FAILED'} "
                 f"({counts}, {ctrl['seconds']:.0f} s)")
    return line


def as_json(result: dict) -> str:
    """The results without the control's full report."""
    out = dict(result)
    if out.get("control"):
        out["control"] = {k: v for k, v in out["control"].items() if k != "report"}
    return json.dumps(out, indent=1, default=str)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mhc_conformance.mutants", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"mutants to run (default: all {len(MUTANTS)})")
    parser.add_argument("--json", help="write the results (with the kill rate) to this JSON file")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--profile", default="ci", choices=("ci", "ci-slow", "thorough"))
    parser.add_argument("--no-control", action="store_true", help="skip the run of the unmodified control")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in MUTANTS]
    if unknown:
        parser.error(f"unknown mutants {unknown}; known: {sorted(MUTANTS)}")
    result = kill_all(args.names or None, jobs=args.jobs, with_control=not args.no_control, profile=args.profile)
    for r in result["mutants"]:
        print(f"{'killed ' if r['killed'] else 'SURVIVED'} {r['mutant']:28s} {r['seconds']:6.1f}s  {r['by'] or '-'}")
    print(summary(result))
    if args.json:
        Path(args.json).write_text(as_json(result))
    ok = result["killed"] == result["total"] and (result["control"] is None or result["control"]["passed"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
