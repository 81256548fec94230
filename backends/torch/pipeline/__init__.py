"""mHC on `torch.distributed.pipelining`: the `torch-pipeline` backend and the model runner.

- `backend` (`PipelineBackend`): the spec op `mhc_stack` split over pipeline ranks (worker processes, gloo).
- `model`: a small mHC Transformer LM and its stages (loop and V layouts, recompute blocks aligned to stages).
- `runner`: one rank's stages and a named schedule (gpipe, 1f1b, interleaved-1f1b, zbv, dualpipev), measurement.
- `overlap`: DualPipeV's OVERLAP_F_B function (the paired forward and backward run concurrently).
- `train`: the torchrun launcher; `check`: the equivalence check against a single process; `costmodel`: the
  schedule simulation at real scale.
"""


def backend():
    """The `torch-pipeline` backend (entry point `mhc_backends.torch.pipeline:backend`)."""
    from .backend import PipelineBackend

    return PipelineBackend()
