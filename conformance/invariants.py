"""One check function per invariant of the spec table ([invariants] in spec/mhc.toml).

`CHECKS[name](ctx, op, dtype, data)` draws an example of `op` (Hypothesis `data`), runs the backend and asserts the
property; ops name the invariants they must satisfy in their table row, and the suite parametrizes over that list.
Most are metamorphic: the backend is compared with itself on transformed inputs, so they hold whatever the
reference says. Tolerances are the table's `float64_atol`, scaled to the dtype by eps(dtype) / eps(float64)
(`tolerance.invariant_atol`) and, where an output is not O(1), by max(1, max|y|).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from hypothesis import strategies as st

import mhc_ref
from mhc_spec.table import load

from . import check
from .check import Case
from .strategies import LOGIT_SCALES, N_VALUES, T_MAX_VALUES, draw, draw_seed
from .tolerance import DTYPES, eps, invariant_atol

SPEC = load()
CHECKS: dict[str, Callable] = {}


def invariant(name: str):
    """Register a check under the invariant's table name."""
    if name not in SPEC.invariants:
        raise KeyError(f"invariant {name!r} is not in the spec table ({sorted(SPEC.invariants)})")

    def register(fn):
        CHECKS[name] = fn
        return fn
    return register


# -- helpers -------------------------------------------------------------------------------------------------------
def draw_case(ctx, op: str, dtype: str, data, **pins) -> Case:
    return Case.from_draw(op, dtype, draw(data, op, ctx.backend, dtype, **pins))


def run(ctx, case: Case) -> list[np.ndarray]:
    """The backend's outputs (structure checked) as float64 arrays."""
    return [y.astype(np.float64) for y in check.call_backend(ctx, case)]


def _fmt_idx(diff: np.ndarray) -> str:
    return str(tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))) if diff.size else "()"


def assert_close(ctx, name: str, what: str, case: Case, got, want, atol: float) -> None:
    """Fail unless max|got - want| <= atol, naming the invariant, the op, the dtype, the parameters and a repro."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    diff = np.abs(got - want)
    if not np.all(np.isfinite(got)):
        raise AssertionError(f"invariant {name}: {what} has NaN/Inf [{case.op} {case.dtype} {case.params()}]\n"
                             f"{check.repro(ctx, case)}")
    err = float(np.max(diff)) if diff.size else 0.0
    assert err <= atol, (f"invariant {name}: {what}: max|got - want| = {err:.3g} at {_fmt_idx(diff)} > atol "
                         f"{atol:.3g} [{case.op} {case.dtype} {case.params()}]\n{check.repro(ctx, case)}")


def assert_finite(ctx, name: str, what: str, case: Case, value) -> None:
    bad = ~np.isfinite(np.asarray(value, np.float64))
    assert not bad.any(), (f"invariant {name}: {what} has {int(bad.sum())} NaN/Inf entries, first at "
                           f"{tuple(int(i) for i in np.argwhere(bad)[0])} [{case.op} {case.dtype} {case.params()}]\n"
                           f"{check.repro(ctx, case)}")


def scaled_atol(name: str, dtype: str, *arrays) -> float:
    scale = max([1.0] + [float(np.max(np.abs(a))) for a in arrays if np.size(a)])
    return invariant_atol(name, dtype) * scale


def res_map(op: str, outs: list[np.ndarray]) -> np.ndarray:
    """H_res among an op's outputs."""
    return outs[[o.name for o in SPEC.op(op).outputs].index("h_res")]


def sinkhorn_eps(case: Case) -> float:
    return float(case.options.get("eps", case.options.get("sinkhorn_eps", 0.0)))


def permutation(data, n: int) -> np.ndarray:
    return np.asarray(data.draw(st.permutations(range(n)), label="perm"), dtype=np.int64)


# -- Sinkhorn / H_res ---------------------------------------------------------------------------------------------
@invariant("nonnegative")
def nonnegative(ctx, op, dtype, data):
    case = draw_case(ctx, op, dtype, data)
    H = res_map(op, run(ctx, case))
    assert_close(ctx, "nonnegative", "min(H_res, 0)", case, np.minimum(H, 0.0), 0.0, 0.0)


