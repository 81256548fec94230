"""The asv dashboard renders from the file system in headless Chromium: built by `asv publish` from the committed
benchmark snapshot, its JavaScript vendored and its data embedded by benchmarks.offline_assets, as `nox -s bench`
does. Skipped without Chromium (`apt-get install chromium`), asv, or a reachable npm registry."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/ is a folder of the checkout, not installed
from benchmarks import dashboard_check, offline_assets  # noqa: E402

pytest.importorskip("asv")
pytestmark = pytest.mark.skipif(dashboard_check.browser() is None, reason="no Chromium (apt-get install chromium)")


def _publish(tmp_path: Path) -> Path:
    """asv publish of the newest committed snapshot into tmp_path/html."""
    complete = [d for d in ROOT.glob("benchmarks/results/*")
                if all((d / f).is_file() for f in ("asv-result.json", "machine.json", "benchmarks.json"))]
    if not complete:
        pytest.skip("no committed benchmark snapshot with asv-result.json, machine.json and benchmarks.json")
    snapshot = max(complete, key=lambda d: json.loads((d / "meta.json").read_text())["date"]
                   if (d / "meta.json").is_file() else "")  # the newest run (names are commit hashes)
    machine = json.loads((snapshot / "machine.json").read_text())["machine"]
    results = tmp_path / "results"
    (results / machine).mkdir(parents=True)
    shutil.copy(snapshot / "machine.json", results / machine / "machine.json")
    shutil.copy(snapshot / "asv-result.json", results / machine / "snapshot-existing.json")
    shutil.copy(snapshot / "benchmarks.json", results / "benchmarks.json")
    conf = json.loads(re.sub(r"^\s*//.*$", "", (ROOT / "benchmarks" / "asv.conf.json").read_text(), flags=re.M))
    conf.update(repo=str(ROOT), results_dir=str(results), html_dir=str(tmp_path / "html"),
                benchmark_dir=str(ROOT / "benchmarks"))
    (tmp_path / "asv.conf.json").write_text(json.dumps(conf))
    proc = subprocess.run([sys.executable, "-m", "asv", "publish", "--config", str(tmp_path / "asv.conf.json")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return tmp_path / "html"


def test_dashboard_renders_from_file_with_data_on_every_default_view(tmp_path):
    html = _publish(tmp_path)
    if not offline_assets.localize(html):
        pytest.skip("the dashboard's JavaScript could not be fetched (npm registry unreachable)")
    assert offline_assets.file_openable(html) > 0
    assert 'crossorigin' not in (html / "index.html").read_text()
    ok, findings, legend = dashboard_check.check(html, tmp_path / "grid.png")
    assert ok, findings
    # the snapshot holds bfloat16 (no data on CPU) first and a liger-kernel impl that never ran: neither is shown
    assert legend and not any("liger-kernel" in line or "bfloat16" in line for line in legend), legend
    assert (tmp_path / "grid.png").stat().st_size > 10_000
