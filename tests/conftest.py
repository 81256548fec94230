"""Shared fixtures of the reference tests (tests/test_ref_*.py).

`rng` is seeded from the test's node id: every test draws its own reproducible stream, and adding a test does not
shift the random inputs of the others.
"""

from __future__ import annotations

import os
import zlib

# Without a GPU, Triton kernels run in its interpreter, which must be chosen before anything imports triton; test
# modules collected before the kernel tests (e.g. the pipeline tests, via torch) import it, so decide here, first.
if "TRITON_INTERPRET" not in os.environ and not os.path.exists("/dev/nvidiactl"):
    os.environ["TRITON_INTERPRET"] = "1"

import numpy as np
import pytest

from mhc_spec.table import load


@pytest.fixture(scope="session")
def spec():
    return load()


@pytest.fixture
def rng(request) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
