"""Adapter for lucidrains' `hyper-connections` (its mHC, mHC v2 and HC layers, and its Sinkhorn functions).

Its layers compute each stream's map logits from that stream alone: a per-stream RMSNorm over C (F.normalize, gamma
zero-initialised so the weight is 1) and one projection of C entries shared by all streams, plus static logits. In the
spec's terms that is a phi whose only nonzero blocks sit on the diagonal, equal across streams; the drawer below
builds exactly such phi, and `run` reads the peer's parameters back out of it, so the finder compares the layers on
the part of the spec's space the peer can express. Outside it (any phi coupling streams) the peer cannot represent
the spec's maps at all: declared as `maps_from_C`.

Layouts: mHC v1 and HC fold the streams into the batch ((B*n), T, C); mHC v2 keeps them beside C (B, T, n, C).
"""

from __future__ import annotations

from importlib.metadata import version

import numpy as np
import torch

from mhc_spec.table import load

from . import draws
from ._torch import autograd_vjp, numpy, tensors
from .finder import Subject

DISTRIBUTION = "hyper-connections"
SPEC = load()
TOKENS = int(SPEC.conformance["peers"]["tokens"])
N, C = draws.N, draws.C
PROBE_EPS = float(SPEC.conformance["probe_rms_eps"])


def probe(u: torch.Tensor, w_sub: torch.Tensor) -> torch.Tensor:
    """The spec's probe sublayer F(u) = tanh(rmsnorm(u) @ w_sub), as the peer's branch."""
    return torch.tanh(u * torch.rsqrt(u.square().mean(-1, keepdim=True) + PROBE_EPS) @ w_sub)


# -- parameters: the spec's phi, alpha, b restricted to per-stream shared projections ----------------------------
def _draw_mhc(rng, scale):
    """Spec inputs (x, phi, alpha, b, w_sub) whose phi the peer can express: blocks W on the diagonal."""
    w = rng.standard_normal((C, 2 + N)) / np.sqrt(C)  # columns: pre, post, res to stream t
    phi = np.zeros((N * C, N * N + 2 * N))
    for s in range(N):
        rows = slice(s * C, (s + 1) * C)
        phi[rows, s], phi[rows, N + s] = w[:, 0], w[:, 1]
        phi[rows, 2 * N + s * N: 2 * N + (s + 1) * N] = w[:, 2:]  # row_major: logit (s, t) at s*n + t
    x = rng.standard_normal((TOKENS, N, C))
    alpha = np.full(3, scale / 2)
    b = rng.standard_normal(N * N + 2 * N) * scale / 2
    return draws.rounded([x, phi, alpha, b, rng.standard_normal((C, C)) / np.sqrt(C)], "float32")


def _read_mhc(phi, alpha, b):
    """(W_pre, W_post, W_res (C, n), alpha, b) from a block-diagonal phi; ValueError if phi couples streams."""
    w_pre, w_post, w_res = phi[:C, 0], phi[:C, N], phi[:C, 2 * N:3 * N]
    rebuilt = np.zeros_like(phi)
    for s in range(N):
        rows = slice(s * C, (s + 1) * C)
        rebuilt[rows, s], rebuilt[rows, N + s], rebuilt[rows, 2 * N + s * N: 2 * N + (s + 1) * N] = w_pre, w_post, w_res
    if not np.array_equal(rebuilt, phi):
        raise ValueError("hyper-connections cannot express this phi: its maps come from each stream's own C entries "
                         "through one projection shared by all streams (block-diagonal phi with equal blocks)")
    return w_pre, w_post, w_res


def _mhc_layer(v2: bool, log_domain: bool):
    if v2:
        from hyper_connections.mHCv2 import ManifoldConstrainedHyperConnections as Layer
    else:
        from hyper_connections.manifold_constrained_hyper_connections import (
            ManifoldConstrainedHyperConnections as Layer,
        )

    def fn(x, phi, alpha, b, w_sub):
        w_pre, w_post, w_res = _read_mhc(*(numpy(t) for t in (phi, alpha, b)))
        layer = Layer(N, dim=C, layer_index=0, log_domain_sinkhorn=log_domain).double()
        a, bb = numpy(alpha), numpy(b)
        with torch.no_grad():
            layer.static_alpha[:, 0] = torch.tensor(bb[:N])
            layer.static_alpha[:, 1:] = torch.tensor(bb[2 * N:].reshape(N, N))  # (s, t): logit of stream s -> t
            layer.dynamic_alpha_fn[0, :, 0] = torch.tensor(w_pre)
            layer.dynamic_alpha_fn[0, :, 1:] = torch.tensor(w_res)
            layer.pre_branch_scale.fill_(a[0]), layer.residual_scale.fill_(a[2]), layer.h_post_scale.fill_(a[1])
            layer.static_beta.copy_(torch.tensor(bb[N:2 * N]).reshape(layer.static_beta.shape))
            layer.dynamic_beta_fn.copy_(torch.tensor(w_post).reshape(layer.dynamic_beta_fn.shape))
        layer = layer.to(x.dtype)
        T = x.shape[0]
        folded = x.reshape(T, 1, N, C) if v2 else x.reshape(T * N, 1, C)  # v1: streams folded into the batch
        branch_input, add_residual = layer(folded)
        return add_residual(probe(branch_input, w_sub)).reshape(T, N, C)

    return fn


