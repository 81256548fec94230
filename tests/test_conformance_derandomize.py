"""`--derandomize` draws the same examples wherever the suite lies (source checkout or installed copy).

Hypothesis seeds a derandomized parametrized test from pytest's node id, whose path part is relative to the rootdir:
`conformance/test_sinkhorn.py::...` in a checkout, `.../site-packages/mhc_conformance/test_sinkhorn.py::...` from an
installed copy. The plugin seeds from the id inside the package instead; here two runs whose node ids differ only
in that path (rootdir = the checkout, rootdir = /) must print the same draws.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mhc_conformance

PACKAGE = Path(mhc_conformance.__file__).resolve().parent


def _draws(rootdir: Path, cwd: Path, k: str) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "--rootdir", str(rootdir), "--pyargs", "mhc_conformance",
           "--mhc-backend", "numpy", "--mhc-dtypes", "float32", "--derandomize", "--max-examples", "4", "-k", k,
           "-q", "-s", "-p", "no:cacheprovider", "--hypothesis-verbosity=verbose"]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [line for line in proc.stdout.splitlines() if line.startswith("Draw ")]


def test_derandomized_draws_do_not_depend_on_the_rootdir(tmp_path):
    # a test parametrized by a marker (the case Hypothesis keys by node id) and one parametrized by the plugin only
    k = "test_sinkhorn and (test_invariants and nonnegative or test_values)"
    checkout = _draws(PACKAGE.parent, tmp_path, k)
    elsewhere = _draws(Path(PACKAGE.anchor), tmp_path, k)
    assert len(checkout) >= 8, checkout
    assert checkout == elsewhere
