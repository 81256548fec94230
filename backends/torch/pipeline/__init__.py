"""The `torch-pipeline` backend and the mHC model runner on `torch.distributed.pipelining` (see `runner`)."""