def _hc_layer(x, theta_pre, theta_post, theta_res, alpha, b_pre, b_post, b_res, w_sub):
    from hyper_connections.hyper_connections import HyperConnections

    a = numpy(alpha)
    if a[0] != a[2]:
        raise ValueError("hyper-connections HC cannot express alpha_pre != alpha_res (one dynamic_alpha_scale)")
    layer = HyperConnections(N, dim=C, layer_index=0, tanh=True)
    with torch.no_grad():
        layer.static_alpha[:, 0] = b_pre
        layer.static_alpha[:, 1:] = b_res.T  # H_res[t, s] = static_alpha[s, 1 + t]
        layer.dynamic_alpha_fn[:, 0] = theta_pre
        layer.dynamic_alpha_fn[:, 1:] = theta_res.T
        layer.dynamic_alpha_scale.fill_(a[0]), layer.dynamic_beta_scale.fill_(a[1])
        layer.static_beta.copy_(b_post), layer.dynamic_beta_fn.copy_(theta_post)
    layer = layer.to(x.dtype)
    T = x.shape[0]
    branch_input, add_residual = layer(x.reshape(T * N, 1, C))
    return add_residual(probe(branch_input, w_sub)).reshape(T, N, C)


def _draw_hc(rng, scale):
    arrays = draws.draw("hc_layer", rng, scale, TOKENS, "float32")
    arrays[4] = np.full(3, arrays[4][0])  # one scale for pre and res
    return arrays


def _sinkhorn(v2: bool, log_domain: bool):
    def fn(logits):
        if v2:
            from hyper_connections import mHCv2 as mod
        else:
            from hyper_connections import manifold_constrained_hyper_connections as mod
        return (mod.log_domain_sinkhorn_knopps if log_domain else mod.sinkhorn_knopps)(logits, iters=20)

    return fn


def _subject(variant, op, fn, names, drawer, declared=(), dtype="float32") -> Subject:
    def run(inputs):
        with torch.no_grad():
            return (numpy(fn(*tensors(inputs, dtype))),)

    def vjp(inputs, cot):  # gradients of the inputs the peer takes as tensors (x, w_sub; logits)
        return autograd_vjp(fn, names, inputs, cot, dtype)

    return Subject(f"{DISTRIBUTION} {version(DISTRIBUTION)}", variant, op, run, drawer, vjp, dtype, declared)


def subjects() -> list[Subject]:
    out = []
    for v2 in (False, True):
        tag = "mHCv2" if v2 else "mHC"
        for log_domain in (False, True):
            dom = "log_domain_sinkhorn_knopps" if log_domain else "sinkhorn_knopps"
            out.append(_subject(f"{tag} {dom}", "sinkhorn", _sinkhorn(v2, log_domain), ("logits",),
                                lambda rng, s: draws.draw("sinkhorn", rng, s, TOKENS, "float32")))
        for log_domain in (False, True):
            out.append(_subject(f"{tag} layer{' (log_domain_sinkhorn=True)' if log_domain else ''}", "mhc_layer",
                                _mhc_layer(v2, log_domain), ("x", "phi", "alpha", "b", "w_sub"), _draw_mhc,
                                declared=("maps_from_C",)))
    out.append(_subject("HC layer (tanh=True)", "hc_layer", _hc_layer,
                        ("x", "theta_pre", "theta_post", "theta_res", "alpha", "b_pre", "b_post", "b_res", "w_sub"),
                        _draw_hc))
    return out


# -- as a conformance backend: its default Sinkhorn (`--mhc-backend mhc_conformance.peers.hyper_connections:backend`)
def _sinkhorn_op(logits, *, t_max, eps):
    if eps != 0:
        raise NotImplementedError(f"hyper-connections' Sinkhorn has no epsilon; cannot express eps={eps!r}")
    from hyper_connections.manifold_constrained_hyper_connections import sinkhorn_knopps

    return sinkhorn_knopps(logits, iters=t_max)


def backend():
    """hyper-connections' default (linear-domain) `sinkhorn_knopps` as the spec's sinkhorn op."""
    from mhc_backends.base import Capabilities
    from mhc_backends.torch.backend import TorchBackend

    class HyperConnectionsBackend(TorchBackend):
        name = f"peer:{DISTRIBUTION}"
        op_functions = {"sinkhorn": _sinkhorn_op}
        capabilities = Capabilities(ops=frozenset({"sinkhorn"}), dtypes=frozenset({"float32"}),
                                    grad_ops=frozenset({"sinkhorn"}), devices=("cpu", "cuda"))

        def versions(self):
            return {**super().versions(), DISTRIBUTION: version(DISTRIBUTION)}

    return HyperConnectionsBackend()
