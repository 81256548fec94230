"""Candidate models for the convention finder: the float64 reference under any option values, plus the named
deviations the spec does not allow (spec/mhc.toml [conformance.peers.deviations]).

A model is `model(inputs, opts, deviations, dtype) -> tuple of outputs` for one spec op: the reference itself when
`deviations` is empty, otherwise the reference with each named convention swapped in. Deviations are built from the
reference's own pieces wherever an identity allows it (row-first order is the transposed column-first iteration;
per-stream RMS is the reference on per-stream-normalised x), so a model differs from the spec only where it names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

import mhc_ref
from mhc_ref._common import compute_dtype_of, projection, sigmoid
from mhc_ref.mhc_coeffs import mat
from mhc_ref.sublayer import ProbeSublayer
from mhc_spec.table import load

SPEC = load()
DEVIATIONS: dict[str, str] = dict(SPEC.conformance["peers"]["deviations"])
LINEAR_CLAMP = 1e-12  # the denominator floor of linear-domain peers (torch F.normalize's default eps)


def _swap(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


# -- Sinkhorn ------------------------------------------------------------------------------------------------------
def _linear_sinkhorn(L: np.ndarray, t_max: int, eps: float, dt: np.dtype) -> np.ndarray:
    """The spec's iteration in the linear domain, as linear peers write it: M = exp(L - colmax), divisions by
    max(sum (+ eps), 1e-12). Underflowed entries stay 0, so at large logits whole rows vanish."""
    L = L.astype(dt)
    M = np.exp(L - np.max(L, axis=-2, keepdims=True))
    tiny, e = dt.type(LINEAR_CLAMP), dt.type(eps)
    M = M / np.maximum(M.sum(-2, keepdims=True), tiny)  # first column step: a column softmax
    if eps > 0:
        M = M + e
    M = M / np.maximum(M.sum(-1, keepdims=True) + e, tiny)
    for _ in range(t_max - 1):
        M = M / np.maximum(M.sum(-2, keepdims=True) + e, tiny)
        M = M / np.maximum(M.sum(-1, keepdims=True) + e, tiny)
    return M


def sinkhorn_model(L, t_max: int, eps: float, deviations: frozenset[str], dt) -> np.ndarray:
    """H_res = Sinkhorn(exp(L)) with the named deviations `row_first` and `linear_domain`."""
    if "row_first" in deviations:  # rows first, columns last == the column-first iteration on the transpose
        return _swap(sinkhorn_model(_swap(L), t_max, eps, deviations - {"row_first"}, dt))
    if "linear_domain" in deviations:
        return _linear_sinkhorn(L, t_max, eps, compute_dtype_of(dt))
    return mhc_ref.sinkhorn(L, t_max, eps, compute_dtype=dt)


def implicit_sinkhorn_vjp(P: np.ndarray, G: np.ndarray) -> np.ndarray:
    """The fixed-point (implicit) gradient d loss / d L from the converged P alone: dL = P * (G - a 1^T - 1 b^T)
    with a, b chosen so that dL has zero row and column sums (the tangent space of the doubly-stochastic set).
    It equals the exact VJP of the truncated iteration only at convergence."""
    n = P.shape[-1]
    Pf, Gf = P.reshape(-1, n, n), G.reshape(-1, n, n)
    out = np.empty_like(Pf)
    for k in range(Pf.shape[0]):
        p, g = Pf[k], Gf[k]
        # rows: sum_j p_ij (g_ij - a_i - b_j) = 0; columns: sum_i p_ij (g_ij - a_i - b_j) = 0
        A = np.block([[np.diag(p.sum(1)), p], [p.T, np.diag(p.sum(0))]])
        rhs = np.concatenate([(p * g).sum(1), (p * g).sum(0)])
        ab = np.linalg.lstsq(A, rhs, rcond=None)[0]
        out[k] = p * (g - ab[:n, None] - ab[None, n:])
    return out.reshape(P.shape)


# -- maps ----------------------------------------------------------------------------------------------------------
def _per_stream_normalised(x: np.ndarray, rms_eps: float) -> np.ndarray:
    """x with every stream scaled to RMS 1 over its own C entries: the spec's n*C RMS of this x is then 1, so the
    reference on it computes sum_k (x_k . phi_k) / r_k, the per-stream RMS that HC-style peers use."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + rms_eps)


