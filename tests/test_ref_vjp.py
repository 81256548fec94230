"""Every `<op>_vjp` of the reference against central finite differences in float64 (spec brief Sec. 5).

The check is on the scalar loss  f = sum_k <g_k, out_k>  with random cotangents g_k, whose gradient is the VJP.
Inputs of up to FULL_FD_MAX entries get the whole finite-difference gradient; bigger ones are probed along
N_DIRECTIONS random unit directions v, comparing <grad, v> with the directional difference. Each difference is a
Richardson-extrapolated central difference (error O(h^4)), which leaves room under the 1e-7 bound for rounding.
The error measure is  max|an - fd| / max|fd|  over all entries (or directions) of one input; on top of the 1e-7 the
difference quotient's own rounding, 16 eps64 sum|g_k o_k| / h, is allowed (it matters only where the loss is nearly
flat, e.g. Sinkhorn saturated by eps).

The op list comes from the spec table: a differentiable op without a case here fails `test_every_op_has_a_case`.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import mhc_ref
from mhc_ref.model import Stack
from mhc_ref.sublayer import ProbeSublayer
from mhc_spec.table import load

SPEC = load()
PRESETS = tuple(SPEC.presets)
N_VALUES = (1, 2, 3, 4, 8, 16)
REL = 1e-7  # max|an - fd| / max|fd|
ZERO = 1e-9  # below this max|fd| the gradient is zero (n = 1 Sinkhorn) and |an| must be as small
FULL_FD_MAX = 48
N_DIRECTIONS = 4
H = 1e-3  # Richardson step: truncation ~H^4, rounding ~1e-16 / H
# Leading dims and C per n: small, and varied so that no leading dims and two leading dims are both exercised.
LEAD = {1: (3,), 2: (), 3: (2, 2), 4: (2,), 8: (2,), 16: (1,)}
CHANNELS = {1: 3, 2: 3, 3: 2, 4: 3, 8: 2, 16: 2}
DIFF_OPS = tuple(name for name, op in SPEC.ops.items() if op.differentiable)


# -- finite differences -------------------------------------------------------------------------------------------
def directional(f, x0: np.ndarray, v: np.ndarray, h: float = H) -> float:
    """(4 D(h/2) - D(h)) / 3 with D(s) = (f(x0 + s v) - f(x0 - s v)) / 2s: the derivative of f along v."""
    def D(s):
        return (f(x0 + s * v) - f(x0 - s * v)) / (2 * s)
    return (4 * D(h / 2) - D(h)) / 3


def fd_error(f, x0: np.ndarray, grad: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """(max|an - fd|, max|fd|) of the analytic gradient `grad` of f at x0, by coordinates or random directions."""
    assert grad.shape == x0.shape, f"gradient shape {grad.shape} != input shape {x0.shape}"
    if x0.size <= FULL_FD_MAX:
        dirs = list(np.eye(x0.size).reshape((x0.size,) + x0.shape))
    else:
        dirs = [v / np.linalg.norm(v) for v in rng.standard_normal((N_DIRECTIONS,) + x0.shape)]
    fd = np.array([directional(f, x0, v) for v in dirs])
    an = np.array([np.sum(grad * v) for v in dirs])
    return float(np.max(np.abs(an - fd))), float(np.max(np.abs(fd)))


def assert_close_to_fd(f, x0, grad, rng, label: str, loss_abs: float = 1.0) -> None:
    """`loss_abs` = sum |g_k o_k|, the magnitude whose rounding the difference quotient divides by h."""
    err, scale = fd_error(f, x0, grad, rng)
    floor = 16 * np.finfo(np.float64).eps * loss_abs / H
    if scale < ZERO:
        assert err < ZERO, f"{label}: finite differences are 0 (max {scale:.1e}) but |an - fd| = {err:.2e}"
        return
    assert err <= REL * scale + floor, (f"{label}: max|an - fd| / max|fd| = {err / scale:.2e} > {REL:.0e} "
                                        f"(max|fd| {scale:.2e}, rounding floor {floor:.1e})")


# -- op cases: inputs in table order, options, variant label ------------------------------------------------------
def _x(rng, n, C, lead):
    return rng.standard_normal(lead + (n, C))


def _mhc_params(rng, n, C):
    width = n * n + 2 * n
    return {"phi": rng.standard_normal((n * C, width)) / np.sqrt(n * C), "alpha": rng.uniform(0.5, 1.5, 3),
            "b": 0.5 * rng.standard_normal(width)}


def case_sinkhorn(rng, n, C, lead, preset):
    return {"": ({"logits": 2.0 * rng.standard_normal(lead + (n, n))}, {})}  # eps: the preset's sinkhorn_eps


def case_mhc_coeffs(rng, n, C, lead, preset):
    return {"": ({"x": _x(rng, n, C, lead), **_mhc_params(rng, n, C)}, {})}


def case_mhc_pre(rng, n, C, lead, preset):
    return {"": ({"x": _x(rng, n, C, lead), "h_pre": rng.uniform(0, 1, lead + (n,))}, {})}


def case_mhc_post_res(rng, n, C, lead, preset):
    inputs = {"x": _x(rng, n, C, lead), "f_out": rng.standard_normal(lead + (C,)),
              "h_post": rng.uniform(0, 2, lead + (n,)), "h_res": rng.uniform(0, 1, lead + (n, n))}
    return {"": (inputs, {})}


def case_mhc_layer(rng, n, C, lead, preset):
    inputs = {"x": _x(rng, n, C, lead), **_mhc_params(rng, n, C),
              "w_sub": 1.5 * rng.standard_normal((C, C)) / np.sqrt(C)}
    return {"": (inputs, {})}


def case_mhc_stack(rng, n, C, lead, preset):
    L = 2  # two layers: the cotangent crosses a layer boundary
    params = [_mhc_params(rng, n, C) for _ in range(L)]
    inputs = {"x": _x(rng, n, C, lead), **{k: np.stack([p[k] for p in params]) for k in ("phi", "alpha", "b")},
              "w_sub": 1.5 * rng.standard_normal((L, C, C)) / np.sqrt(C)}
    return {"": (inputs, {})}


def case_hc_coeffs(rng, n, C, lead, preset):
    inputs = {"x": _x(rng, n, C, lead), "theta_pre": rng.standard_normal(C), "theta_post": rng.standard_normal(C),
              "theta_res": rng.standard_normal((n, C)), "alpha": rng.uniform(0.5, 1.5, 3),
              "b_pre": rng.standard_normal(n), "b_post": rng.standard_normal(n), "b_res": rng.standard_normal((n, n))}
    return {"": (inputs, {})}


def case_expand_streams(rng, n, C, lead, preset):
    return {"": ({"h": rng.standard_normal(lead + (C,))}, {"n": n})}


def case_collapse_streams(rng, n, C, lead, preset):
    head = {"x": _x(rng, n, C, lead), "phi_head": rng.standard_normal((n * C, n)) / np.sqrt(n * C),
            "alpha_head": rng.uniform(0.5, 1.5, 1), "b_head": 0.5 * rng.standard_normal(n)}
    none = {"phi_head": None, "alpha_head": None, "b_head": None}
    return {"sum": ({**head, **none}, {"mode": "sum"}), "head": (head, {"mode": "head"})}


CASES = {name[len("case_"):]: fn for name, fn in globals().items() if name.startswith("case_")}


def _outputs(value) -> tuple[np.ndarray, ...]:
    return value if isinstance(value, tuple) else (value,)


def check_op_vjp(op: str, inputs: dict, opts: dict, rng, label: str, weights=None) -> None:
    """Compare getattr(mhc_ref, op + '_vjp') with finite differences of the loss sum_k <g_k, out_k>.

    `weights(outputs)` may replace the random cotangents (see the large-logit Sinkhorn test).
    """
    spec = SPEC.op(op)
    names = [a.name for a in spec.inputs]
    assert list(inputs) == names, f"{label}: case inputs {list(inputs)} are not the table's {names}"
    fwd, vjp = getattr(mhc_ref, op), getattr(mhc_ref, op + "_vjp")
    outs = _outputs(fwd(*inputs.values(), **opts))
    assert len(outs) == len(spec.outputs), f"{label}: {len(outs)} outputs, the table lists {len(spec.outputs)}"
    gs = weights(outs) if weights else [rng.standard_normal(o.shape) for o in outs]

    def loss(arrays: dict) -> float:
        return sum(float(np.sum(g * o)) for g, o in zip(gs, _outputs(fwd(*arrays.values(), **opts))))

    grads = vjp(*inputs.values(), *gs, **opts)
    loss_abs = sum(float(np.sum(np.abs(g * o))) for g, o in zip(gs, outs))
    checked = [a for a in spec.diff_inputs if inputs[a] is not None]
    missing = set(checked) - set(grads)
    assert not missing, f"{label}: {op}_vjp returned {sorted(grads)}, missing {sorted(missing)}"
    for name in checked:
        assert_close_to_fd(lambda v, name=name: loss({**inputs, name: v}), inputs[name], grads[name], rng,
                           f"{label} d/d{name}", loss_abs)


def _op_preset_pairs():
    # Run an op under every preset only when a preset changes one of its options.
    for op in DIFF_OPS:
        for preset in PRESETS:
            if preset == PRESETS[0] or set(SPEC.op(op).options) & set(SPEC.preset(preset)):
                yield op, preset


def test_every_op_has_a_case():
    missing = sorted(set(DIFF_OPS) - set(CASES))
    assert not missing, f"differentiable ops of the spec table without a VJP case in {__file__}: {missing}"


@pytest.mark.parametrize("n", N_VALUES)
@pytest.mark.parametrize("op,preset", list(_op_preset_pairs()))
def test_vjp_matches_finite_differences(op, preset, n, rng):
    assert op in CASES, f"{op}: no VJP case (see test_every_op_has_a_case)"
    variants = CASES[op](rng, n, CHANNELS[n], LEAD[n], preset)
    for variant, (inputs, extra) in variants.items():
        opts = {"preset": preset, **extra} if "preset" in _kwargs(op) else extra
        check_op_vjp(op, inputs, opts, rng, f"{op}{'[' + variant + ']' if variant else ''} n={n} preset={preset}")


def _kwargs(op):
    return inspect.signature(getattr(mhc_ref, op)).parameters


# -- Sinkhorn: the truncated iteration's exact VJP over t_max, eps and logit scale --------------------------------
def _inverse_h_cotangent(rng):
    """Cotangent G / H: the loss sum G_ij H_ij(L) / H_ij(L0) weighs each entry by its relative change.

    At logit scale 30 the output is nearly a permutation: the O(1) entries barely move, while the tiny entries change
    by O(1) relative amounts. With a plain random cotangent the finite difference would drown in the rounding of the
    O(1) entries; with this one every term of the loss has an O(1) derivative. Underflowed entries get weight 0.
    """
    def weights(outs):
        (h,) = outs
        G = rng.standard_normal(h.shape)
        return [np.where(h > 1e-290, G / np.maximum(h, 1e-290), 0.0)]
    return weights


@pytest.mark.parametrize("scale", [1.0, 30.0])
@pytest.mark.parametrize("eps", [0.0, 1e-6, 0.05])
@pytest.mark.parametrize("t_max", [1, 2, 20])
@pytest.mark.parametrize("n", N_VALUES)
def test_sinkhorn_vjp_unrolled(n, t_max, eps, scale, rng):
    logits = scale * rng.standard_normal((2, n, n))
    weights = _inverse_h_cotangent(rng) if scale >= 30 else None
    check_op_vjp("sinkhorn", {"logits": logits}, {"t_max": t_max, "eps": eps}, rng,
                 f"sinkhorn n={n} t_max={t_max} eps={eps} scale={scale}", weights)


def test_sinkhorn_vjp_is_not_the_implicit_gradient(rng):
    """The truncated VJP differs from the converged one near the identity (brief Sec. 3): t_max changes it."""
    logits = 6.0 * np.eye(4) + 0.1 * rng.standard_normal((4, 4))
    g = rng.standard_normal((4, 4))
    d2 = mhc_ref.sinkhorn_vjp(logits, g, t_max=2)["logits"]
    d20 = mhc_ref.sinkhorn_vjp(logits, g, t_max=20)["logits"]
    assert np.max(np.abs(d2 - d20)) > 1e-4 * np.max(np.abs(d20)), "t_max=2 and t_max=20 VJPs coincide"


# -- mhc_ref.model.Stack: the whole stack's VJP ---------------------------------------------------------------------
def _stack(mode, preset, n, C, L, rng):
    subs = [ProbeSublayer(1.5 * rng.standard_normal((C, C)) / np.sqrt(C)) for _ in range(L)]
    if mode == "mhc":
        params = [_mhc_params(rng, n, C) for _ in range(L)]
    elif mode == "hc":
        params = [{k: v for k, v in case_hc_coeffs(rng, n, C, (), preset)[""][0].items() if k != "x"}
                  for _ in range(L)]
        for p in params:
            # Unconstrained maps: keep H_pre away from 0, where F's rmsnorm of u = H_pre x ~ 0 is so curved that
            # finite differences lose their accuracy, and H_res near I so the 3-layer state stays O(1).
            p["b_pre"] = 1.0 + 0.3 * np.abs(p["b_pre"])
            p["b_res"] = np.eye(n) + 0.3 * p["b_res"]
            p["alpha"] *= 0.3
    else:
        params = []
    return Stack(n=n, sublayers=subs, params=params, mode=mode, preset=preset)


def _stack_cases():
    for mode in ("mhc", "hc", "fixed", "residual"):
        for preset in PRESETS if mode in ("mhc", "hc") else PRESETS[:1]:
            for n in (1, 3, 4):
                yield mode, preset, n


@pytest.mark.parametrize("mode,preset,n", list(_stack_cases()))
def test_stack_vjp(mode, preset, n, rng):
    C, L = 3, 3
    stack = _stack(mode, preset, n, C, L, rng)
    h = rng.standard_normal((2, C))
    g_y = rng.standard_normal((2, C))
    grads = stack.vjp(h, g_y)
    label = f"Stack mode={mode} preset={preset} n={n}"

    def loss_h(v):
        return float(np.sum(g_y * stack.forward(v)[0]))
    loss_abs = float(np.sum(np.abs(g_y * stack.forward(h)[0])))
    assert_close_to_fd(loss_h, h, grads["h"], rng, f"{label} d/dh", loss_abs)

    for l in range(L):
        arrays = dict(stack.params[l]) if mode in ("mhc", "hc") else {}
        arrays["w_sub"] = stack.sublayers[l].w_sub
        assert set(grads["layers"][l]) == set(arrays), f"{label} layer {l}: grads {sorted(grads['layers'][l])}"
        for name, arr in arrays.items():
            orig = arr.copy()

            def loss_p(v, arr=arr):
                arr[...] = v  # parameters live inside the stack: perturb them in place
                return loss_h(h)
            try:
                assert_close_to_fd(loss_p, orig, grads["layers"][l][name], rng, f"{label} layer {l} d/d{name}",
                                   loss_abs)
            finally:
                arr[...] = orig