@invariant("row_sums_one")
def row_sums_one(ctx, op, dtype, data):
    """Row normalisation is the last step: rows sum to 1 (paper); with eps > 0 to the reference's 1 - O(eps)."""
    case = draw_case(ctx, op, dtype, data)
    rows = res_map(op, run(ctx, case)).sum(axis=-1)
    want = 1.0 if sinkhorn_eps(case) == 0 else res_map(op, check.call_reference(case)).sum(axis=-1)
    assert_close(ctx, "row_sums_one", "row sums of H_res", case, rows, want, invariant_atol("row_sums_one", dtype))


@invariant("col_sums_converge")
def col_sums_converge(ctx, op, dtype, data):
    """The column-sum error (L1 over columns) never grows with t_max, and is ~0 after many pairs when the logits
    are moderate (scale <= 1; larger logits converge too slowly to test)."""
    scales = tuple(s for s in LOGIT_SCALES if s <= 1.0)
    d = draw(data, op, ctx.backend, dtype, eps=0.0)
    scale = data.draw(st.sampled_from(scales), label="logit_scale")
    logits = np.random.default_rng(draw_seed(data)).standard_normal(d.arrays["logits"].shape) * scale
    case = Case.from_draw(op, dtype, d).with_inputs(logits=logits)
    atol = invariant_atol("col_sums_converge", dtype)
    errs = []
    for t in sorted(set(T_MAX_VALUES) | {200}):
        H = run(ctx, case.with_options(t_max=t))[0]
        errs.append((t, np.sum(np.abs(H.sum(axis=-2) - 1.0), axis=-1)))  # (...,) per matrix
    for (t0, e0), (t1, e1) in zip(errs, errs[1:]):
        assert_close(ctx, "col_sums_converge", f"growth of the column-sum error from t_max={t0} to {t1}",
                     case, np.maximum(e1 - e0, 0.0), 0.0, atol)
    assert_close(ctx, "col_sums_converge", "column-sum error at t_max=200", case, errs[-1][1], 0.0, atol)


@invariant("zeros_give_uniform")
def zeros_give_uniform(ctx, op, dtype, data):
    case = draw_case(ctx, op, dtype, data, eps=0.0)
    case = case.with_inputs(logits=np.zeros_like(case.input("logits"), np.float64))
    n = case.sizes["n"]
    assert_close(ctx, "zeros_give_uniform", "sinkhorn(0)", case, run(ctx, case)[0], 1.0 / n,
                 invariant_atol("zeros_give_uniform", dtype))


@invariant("n1_is_one")
def n1_is_one(ctx, op, dtype, data):
    case = draw_case(ctx, op, dtype, data, n=1, eps=0.0)
    assert_close(ctx, "n1_is_one", "H_res for n = 1", case, run(ctx, case)[0], 1.0, invariant_atol("n1_is_one", dtype))


@invariant("finite_large_logits")
def finite_large_logits(ctx, op, dtype, data):
    """Logits of magnitude up to 1e4 (no max shift in exp overflows at ~89 in float32): outputs and gradients
    stay finite."""
    d = draw(data, op, ctx.backend, dtype)
    rng = np.random.default_rng(draw_seed(data))
    logits = np.clip(rng.standard_normal(d.arrays["logits"].shape) * 1e4, -6e4, 6e4)  # float16 max is 65504
    case = Case.from_draw(op, dtype, d).with_inputs(logits=logits)
    H = run(ctx, case)[0]
    assert_finite(ctx, "finite_large_logits", "H_res", case, H)
    if op in ctx.backend.capabilities.grad_ops:
        g = check.call_vjp(ctx, case, check.random_cotangents(case, draw_seed(data)))["logits"]
        assert_finite(ctx, "finite_large_logits", "d/d logits", case, g)