def coeffs_model(inputs: Sequence[np.ndarray], opts: dict, deviations: frozenset[str], dt) -> tuple:
    """(H_pre, H_post, H_res) of mhc_coeffs under `opts` with deviations row_first, linear_domain, per_stream_rms."""
    x, phi, alpha, b = (np.asarray(a, compute_dtype_of(dt)) for a in inputs)
    n = x.shape[-2]
    rms_eps = opts["rms_eps"]
    if "per_stream_rms" in deviations:
        x, rms_eps = _per_stream_normalised(x, rms_eps), 0.0
    m, _, _ = projection(x, phi, rms_eps)  # (..., n^2 + 2n)
    scale = np.concatenate([np.full(n, alpha[0]), np.full(n, alpha[1]), np.full(n * n, alpha[2])])
    z = scale * m + b
    h_pre = sigmoid(z[..., :n]) + opts["pre_eps"]
    h_post = opts["post_scale"] * sigmoid(z[..., n:2 * n])
    h_res = sinkhorn_model(mat(z[..., 2 * n:], n, opts["res_layout"]), opts["t_max"], opts["sinkhorn_eps"],
                           deviations, dt)
    return h_pre, h_post, h_res


def _post_res(x, f_out, h_post, h_res, deviations, dt):
    if "transposed_res" in deviations:
        h_res = _swap(h_res)
    return mhc_ref.mhc_post_res(x, f_out, h_post, h_res, compute_dtype=dt)


def layer_model(inputs, opts, deviations, dt) -> tuple:
    """mhc_layer: maps, H_pre x, the probe sublayer, H_res x + H_post^T F."""
    x, phi, alpha, b, w_sub = inputs
    h_pre, h_post, h_res = coeffs_model((x, phi, alpha, b), opts, deviations, dt)
    u = mhc_ref.mhc_pre(x, h_pre, compute_dtype=dt)
    f_out, _ = ProbeSublayer(np.asarray(w_sub, compute_dtype_of(dt))).forward(u)
    return (_post_res(x, f_out, h_post, h_res, deviations, dt),)


def hc_layer_model(inputs, opts, deviations, dt) -> tuple:
    """An HC layer (P Eq. 5) around the probe sublayer: hc_coeffs, H_pre x, F, H_res x + H_post^T F."""
    x, *theta, w_sub = inputs
    h_pre, h_post, h_res = mhc_ref.hc_coeffs(x, *theta, rms_eps=opts["rms_eps"], compute_dtype=dt)
    u = mhc_ref.mhc_pre(x, h_pre, compute_dtype=dt)
    f_out, _ = ProbeSublayer(np.asarray(w_sub, compute_dtype_of(dt))).forward(u)
    return (_post_res(x, f_out, h_post, h_res, deviations, dt),)


def _sinkhorn(inputs, opts, deviations, dt):
    return (sinkhorn_model(inputs[0], opts["t_max"], opts["eps"], deviations, dt),)


def _pre(inputs, opts, deviations, dt):
    return (mhc_ref.mhc_pre(*inputs, compute_dtype=dt),)


def _post(inputs, opts, deviations, dt):
    return (_post_res(*inputs, deviations, dt),)


Model = Callable[[Sequence[np.ndarray], dict, frozenset, str], tuple]

# op compared -> (model, spec op whose options and tolerance class apply, deviations the model can express)
MODELS: dict[str, tuple[Model, str, tuple[str, ...]]] = {
    "sinkhorn": (_sinkhorn, "sinkhorn", ("row_first", "linear_domain")),
    "mhc_coeffs": (coeffs_model, "mhc_coeffs", ("row_first", "linear_domain", "per_stream_rms")),
    "mhc_pre": (_pre, "mhc_pre", ()),
    "mhc_post_res": (_post, "mhc_post_res", ("transposed_res",)),
    "mhc_layer": (layer_model, "mhc_layer", ("row_first", "linear_domain", "per_stream_rms")),
    "hc_layer": (hc_layer_model, "hc_coeffs", ("transposed_res",)),
}



def input_names(op: str) -> tuple[str, ...]:
    """The inputs of a finder op, in order: the spec op's, plus the probe weight for the composed HC layer."""
    names = tuple(a.name for a in SPEC.op(MODELS[op][1]).inputs)
    return names + ("w_sub",) if op == "hc_layer" else names


# backward-only deviations: the forward matches a candidate, the gradient is computed another way
GRADIENT_DEVIATIONS = ("fixed_point_grad",)
