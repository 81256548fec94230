"""Packaging: the extras keep a user's own torch (ranges, no pins), CI's pins live in .ci/constraints.txt.

The dry-run test is the issue's "done when": next to an installed torch of another version (a stand-in
`torch-2.5.0.dist-info` put in front of sys.path), `pip install --dry-run ".[torch]"` plans no torch install.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
EXTRAS: dict[str, list[Requirement]] = {
    name: [Requirement(r) for r in reqs] for name, reqs in PROJECT["optional-dependencies"].items()
}
CONSTRAINTS = {r.name: r for r in (Requirement(line.split("#")[0].strip())
                                   for line in (ROOT / ".ci" / "constraints.txt").read_text().splitlines()
                                   if line.split("#")[0].strip())}


def test_extras_declare_ranges_not_pins():
    for extra, reqs in EXTRAS.items():
        for req in reqs:
            pinned = [s for s in req.specifier if s.operator in ("==", "===")]
            assert not pinned, f"extra {extra!r}: {req} pins a version; declare the supported range (CI pins in " \
                               f".ci/constraints.txt)"


def test_ci_pins_lie_inside_the_declared_ranges():
    assert str(CONSTRAINTS["torch"].specifier) == "==2.13.0", "CI tests the torch 2.13.0 CPU build"
    for extra, reqs in EXTRAS.items():
        for req in reqs:
            pin = CONSTRAINTS.get(req.name)
            if pin is None:
                continue
            version = Version(next(iter(pin.specifier)).version)
            assert req.specifier.contains(version, prereleases=True), f"{extra}: {req} excludes CI's {pin}"


def test_torch_range_accepts_older_and_newer_user_builds():
    torch = next(r for r in EXTRAS["torch"] if r.name == "torch")
    for user in ("2.4.0", "2.5.1+cu121", "2.13.0+cpu", "2.14.1"):
        assert torch.specifier.contains(Version(user)), f"{torch} would replace a user's torch {user}"
    triton = next(r for r in EXTRAS["torch"] if r.name == "triton")
    assert triton.marker is not None and not triton.marker.evaluate({"platform_system": "Darwin"}), \
        "triton has Linux wheels only: the requirement needs a platform marker"


def test_conformance_extra_has_what_the_suite_imports():
    names = {r.name for r in EXTRAS["conformance"]}
    assert {"pytest", "hypothesis"} <= names


def test_license_file_and_spdx_expression():
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")


def _fake_dist(site: Path, name: str, version: str) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
    (info / "INSTALLER").write_text("pip\n", encoding="utf-8")
    (info / "RECORD").write_text("", encoding="utf-8")


def test_pip_keeps_an_installed_torch_of_another_version(tmp_path):
    """`pip install --dry-run ".[torch]"` with torch 2.5.0 (and triton 3.2.0) installed: nothing torch-related."""
    setuptools = pytest.importorskip("setuptools")  # the metadata is built without isolation (no index needed)
    if Version(setuptools.__version__) < Version("77"):
        pytest.skip(f"setuptools {setuptools.__version__} is older than the build-system's 77")
    site = tmp_path / "site"
    _fake_dist(site, "torch", "2.5.0")
    _fake_dist(site, "triton", "3.2.0")
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}  # no CI constraints, no find-links
    env.update(PYTHONPATH=os.pathsep.join([str(site), env.get("PYTHONPATH", "")]), PIP_CONFIG_FILE=os.devnull,
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-index",
                           "--no-build-isolation", "--report", str(report), f"{ROOT}[torch]"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    planned = {item["metadata"]["name"].lower(): item["metadata"]["version"]
               for item in json.loads(report.read_text(encoding="utf-8"))["install"]}
    assert "torch" not in planned and "triton" not in planned, f"pip would install {planned}"
    assert "mhc-spec" in planned  # the project itself: the dry run did resolve it
