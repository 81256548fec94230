"""The jnp JAX backend `jax` (work in progress: the ops land one file per spec op next to this module)."""

from __future__ import annotations

from mhc_spec.table import load

from ..base import Backend, Capabilities

SPEC = load()


class JaxBackend(Backend):
    name = "jax"
    op_functions = {}
    capabilities = Capabilities(ops=frozenset(), dtypes=frozenset(SPEC.conformance["dtypes"]), grad_ops=frozenset())

    def from_numpy(self, array, dtype):
        raise NotImplementedError

    def to_numpy(self, value):
        raise NotImplementedError


def backend() -> JaxBackend:
    return JaxBackend()