# -- stream permutations ------------------------------------------------------------------------------------------
def _perm_mhc_coeffs(case: Case, p: np.ndarray) -> Case:
    """Permute the streams of x and re-index phi and b so that the maps permute the same way."""
    n, C = case.sizes["n"], case.sizes["C"]
    x, phi, b = (case.input(k).astype(np.float64) for k in ("x", "phi", "b"))
    res = [2 * n + p[i] * n + p[j] for i in range(n) for j in range(n)]  # H'[i, j] = H[p_i, p_j], either layout
    cols = np.concatenate([p, n + p, res])
    rows = phi.reshape(n, C, -1)[p].reshape(n * C, -1)  # x_bar'[k*C + c] = x[p_k, c]
    return case.with_inputs(x=x[..., p, :], phi=rows[:, cols], b=b[cols])


def _perm_collapse(case: Case, p: np.ndarray) -> Case:
    x = case.input("x").astype(np.float64)
    if case.input("phi_head") is None:
        return case.with_inputs(x=x[..., p, :])
    n, C = case.sizes["n"], case.sizes["C"]
    phi = case.input("phi_head").astype(np.float64).reshape(n, C, n)[p].reshape(n * C, n)[:, p]
    return case.with_inputs(x=x[..., p, :], phi_head=phi, b_head=case.input("b_head").astype(np.float64)[p])


@invariant("perm_equivariant")
def perm_equivariant(ctx, op, dtype, data):
    """Permuting the streams permutes the outputs: S(P L Q) = P S(L) Q for Sinkhorn; P x with correspondingly
    re-indexed maps/weights for the others."""
    case = draw_case(ctx, op, dtype, data)
    n = case.sizes["n"]
    p = permutation(data, n)
    f = lambda name: case.input(name).astype(np.float64)  # noqa: E731
    if op == "sinkhorn":
        q = np.asarray(data.draw(st.permutations(range(n)), label="perm_cols"), dtype=np.int64)
        moved = case.with_inputs(logits=f("logits")[..., p, :][..., :, q])
        expect = lambda outs: [outs[0][..., p, :][..., :, q]]  # noqa: E731
    elif op == "mhc_coeffs":
        moved = _perm_mhc_coeffs(case, p)
        expect = lambda outs: [outs[0][..., p], outs[1][..., p], outs[2][..., p, :][..., :, p]]  # noqa: E731
    elif op == "mhc_pre":
        moved = case.with_inputs(x=f("x")[..., p, :], h_pre=f("h_pre")[..., p])
        expect = lambda outs: outs  # noqa: E731
    elif op == "mhc_post_res":
        moved = case.with_inputs(x=f("x")[..., p, :], h_post=f("h_post")[..., p],
                                 h_res=f("h_res")[..., p, :][..., :, p])
        expect = lambda outs: [outs[0][..., p, :]]  # noqa: E731
    elif op == "collapse_streams":
        moved = _perm_collapse(case, p)
        expect = lambda outs: outs  # noqa: E731
    else:
        raise NotImplementedError(f"perm_equivariant has no stream action for op {op!r}")
    base, got = run(ctx, case), run(ctx, moved)
    for spec, g, w in zip(SPEC.op(op).outputs, got, expect(base)):
        what = f"{spec.name} of permuted input vs permuted {spec.name} (perm {p.tolist()})"
        assert_close(ctx, "perm_equivariant", what, moved, g, w, scaled_atol("perm_equivariant", dtype, w))


# -- mhc_coeffs ---------------------------------------------------------------------------------------------------
def _widen(lo: float, hi: float, dtype: str) -> tuple[float, float]:
    """[lo, hi] widened by the rounding of the bounds themselves to `dtype`."""
    e = eps(dtype)
    return lo - abs(lo) * e, hi + abs(hi) * e


@invariant("pre_in_unit_interval")
def pre_in_unit_interval(ctx, op, dtype, data):
    case = draw_case(ctx, op, dtype, data)
    h_pre = run(ctx, case)[0]
    pre_eps = case.options["pre_eps"]
    lo, hi = _widen(pre_eps, 1.0 + pre_eps, dtype)
    outside = np.maximum(lo - h_pre, 0.0) + np.maximum(h_pre - hi, 0.0)
    what = f"distance of H_pre outside [{lo:.8g}, {hi:.8g}]"
    assert_close(ctx, "pre_in_unit_interval", what, case, outside, 0.0, 0.0)


