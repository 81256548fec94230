"""`python -m mhc_backends`: a readable listing that imports no framework unless `--load` is given."""

from __future__ import annotations

import subprocess
import sys

from mhc_backends import available_backends, load_backend

LIST_AND_REPORT_IMPORTS = (
    "import sys, contextlib, io\n"
    "from mhc_backends.__main__ import main\n"
    "out = io.StringIO()\n"
    "with contextlib.redirect_stdout(out): rc = main(sys.argv[1:])\n"
    "print(out.getvalue()); print('RC', rc)\n"
    "print('IMPORTED', sorted(m for m in ('torch', 'jax', 'triton') if m in sys.modules))\n"
)


def _run(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-c", LIST_AND_REPORT_IMPORTS, *args], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_listing_names_every_backend_with_its_package_and_imports_no_framework():
    out = _run()
    for name, ep in available_backends().items():
        line = next(ln for ln in out.splitlines() if ln.split()[:1] == [name])
        assert ep.value in line and ep.dist.name in line and ep.dist.version in line, line
    assert "IMPORTED []" in out and "RC 0" in out


def test_load_shows_what_the_backend_claims():
    out = _run("--load", "numpy")
    caps = load_backend("numpy").capabilities
    assert f"ops ({len(caps.ops)}): {', '.join(sorted(caps.ops))}" in out
    assert f"dtypes: {', '.join(sorted(caps.dtypes))};" in out
    assert "RC 0" in out


def test_unknown_name_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "mhc_backends", "no-such-backend"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "not installed: no-such-backend" in proc.stderr
