"""The framework-free half of the ops' input contract: the shape arithmetic of every op's public edge and its error
messages (argument, expected, got), written once for the torch and the jax backends.

A backend checks each array's type, dtype, device and finiteness with its own `_checks`; the functions here read only
`.shape` / `.ndim` and Python ints (no int() of a dim: torch.compile's symbolic sizes stay symbolic), so importing
this module imports no framework. The `*_shapes` functions map each companion argument of x to
(expected shape, why), `why` being the text after the expected shape in the message (" for x of shape (2, 3, 4)");
they raise where a shape is wrong in a way the plain "must have shape" message would not explain.
"""

from __future__ import annotations

import math

Shapes = dict[str, tuple[tuple[int, ...], str]]


def check_shape(name: str, a, expected: tuple[int, ...], op: str, why: str = "") -> None:
    if tuple(a.shape) != tuple(expected):
        raise ValueError(f"{op}: {name} must have shape {tuple(expected)}{why}, got {tuple(a.shape)}")


def check_choice(name: str, value, choices: tuple[str, ...], op: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{op}: {name} must be one of {list(choices)}, got {value!r}")
    return value


def stream_dims(name: str, x, op: str) -> tuple[int, int]:
    """(n, C) of x (..., n, C), an array of >= 2 dims; n >= 1 and C >= 1 (empty leading dims give empty results)."""
    if x.shape[-2] < 1 or x.shape[-1] < 1:
        raise ValueError(f"{op}: {name} must be (..., n, C) with n >= 1 and C >= 1, got shape {tuple(x.shape)}")
    return x.shape[-2], x.shape[-1]


def module_state(name: str, x, n: int, dim: int | None, where: str) -> None:
    """A layer module's input x (..., n, C) with the module's n and, where it has one, C = dim; an array."""
    if x.ndim < 2 or x.shape[-2] != n or (dim is not None and x.shape[-1] != dim):
        C = dim if dim is not None else "C"
        raise ValueError(f"{where}: {name} must have shape (..., n, C) = (..., {n}, {C}), got {tuple(x.shape)}")


def square_dim(name: str, a, op: str) -> int:
    """n of a (..., n, n), an array of >= 2 dims, with n >= 1 (Sinkhorn's logits)."""
    if a.shape[-1] != a.shape[-2]:
        raise ValueError(f"{op}: {name} must be square in its last two dims (..., n, n), got shape {tuple(a.shape)}")
    if a.shape[-1] < 1:
        raise ValueError(f"{op}: {name} must be (..., n, n) with n >= 1, got shape {tuple(a.shape)}")
    return a.shape[-1]


def check_all(check_like_x, x, arrays: dict, shapes: Shapes, op: str) -> None:
    """The backend's companion check `check_like_x(name, a, x, expected, op, why)` on each of `arrays` (name ->
    array) that `shapes` names."""
    for name, a in arrays.items():
        if name in shapes:
            expected, why = shapes[name]
            check_like_x(name, a, x, expected, op, why)


def embedding_dim(name: str, h, op: str) -> int:
    """C of h (..., C), an array of >= 1 dim, with C >= 1 (expand_streams)."""
    if h.shape[-1] < 1:
        raise ValueError(f"{op}: {name} must be (..., C) with C >= 1, got shape {tuple(h.shape)}")
    return h.shape[-1]


def check_gain_maps(name: str, h_res, op: str) -> None:
    """amax_gain's h_res (L, ..., n, n), an array of >= 3 dims: square maps, and not empty (the gains are means over
    tokens: undefined for none)."""
    if h_res.shape[-1] != h_res.shape[-2]:
        raise ValueError(f"{op}: {name} must be (L, ..., n, n) with square maps, got shape {tuple(h_res.shape)}")
    if math.prod(h_res.shape) == 0:
        raise ValueError(f"{op}: {name} must hold at least one layer, one token and n >= 1, got shape "
                         f"{tuple(h_res.shape)}")


def _for_x(x) -> str:
    return f" for x of shape {tuple(x.shape)}"


def pre_shapes(x) -> Shapes:
    """mhc_pre: h_pre (..., n)."""
    return {"h_pre": (tuple(x.shape[:-1]), " (the leading dims of x, then n)")}


def post_res_shapes(x) -> Shapes:
    """mhc_post_res: f_out (..., C), h_post (..., n), h_res (..., n, n)."""
    lead, (n, C) = tuple(x.shape[:-2]), x.shape[-2:]
    return {"f_out": (lead + (C,), _for_x(x)), "h_post": (lead + (n,), _for_x(x)), "h_res": (lead + (n, n), _for_x(x))}


def coeffs_shapes(x, phi, op: str) -> Shapes:
    """mhc_coeffs (and one layer of mhc_layer): phi (n*C, n*n+2*n), alpha (3,), b (n*n+2*n,); phi an array."""
    n, C = x.shape[-2:]
    width = n * n + 2 * n
    if phi.ndim != 2 or phi.shape[0] != n * C:
        raise ValueError(f"{op}: phi must have shape (n*C, n*n+2*n) = ({n * C}, {width}) for x of shape "
                         f"{tuple(x.shape)} (n = {n}, C = {C}), got {tuple(phi.shape)}")
    if phi.shape[1] != width:
        raise ValueError(f"{op}: phi has {phi.shape[1]} columns, expected n*n+2*n = {width} for n = {n} "
                         f"(from x of shape {tuple(x.shape)})")
    return {"phi": ((n * C, width), ""), "alpha": ((3,), ""), "b": ((width,), f" = (n*n+2*n,) for n = {n}")}


def stack_shapes(x, phi, op: str) -> tuple[int, Shapes]:
    """mhc_stack: L from phi (L, n*C, n*n+2*n), an array; alpha (L, 3), b (L, n*n+2*n), w_sub (L, C, C)."""
    n, C = x.shape[-2:]
    width = n * n + 2 * n
    if phi.ndim != 3 or tuple(phi.shape[1:]) != (n * C, width):
        raise ValueError(f"{op}: phi must have shape (L, n*C, n*n+2*n) = (L, {n * C}, {width}) for x of shape "
                         f"{tuple(x.shape)} (n = {n}, C = {C}), got {tuple(phi.shape)}")
    L = phi.shape[0]
    if L < 1:
        raise ValueError(f"{op}: phi must stack L >= 1 layers, got shape {tuple(phi.shape)}")
    where = f" (L = {L} from phi, n = {n}, C = {C} from x)"
    return L, {"phi": ((L, n * C, width), ""), "alpha": ((L, 3), " = (L, 3)" + where),
               "b": ((L, width), " = (L, n*n+2*n)" + where), "w_sub": ((L, C, C), " = (L, C, C)" + where)}


def hc_shapes(x) -> Shapes:
    """hc_coeffs: the HC baseline's theta_pre, theta_post (C,), theta_res (n, C), alpha (3,), b_pre, b_post (n,),
    b_res (n, n), in the op's argument order."""
    n, C = x.shape[-2:]
    shapes = {"theta_pre": (C,), "theta_post": (C,), "theta_res": (n, C), "alpha": (3,), "b_pre": (n,),
              "b_post": (n,), "b_res": (n, n)}
    return {name: (shape, _for_x(x)) for name, shape in shapes.items()}


COLLAPSE_MODES = ("sum", "head")


def collapse_shapes(x, heads: dict, mode, op: str) -> Shapes:
    """collapse_streams: the head arrays `heads` (name -> array or None) must be None for mode 'sum' and given for
    mode 'head': phi_head (n*C, n), alpha_head (1,), b_head (n,). Returns the shapes of the arrays to check."""
    check_choice("mode", mode, COLLAPSE_MODES, op)
    n, C = x.shape[-2:]
    if mode == "sum":
        for name, v in heads.items():
            if v is not None:
                raise ValueError(f"{op}: {name} is only used with mode='head', got an array with mode='sum'")
        return {}
    shapes = {"phi_head": (n * C, n), "alpha_head": (1,), "b_head": (n,)}
    for name, shape in shapes.items():
        if heads[name] is None:
            raise ValueError(f"{op}: mode='head' requires {name} of shape {shape}, got None")
    return {name: (shape, _for_x(x)) for name, shape in shapes.items()}
