"""Bad calls to every public function of the reference fail at the edge, with the right exception type and a message
that names the argument (and the expected value where the code states one).

Two tables: GENERIC rows are generated for every array argument of every function (a list, an int / object / complex
dtype, NaN, Inf, a 0-d array); SPECIFIC rows cover shapes, stream-count mismatches and options. A call is described as
(function name, replacements of its valid base arguments).
"""

from __future__ import annotations

import numpy as np
import pytest

import mhc_ref
from mhc_ref.model import Stack
from mhc_ref.sublayer import ProbeSublayer

n, C = 3, 2
W = n * n + 2 * n
rng = np.random.default_rng(0)


def r(*shape):
    return rng.standard_normal(shape)


X, PHI, ALPHA, B = r(2, n, C), r(n * C, W), r(3), r(W)
THETA = {"theta_pre": r(C), "theta_post": r(C), "theta_res": r(n, C), "alpha": r(3), "b_pre": r(n),
         "b_post": r(n), "b_res": r(n, n)}
HEAD = {"phi_head": r(n * C, n), "alpha_head": r(1), "b_head": r(n)}
STACK = {"phi": r(2, n * C, W), "alpha": r(2, 3), "b": r(2, W), "w_sub": r(2, C, C)}  # L = 2 layers
G_COEFFS = {"g_h_pre": r(2, n), "g_h_post": r(2, n), "g_h_res": r(2, n, n)}

# Valid base calls: positional arrays (name -> value, in signature order) and keyword options.
BASE = {
    "sinkhorn": ({"logits": r(2, n, n)}, {}),
    "sinkhorn_vjp": ({"logits": r(2, n, n), "g_h_res": r(2, n, n)}, {}),
    "mhc_coeffs": ({"x": X, "phi": PHI, "alpha": ALPHA, "b": B}, {}),
    "mhc_coeffs_vjp": ({"x": X, "phi": PHI, "alpha": ALPHA, "b": B, **G_COEFFS}, {}),
    "mhc_pre": ({"x": X, "h_pre": r(2, n)}, {}),
    "mhc_pre_vjp": ({"x": X, "h_pre": r(2, n), "g_y": r(2, C)}, {}),
    "mhc_post_res": ({"x": X, "f_out": r(2, C), "h_post": r(2, n), "h_res": r(2, n, n)}, {}),
    "mhc_post_res_vjp": ({"x": X, "f_out": r(2, C), "h_post": r(2, n), "h_res": r(2, n, n), "g_y": r(2, n, C)}, {}),
    "mhc_layer": ({"x": X, "phi": PHI, "alpha": ALPHA, "b": B, "w_sub": r(C, C)}, {}),
    "mhc_layer_vjp": ({"x": X, "phi": PHI, "alpha": ALPHA, "b": B, "w_sub": r(C, C), "g_y": r(2, n, C)}, {}),
    "mhc_stack": ({"x": X, **STACK}, {}),
    "mhc_stack_vjp": ({"x": X, **STACK, "g_y": r(2, n, C)}, {}),
    "hc_coeffs": ({"x": X, **THETA}, {}),
    "hc_coeffs_vjp": ({"x": X, **THETA, **G_COEFFS}, {}),
    "expand_streams": ({"h": r(2, C)}, {"n": n}),
    "expand_streams_vjp": ({"h": r(2, C), "g_x": r(2, n, C)}, {"n": n}),
    "collapse_streams": ({"x": X, **HEAD}, {"mode": "head"}),
    "collapse_streams_vjp": ({"x": X, **HEAD, "g_y": r(2, C)}, {"mode": "head"}),
    "amax_gain": ({"h_res": np.abs(r(4, 2, n, n))}, {}),
    "mhc_init": ({"n": n, "C": C}, {}),
    "hc_init": ({"n": n, "C": C, "k": 0}, {}),
    "fixed_maps": ({"n": n}, {"lead": (2,)}),
    "fold_norm_weight": ({"phi": PHI, "gamma": r(n * C)}, {}),
    "from_deepseek": ({"fn": PHI.T.copy(), "scale": ALPHA, "base": B}, {}),
    "to_deepseek": ({"phi": PHI, "alpha": ALPHA, "b": B}, {}),
    "head_from_deepseek": ({"hc_head_fn": r(n, n * C), "hc_head_scale": r(1), "hc_head_base": r(n)}, {}),
    "Stack": ({"n": n, "sublayers": [ProbeSublayer(r(C, C))]},
              {"params": [{"phi": PHI, "alpha": ALPHA, "b": B}], "mode": "mhc"}),
    "ProbeSublayer": ({"w_sub": r(C, C)}, {}),
}
FUNCS = {name: (Stack if name == "Stack" else getattr(mhc_ref, name)) for name in BASE}