@invariant("post_in_range")
def post_in_range(ctx, op, dtype, data):
    case = draw_case(ctx, op, dtype, data)
    h_post = run(ctx, case)[1]
    lo, hi = _widen(0.0, case.options["post_scale"], dtype)
    outside = np.maximum(lo - h_post, 0.0) + np.maximum(h_post - hi, 0.0)
    assert_close(ctx, "post_in_range", f"distance of H_post outside [0, {hi:.8g}]", case, outside, 0.0, 0.0)


@invariant("rms_scale_invariant")
def rms_scale_invariant(ctx, op, dtype, data):
    """With rms_eps = 0, x and s x give the same maps (s > 0; powers of two scale exactly in every dtype)."""
    case = draw_case(ctx, op, dtype, data, rms_eps=0.0)
    s = data.draw(st.sampled_from((0.0625, 0.5, 2.0, 16.0, 3.0, 0.1)), label="s")
    scaled = case.with_inputs(x=case.input("x").astype(np.float64) * s)
    base = run(ctx, case)
    for spec, g, w in zip(SPEC.op(op).outputs, run(ctx, scaled), base):
        assert_close(ctx, "rms_scale_invariant", f"{spec.name}(s x) vs {spec.name}(x), s = {s}", scaled, g, w,
                     scaled_atol("rms_scale_invariant", dtype, w))


# -- mhc_pre / mhc_post_res ----------------------------------------------------------------------------------------
@invariant("linear_in_x")
def linear_in_x(ctx, op, dtype, data):
    """For fixed maps the op is affine in x: y(x1 + x2) + y(0) = y(x1) + y(x2) and y(s x) - y(0) = s (y(x) - y(0))."""
    case = draw_case(ctx, op, dtype, data)
    x1 = case.input("x").astype(np.float64)
    x2 = np.random.default_rng(draw_seed(data)).standard_normal(x1.shape)
    s = data.draw(st.sampled_from((0.25, 2.0, -1.0)), label="s")
    x12 = (x1.astype(DTYPES[dtype]) + x2.astype(DTYPES[dtype])).astype(np.float64)  # the sum in the case dtype
    y1, y2, y12, y0, ys = (run(ctx, case.with_inputs(x=v))[0] for v in (x1, x2, x12, np.zeros_like(x1), s * x1))
    atol = scaled_atol("linear_in_x", dtype, y1, y2, y12)
    assert_close(ctx, "linear_in_x", "y(x1 + x2) + y(0) vs y(x1) + y(x2)", case, y12 + y0, y1 + y2, atol)
    assert_close(ctx, "linear_in_x", f"y({s} x) - y(0) vs {s} (y(x) - y(0))", case, ys - y0, s * (y1 - y0), atol)


@invariant("identity_maps")
def identity_maps(ctx, op, dtype, data):
    """H_res = I and H_post = 0 return x unchanged, bit for bit."""
    case = draw_case(ctx, op, dtype, data)
    n = case.sizes["n"]
    case = case.with_inputs(h_res=np.broadcast_to(np.eye(n), case.input("h_res").shape),
                            h_post=np.zeros(case.input("h_post").shape))
    assert_close(ctx, "identity_maps", "y vs x", case, run(ctx, case)[0], case.input("x"), 0.0)


# -- mhc_layer -----------------------------------------------------------------------------------------------------
def _symmetric_bias(n: int, rng) -> np.ndarray:
    """b = [c_pre 1 | c_post 1 | a I + c (J - I)]: every map is invariant under a permutation of the streams."""
    c_pre, c_post, a, c = rng.normal(size=4)
    res = c * np.ones((n, n)) + (a - c) * np.eye(n)
    return np.concatenate([np.full(n, c_pre), np.full(n, c_post), res.reshape(-1)])


