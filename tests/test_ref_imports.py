"""Importing the spec, the reference and the backend registry, and listing backends, imports no framework
(brief: frameworks are imported only when a backend is selected). Checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

FRAMEWORKS = ("torch", "jax", "jaxlib", "triton", "tensorflow", "flax")

CHILD = """
import json, sys
{imports}
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {frameworks!r} or m == 'numpy')))
"""


def loaded_modules(imports: str, tmp_path) -> list[str]:
    code = CHILD.format(imports=imports, frameworks=FRAMEWORKS)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"child failed:\n{out.stderr}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_reference_and_registry_import_no_framework(tmp_path):
    mods = loaded_modules("import mhc_ref, mhc_spec.table, mhc_backends\n"
                          "import mhc_backends._contract, mhc_backends._config, mhc_backends._deepseek\n"
                          "found = mhc_backends.available_backends()\n"
                          "assert {'numpy', 'torch'} <= set(found), sorted(found)\n"
                          "mhc_backends.load_backend('numpy')", tmp_path)
    heavy = [m for m in mods if m != "numpy"]
    assert not heavy, f"importing mhc_ref / mhc_spec / mhc_backends or loading 'numpy' imported {heavy}"


def test_spec_loader_is_stdlib_only(tmp_path):
    mods = loaded_modules("import mhc_spec.table\nmhc_spec.table.load()", tmp_path)
    assert not mods, f"mhc_spec.table imported {mods}"