def call(func: str, /, **replace):
    args, kwargs = BASE[func]
    pos = [replace.pop(k) if k in replace else v for k, v in args.items()]
    return FUNCS[func](*pos, **{**kwargs, **replace})


def test_base_calls_are_valid():
    for fn in BASE:
        call(fn)


def test_every_public_function_has_rows():
    public = {name for name in mhc_ref.__all__ if name not in ("OPS", "SPEC_VERSION", "FunctionSublayer")}
    assert public <= set(BASE), f"public functions without bad-input rows: {sorted(public - set(BASE))}"


# -- generic rows: every array argument -------------------------------------------------------------------------------
def _with(value, index, entry):
    bad = value.copy()
    bad.flat[index] = entry
    return bad


def _generic_rows():
    for fn, (args, _) in BASE.items():
        for name, value in args.items():
            if not isinstance(value, np.ndarray):
                continue
            yield fn, name, "list", value.tolist(), TypeError, ("numpy.ndarray", "list")
            yield fn, name, "int", np.ones(value.shape, dtype=np.int64), TypeError, ("float dtype", "int64")
            yield fn, name, "object", value.astype(object), TypeError, ("float dtype", "object")
            yield fn, name, "complex", value.astype(np.complex128), TypeError, ("float dtype", "complex128")
            yield fn, name, "nan", _with(value, 0, np.nan), ValueError, ("finite",)
            yield fn, name, "inf", _with(value, value.size - 1, -np.inf), ValueError, ("finite",)
            yield fn, name, "0d", np.array(1.0), ValueError, ("shape", "()")


GENERIC = list(_generic_rows())


@pytest.mark.parametrize("fn,arg,kind,value,exc,words", GENERIC,
                         ids=[f"{fn}-{arg}-{kind}" for fn, arg, kind, *_ in GENERIC])
def test_bad_array(fn, arg, kind, value, exc, words):
    with pytest.raises(exc) as info:
        call(fn, **{arg: value})
    msg = str(info.value)
    assert arg in msg and all(w in msg for w in words), f"{fn}({arg}={kind}): message {msg!r} lacks {arg!r}/{words}"