@invariant("perm_equivariant_zero_phi")
def perm_equivariant_zero_phi(ctx, op, dtype, data):
    case = draw_case(ctx, op, dtype, data)
    n = case.sizes["n"]
    rng = np.random.default_rng(draw_seed(data))
    case = case.with_inputs(phi=np.zeros(case.input("phi").shape), b=_symmetric_bias(n, rng))
    p = permutation(data, n)
    moved = case.with_inputs(x=case.input("x").astype(np.float64)[..., p, :])
    y, y_moved = run(ctx, case)[0], run(ctx, moved)[0]
    assert_close(ctx, "perm_equivariant_zero_phi", f"y(P x) vs P y(x) (perm {p.tolist()})", moved, y_moved,
                 y[..., p, :], scaled_atol("perm_equivariant_zero_phi", dtype, y))


@invariant("zero_phi_is_prenorm_residual")
def zero_phi_is_prenorm_residual(ctx, op, dtype, data):
    """phi = 0, b_pre = -ln(n-1), b_post = 0, any b_res, replicated h: every output stream is h + F(h).
    b_post = 0 gives H_post = 1 at the paper's post_scale = 2; for another post_scale > 1 the suite uses
    b_post = -ln(post_scale - 1), which gives H_post = 1 too (post_scale <= 1 cannot reach 1: the spec default)."""
    case = draw_case(ctx, op, dtype, data, n_values=tuple(v for v in N_VALUES if v >= 2), pre_eps=0.0,
                     sinkhorn_eps=0.0)
    if case.options["post_scale"] <= 1.0:
        case = case.with_options(post_scale=SPEC.options["post_scale"].default)
    n = case.sizes["n"]
    b = case.input("b").astype(np.float64).copy()
    b[:n], b[n:2 * n] = -math.log(n - 1), -math.log(case.options["post_scale"] - 1.0)
    h = case.input("x").astype(np.float64)[..., 0, :]  # (..., C)
    x = np.repeat(h[..., None, :], n, axis=-2)  # (..., n, C)
    case = case.with_inputs(x=x, phi=np.zeros(case.input("phi").shape), b=b)
    h_dt = case.input("x").astype(np.float64)[..., 0, :]
    f_h, _ = mhc_ref.ProbeSublayer(case.input("w_sub").astype(np.float64)).forward(h_dt)
    want = np.repeat((h_dt + f_h)[..., None, :], n, axis=-2)
    y = run(ctx, case)[0]
    assert_close(ctx, "zero_phi_is_prenorm_residual", "output streams vs h + F(h)", case, y, want,
                 scaled_atol("zero_phi_is_prenorm_residual", dtype, want))


# -- mhc_stack -----------------------------------------------------------------------------------------------------
def _stack_n_values(op: str) -> tuple[int, ...]:
    return tuple(SPEC.conformance.get("ops", {}).get(op, {}).get("n", N_VALUES))


def _residual_network(h: np.ndarray, w_sub: np.ndarray) -> np.ndarray:
    """h_L of h_{l+1} = h_l + F_l(h_l) around the probe sublayers w_sub (L, C, C), in float64 (the oracle)."""
    for w in w_sub.astype(np.float64):
        h = h + mhc_ref.ProbeSublayer(w).forward(h)[0]
    return h


@invariant("zero_phi_is_prenorm_network")
def zero_phi_is_prenorm_network(ctx, op, dtype, data):
    """phi = 0, b_pre = -ln(n-1), b_post = 0 in every layer, any b_res, replicated h: every output stream is h_L of
    the pre-norm residual network."""
    n_values = tuple(v for v in _stack_n_values(op) if v >= 2)
    case = draw_case(ctx, op, dtype, data, n_values=n_values, pre_eps=0.0, sinkhorn_eps=0.0, post_scale=2.0)
    n = case.sizes["n"]
    b = case.input("b").astype(np.float64).copy()  # (L, n*n+2*n)
    b[:, :n], b[:, n:2 * n] = -math.log(n - 1), 0.0
    h = case.input("x").astype(np.float64)[..., 0, :]  # (..., C)
    case = case.with_inputs(x=np.repeat(h[..., None, :], n, axis=-2), phi=np.zeros(case.input("phi").shape), b=b)
    h_l = _residual_network(case.input("x").astype(np.float64)[..., 0, :], case.input("w_sub"))
    want = np.repeat(h_l[..., None, :], n, axis=-2)
    assert_close(ctx, "zero_phi_is_prenorm_network", "output streams vs h_L of the pre-norm residual network", case,
                 run(ctx, case)[0], want, scaled_atol("zero_phi_is_prenorm_network", dtype, want))


