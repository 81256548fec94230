"""The torch-pipeline backend off its defaults: interleaved 1F1B with recompute, row padding, empty stages and empty
leading dims, against the eager torch backend (float64); one worker pool serves every call."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mhc_backends.torch import backend as eager_backend  # noqa: E402
from mhc_backends.torch.pipeline.backend import PipelineBackend  # noqa: E402


def case(rng, lead, n, C, L):
    def t(*shape, scale=1.0):
        return torch.tensor(rng.normal(size=shape) * scale)

    return (t(*lead, n, C), t(L, n * C, n * n + 2 * n, scale=0.1), torch.tensor(rng.uniform(0.1, 1.0, (L, 3))),
            t(L, n * n + 2 * n), t(L, C, C)), t(*lead, n, C)


def test_interleaved_with_recompute_matches_eager_and_reuses_workers():
    be = PipelineBackend(world_size=2, schedule="interleaved-1f1b", microbatches=2, recompute_every=4)
    ref = eager_backend()
    rng = np.random.default_rng(0)
    pools = set()
    try:
        # 4 stages: L = 3 leaves an empty stage; L = 8 keeps blocks of 2 (gcd with the stage starts); 5 rows pad to 6
        for lead, n, C, L in [((5,), 4, 8, 8), ((2, 2), 1, 3, 3), ((), 2, 3, 2), ((0, 2), 2, 3, 2)]:
            inputs, g = case(rng, lead, n, C, L)
            y = be.mhc_stack(*inputs)
            assert y.shape == inputs[0].shape
            torch.testing.assert_close(y, ref.mhc_stack(*inputs), rtol=1e-12, atol=1e-12)
            got, want = be.vjp("mhc_stack", inputs, [g]), ref.vjp("mhc_stack", inputs, [g])
            assert set(got) == set(want)
            for k in want:
                torch.testing.assert_close(got[k], want[k], rtol=1e-10, atol=1e-12, msg=k)
            if be._pool is not None:
                pools.add((id(be._pool), tuple(p.pid for p in be._pool.procs)))
        assert len(pools) == 1, pools  # started once, reused
    finally:
        be.close()