# -- specific rows: shapes, n, options --------------------------------------------------------------------------------
SPECIFIC = [
    # (id, function, replacements, exception, words the message must contain)
    # shapes and ndim
    ("sinkhorn-not-square", "sinkhorn", {"logits": r(2, 3, 4)}, ValueError, ["logits", "square", "(2, 3, 4)"]),
    ("sinkhorn_vjp-g-shape", "sinkhorn_vjp", {"g_h_res": r(2, 4, 4)}, ValueError, ["g_h_res", "(2, 3, 3)"]),
    ("mhc_coeffs-x-1d", "mhc_coeffs", {"x": r(6)}, ValueError, ["x", "at least 2 dims"]),
    ("mhc_coeffs-phi-rows", "mhc_coeffs", {"phi": r(7, W)}, ValueError, ["phi", "(6, 15)", "(7, 15)"]),
    ("mhc_coeffs-phi-3d", "mhc_coeffs", {"phi": r(1, 6, W)}, ValueError, ["phi", "(6, 15)"]),
    ("mhc_coeffs-phi-n", "mhc_coeffs", {"phi": r(n * C, 8)}, ValueError, ["phi", "n*n+2*n = 15", "8"]),
    ("mhc_coeffs-x-n", "mhc_coeffs", {"x": r(2, 2, 3)}, ValueError, ["phi", "15 columns", "n = 2"]),
    ("mhc_coeffs-alpha", "mhc_coeffs", {"alpha": r(2)}, ValueError, ["alpha", "(3,)", "(2,)"]),
    ("mhc_coeffs-b", "mhc_coeffs", {"b": r(W + 1)}, ValueError, ["b", "(15,)", "(16,)"]),
    ("mhc_coeffs_vjp-g_h_pre", "mhc_coeffs_vjp", {"g_h_pre": r(2, n + 1)}, ValueError, ["g_h_pre", "(2, 3)"]),
    ("mhc_coeffs_vjp-g_h_post", "mhc_coeffs_vjp", {"g_h_post": r(3, n)}, ValueError, ["g_h_post", "(2, 3)"]),
    ("mhc_coeffs_vjp-g_h_res", "mhc_coeffs_vjp", {"g_h_res": r(2, n)}, ValueError, ["g_h_res", "(2, 3, 3)"]),
    ("mhc_pre-h_pre-n", "mhc_pre", {"h_pre": r(2, n + 1)}, ValueError, ["h_pre", "4", "n = 3"]),
    ("mhc_pre-h_pre-lead", "mhc_pre", {"h_pre": r(5, n)}, ValueError, ["h_pre", "(2, 3)", "(5, 3)"]),
    ("mhc_pre_vjp-g_y", "mhc_pre_vjp", {"g_y": r(2, C + 1)}, ValueError, ["g_y", "(2, 2)", "(2, 3)"]),
    ("mhc_post_res-h_res-n", "mhc_post_res", {"h_res": r(2, n, n + 1)}, ValueError, ["h_res", "n = 3"]),
    ("mhc_post_res-h_res-rows", "mhc_post_res", {"h_res": r(2, n + 1, n)}, ValueError, ["h_res", "(2, 3, 3)"]),
    ("mhc_post_res-h_post-n", "mhc_post_res", {"h_post": r(2, n - 1)}, ValueError, ["h_post", "n = 3"]),
    ("mhc_post_res-f_out", "mhc_post_res", {"f_out": r(2, C + 1)}, ValueError, ["f_out", "(2, 2)"]),
    ("mhc_post_res_vjp-g_y", "mhc_post_res_vjp", {"g_y": r(2, C)}, ValueError, ["g_y", "(2, 3, 2)"]),
    ("mhc_layer-w_sub", "mhc_layer", {"w_sub": r(C + 1, C + 1)}, ValueError, ["w_sub", "(2, 2)", "(3, 3)"]),
    ("mhc_layer-w_sub-rect", "mhc_layer", {"w_sub": r(C, C + 1)}, ValueError, ["w_sub", "(C, C)"]),
    ("mhc_layer-phi-n", "mhc_layer", {"phi": r(n * C, 8)}, ValueError, ["phi", "15"]),
    ("mhc_layer_vjp-g_y", "mhc_layer_vjp", {"g_y": r(2, C)}, ValueError, ["g_y", "(2, 3, 2)"]),
    ("mhc_stack-phi-2d", "mhc_stack", {"phi": PHI}, ValueError, ["phi", "(L, n*C, n*n+2*n)", "(6, 15)"]),
    ("mhc_stack-phi-width", "mhc_stack", {"phi": r(2, n * C, 8)}, ValueError, ["phi", "(L, 6, 15)", "(2, 6, 8)"]),
    ("mhc_stack-L0", "mhc_stack", {"phi": r(0, n * C, W)}, ValueError, ["phi", "L >= 1", "(0, 6, 15)"]),
    ("mhc_stack-alpha-L", "mhc_stack", {"alpha": r(3, 3)}, ValueError, ["alpha", "(2, 3)", "(3, 3)", "L = 2"]),
    ("mhc_stack-b-unstacked", "mhc_stack", {"b": B}, ValueError, ["b", "(2, 15)", "(15,)"]),
    ("mhc_stack-w_sub-C", "mhc_stack", {"w_sub": r(2, C + 1, C + 1)}, ValueError, ["w_sub", "(2, 2, 2)", "(2, 3, 3)"]),
    ("mhc_stack-w_sub-L", "mhc_stack_vjp", {"w_sub": r(1, C, C)}, ValueError, ["w_sub", "(L, C, C)", "(1, 2, 2)"]),
    ("mhc_stack-x-n", "mhc_stack", {"x": r(2, 2, C)}, ValueError, ["phi", "(L, 4, 8)", "(2, 6, 15)"]),
    ("mhc_stack_vjp-g_y", "mhc_stack_vjp", {"g_y": r(2, C)}, ValueError, ["g_y", "(2, 3, 2)"]),
    ("mhc_stack-t_max", "mhc_stack", {"t_max": 0}, ValueError, ["t_max", ">= 1"]),
    ("mhc_stack-res_layout", "mhc_stack_vjp", {"res_layout": "T"}, ValueError, ["res_layout", "'T'"]),
    ("mhc_stack-preset", "mhc_stack", {"preset": "v4"}, ValueError, ["preset", "'v4'"]),
    ("hc_coeffs-theta_res", "hc_coeffs", {"theta_res": r(n + 1, C)}, ValueError, ["theta_res", "(3, 2)"]),
    ("hc_coeffs-b_res", "hc_coeffs", {"b_res": r(n, n + 1)}, ValueError, ["b_res", "(3, 3)"]),
    ("hc_coeffs-theta_pre", "hc_coeffs", {"theta_pre": r(C + 1)}, ValueError, ["theta_pre", "(2,)"]),
    ("hc_coeffs-b_pre-n", "hc_coeffs", {"b_pre": r(n + 1)}, ValueError, ["b_pre", "(3,)", "(4,)"]),
    ("hc_coeffs_vjp-g_h_res", "hc_coeffs_vjp", {"g_h_res": r(2, n, n + 1)}, ValueError, ["g_h_res", "(2, 3, 3)"]),
    ("expand_streams_vjp-g_x", "expand_streams_vjp", {"g_x": r(2, n + 1, C)}, ValueError, ["g_x", "(2, 3, 2)"]),
    ("collapse-head-missing", "collapse_streams", {"phi_head": None}, ValueError, ["phi_head", "mode='head'",
                                                                                    "(6, 3)"]),
    ("collapse-head-alpha", "collapse_streams", {"alpha_head": r(2)}, ValueError, ["alpha_head", "(1,)"]),
    ("collapse-head-b-n", "collapse_streams", {"b_head": r(n + 1)}, ValueError, ["b_head", "(3,)"]),
    ("collapse-sum-with-head", "collapse_streams", {"mode": "sum"}, ValueError, ["phi_head", "mode='head'"]),
    ("collapse_vjp-g_y-none", "collapse_streams_vjp", {"g_y": None}, ValueError, ["g_y", "(2, 2)"]),
    ("collapse_vjp-g_y-shape", "collapse_streams_vjp", {"g_y": r(2, C + 1)}, ValueError, ["g_y", "(2, 2)"]),
    ("amax_gain-2d", "amax_gain", {"h_res": r(n, n)}, ValueError, ["h_res", "at least 3 dims"]),
    ("amax_gain-not-square", "amax_gain", {"h_res": r(4, n, n + 1)}, ValueError, ["h_res", "square"]),
    ("fold-gamma", "fold_norm_weight", {"gamma": r(n * C + 1)}, ValueError, ["gamma", "(6,)", "(7,)"]),
    ("from_deepseek-rows", "from_deepseek", {"fn": r(W + 1, n * C)}, ValueError, ["fn", "n*n+2*n"]),
    ("from_deepseek-cols", "from_deepseek", {"fn": r(W, n * C + 1)}, ValueError, ["fn", "n*C", "n = 3"]),
    ("from_deepseek-scale", "from_deepseek", {"scale": r(1)}, ValueError, ["scale", "(3,)"]),
    ("from_deepseek-base", "from_deepseek", {"base": r(W - 1)}, ValueError, ["base", "(15,)"]),
    ("to_deepseek-phi-width", "to_deepseek", {"phi": r(n * C, W + 1)}, ValueError, ["phi", "n*n+2*n"]),
    ("to_deepseek-alpha", "to_deepseek", {"alpha": r(2)}, ValueError, ["alpha", "(3,)"]),
    ("to_deepseek-b", "to_deepseek", {"b": r(W + 2)}, ValueError, ["b", "(15,)"]),
    ("head_from_deepseek-base", "head_from_deepseek", {"hc_head_base": r(n + 1)}, ValueError,
     ["hc_head_base", "(3,)"]),
    ("head_from_deepseek-scale", "head_from_deepseek", {"hc_head_scale": r(3)}, ValueError,
     ["hc_head_scale", "(1,)"]),
    ("head_from_deepseek-fn-cols", "head_from_deepseek", {"hc_head_fn": r(n, n * C + 1)}, ValueError,
     ["hc_head_fn", "n*C"]),
    ("ProbeSublayer-rect", "ProbeSublayer", {"w_sub": r(C, C + 1)}, ValueError, ["w_sub", "square"]),
    # empty stream or channel axis
    ("mhc_coeffs-n0", "mhc_coeffs", {"x": r(2, 0, C), "phi": r(0, 0), "b": r(0)}, ValueError, ["x", ">= 1"]),
    ("mhc_pre-C0", "mhc_pre", {"x": r(2, n, 0)}, ValueError, ["x", ">= 1"]),
    ("sinkhorn-n0", "sinkhorn", {"logits": r(2, 0, 0)}, ValueError, ["logits", ">= 1"]),
    # t_max
    ("t_max-0", "sinkhorn", {"t_max": 0}, ValueError, ["t_max", ">= 1", "0"]),
    ("t_max-neg", "sinkhorn", {"t_max": -1}, ValueError, ["t_max", ">= 1", "-1"]),
    ("t_max-float", "sinkhorn", {"t_max": 2.5}, TypeError, ["t_max", "int", "2.5"]),
    ("t_max-bool", "sinkhorn", {"t_max": True}, TypeError, ["t_max", "int", "True"]),
    ("t_max-str", "mhc_coeffs", {"t_max": "20"}, TypeError, ["t_max", "int"]),
    ("t_max-vjp", "sinkhorn_vjp", {"t_max": 0}, ValueError, ["t_max", ">= 1"]),
    ("t_max-coeffs-vjp", "mhc_coeffs_vjp", {"t_max": -3}, ValueError, ["t_max", ">= 1"]),
    ("t_max-layer", "mhc_layer", {"t_max": 1.0}, TypeError, ["t_max", "int"]),
    # epsilons and scales
    ("eps-neg", "sinkhorn", {"eps": -1e-6}, ValueError, ["eps", ">= 0"]),
    ("eps-nan", "sinkhorn", {"eps": float("nan")}, ValueError, ["eps", "finite"]),
    ("eps-str", "sinkhorn", {"eps": "0"}, TypeError, ["eps", "real number"]),
    ("sinkhorn_eps-neg", "mhc_coeffs", {"sinkhorn_eps": -1.0}, ValueError, ["sinkhorn_eps", ">= 0"]),
    ("pre_eps-neg", "mhc_layer", {"pre_eps": -1e-3}, ValueError, ["pre_eps", ">= 0"]),
    ("post_scale-neg", "mhc_coeffs", {"post_scale": -2.0}, ValueError, ["post_scale", ">= 0"]),
    ("post_scale-inf", "mhc_coeffs_vjp", {"post_scale": float("inf")}, ValueError, ["post_scale", "finite"]),
    ("rms_eps-nan", "mhc_coeffs", {"rms_eps": float("nan")}, ValueError, ["rms_eps", "finite"]),
    ("rms_eps-nan-hc", "hc_coeffs", {"rms_eps": float("nan")}, ValueError, ["rms_eps", "finite"]),
    ("rms_eps-neg-head", "collapse_streams", {"rms_eps": -1.0}, ValueError, ["rms_eps", ">= 0"]),
    ("rms_eps-bool", "mhc_layer_vjp", {"rms_eps": True}, TypeError, ["rms_eps", "real number"]),
    # strings
    ("preset-unknown", "mhc_coeffs", {"preset": "deepseek_v3"}, ValueError, ["preset", "deepseek_v4", "paper"]),
    ("preset-unknown-sinkhorn", "sinkhorn", {"preset": "Paper"}, ValueError, ["preset", "'Paper'"]),
    ("preset-unknown-layer", "mhc_layer", {"preset": "v4"}, ValueError, ["preset", "'v4'"]),
    ("preset-unknown-hc", "hc_coeffs", {"preset": "x"}, ValueError, ["preset"]),
    ("preset-int", "mhc_coeffs", {"preset": 4}, TypeError, ["preset", "str"]),
    ("res_layout-unknown", "mhc_coeffs", {"res_layout": "column_major"}, ValueError,
     ["res_layout", "row_major", "col_major", "'column_major'"]),
    ("res_layout-unknown-layer", "mhc_layer_vjp", {"res_layout": "T"}, ValueError, ["res_layout", "'T'"]),
    ("mode-unknown", "collapse_streams", {"mode": "mean"}, ValueError, ["mode", "sum", "head", "'mean'"]),
    ("mode-unknown-vjp", "collapse_streams_vjp", {"mode": "max"}, ValueError, ["mode", "'max'"]),
    ("compute_dtype-unknown", "mhc_pre", {"compute_dtype": "float8"}, ValueError, ["compute_dtype", "float8"]),
    ("compute_dtype-int", "sinkhorn", {"compute_dtype": np.int32}, ValueError, ["compute_dtype", "int32"]),
    ("unexpected-option", "mhc_coeffs", {"eps": 1e-6}, TypeError, ["eps"]),
    # n and init helpers
    ("expand-n0", "expand_streams", {"n": 0}, ValueError, ["n", ">= 1"]),
    ("expand-n-float", "expand_streams", {"n": 4.0}, TypeError, ["n", "int"]),
    ("expand_vjp-n-bool", "expand_streams_vjp", {"n": True}, TypeError, ["n", "int"]),
    ("mhc_init-n0", "mhc_init", {"n": 0}, ValueError, ["n", ">= 1"]),
    ("mhc_init-C-float", "mhc_init", {"C": 2.0}, TypeError, ["C", "int"]),
    ("mhc_init-scheme", "mhc_init", {"scheme": "xavier"}, ValueError, ["scheme", "prenorm", "'xavier'"]),
    ("mhc_init-alpha-nan", "mhc_init", {"alpha": float("nan")}, ValueError, ["alpha", "finite"]),
    ("mhc_init-phi_std-neg", "mhc_init", {"phi_std": -0.02}, ValueError, ["phi_std", ">= 0"]),
    ("mhc_init-res_offdiag-neg", "mhc_init", {"res_offdiag": -8.0}, ValueError, ["res_offdiag", ">= 0"]),
    ("hc_init-k-neg", "hc_init", {"k": -1}, ValueError, ["k", ">= 0"]),
    ("hc_init-n-bool", "hc_init", {"n": True}, TypeError, ["n", "int"]),
    ("hc_init-alpha-str", "hc_init", {"alpha": "0.01"}, TypeError, ["alpha", "real number"]),
    ("fixed_maps-n0", "fixed_maps", {"n": 0}, ValueError, ["n", ">= 1"]),
    ("fixed_maps-lead", "fixed_maps", {"lead": 2}, TypeError, ["lead", "tuple"]),
    ("fixed_maps-lead-neg", "fixed_maps", {"lead": (2, -1)}, ValueError, ["lead", "(2, -1)"]),
    ("Stack-mode", "Stack", {"mode": "dense"}, ValueError, ["mode", "residual", "'dense'"]),
    ("Stack-params-count", "Stack", {"params": []}, ValueError, ["params", "1 sublayers"]),
    ("Stack-preset", "Stack", {"preset": "v4"}, ValueError, ["preset", "'v4'"]),
    ("Stack-n0", "Stack", {"n": 0}, ValueError, ["n", ">= 1"]),
]


@pytest.mark.parametrize("fn,replace,exc,words", [row[1:] for row in SPECIFIC], ids=[row[0] for row in SPECIFIC])
def test_bad_call(fn, replace, exc, words):
    with pytest.raises(exc) as info:
        call(fn, **replace)
    msg = str(info.value)
    missing = [w for w in words if w not in msg]
    assert not missing, f"{fn}({', '.join(replace)}): message {msg!r} lacks {missing}"