@invariant("n1_fixed_maps_is_residual")
def n1_fixed_maps_is_residual(ctx, op, dtype, data):
    """n = 1, phi = 0, b_pre = 40 (sigma(40) rounds to 1), b_post = 0, eps = 0: H_pre = H_post = H_res = 1, and the
    stack is the plain residual network x_{l+1} = x_l + F_l(x_l)."""
    case = draw_case(ctx, op, dtype, data, n=1, pre_eps=0.0, sinkhorn_eps=0.0, post_scale=2.0)
    b = case.input("b").astype(np.float64).copy()  # (L, 3): [pre | post | res]
    b[:, 0], b[:, 1] = 40.0, 0.0
    case = case.with_inputs(phi=np.zeros(case.input("phi").shape), b=b)
    want = _residual_network(case.input("x").astype(np.float64), case.input("w_sub"))
    assert_close(ctx, "n1_fixed_maps_is_residual", "output vs the plain residual network", case, run(ctx, case)[0],
                 want, scaled_atol("n1_fixed_maps_is_residual", dtype, want))


# -- hc_coeffs, expand_streams, amax_gain ---------------------------------------------------------------------------
@invariant("zero_theta_gives_bias")
def zero_theta_gives_bias(ctx, op, dtype, data):
    case = draw_case(ctx, op, dtype, data)
    case = case.with_inputs(**{k: np.zeros(case.input(k).shape) for k in ("theta_pre", "theta_post", "theta_res")})
    lead = case.lead
    for name, got in zip(("b_pre", "b_post", "b_res"), run(ctx, case)):
        want = np.broadcast_to(case.input(name).astype(np.float64), lead + case.input(name).shape)
        assert_close(ctx, "zero_theta_gives_bias", f"map vs {name}", case, got, want, 0.0)


@invariant("copies_equal")
def copies_equal(ctx, op, dtype, data):
    case = draw_case(ctx, op, dtype, data)
    x = run(ctx, case)[0]
    h = case.input("h").astype(np.float64)
    want = np.repeat(h[..., None, :], x.shape[-2], axis=-2)
    assert_close(ctx, "copies_equal", "every stream vs h", case, x, want, 0.0)


@invariant("doubly_stochastic_bounded")
def doubly_stochastic_bounded(ctx, op, dtype, data):
    """Products of doubly-stochastic maps (Birkhoff mixtures of permutations) keep every gain <= 1 and the
    minimum column sum >= 1, up to the rounding of the inputs to the dtype."""
    case = draw_case(ctx, op, dtype, data)
    rng = np.random.default_rng(draw_seed(data))
    shape = case.input("h_res").shape
    n = shape[-1]
    weights = rng.dirichlet(np.ones(3), shape[:-2])  # (L, ..., 3)
    perms = np.stack([np.eye(n)[rng.permutation(n)] for _ in range(3)])  # (3, n, n)
    case = case.with_inputs(h_res=np.einsum("...k,kij->...ij", weights, perms))
    out = dict(zip([o.name for o in SPEC.op(op).outputs], run(ctx, case)))
    atol = invariant_atol("doubly_stochastic_bounded", dtype)
    for name in ("forward_gain", "backward_gain", "composite_forward_gain", "composite_backward_gain"):
        assert_close(ctx, "doubly_stochastic_bounded", f"excess of {name} over 1", case,
                     np.maximum(out[name] - 1.0, 0.0), 0.0, atol)
    for name in ("min_col_sum", "composite_min_col_sum"):
        assert_close(ctx, "doubly_stochastic_bounded", f"shortfall of {name} below 1", case,
                     np.maximum(1.0 - out[name], 0.0), 0.0, atol)
