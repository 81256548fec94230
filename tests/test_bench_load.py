"""The benchmark report says when the machine was loaded and when the run happened (not the commit's date)."""

from __future__ import annotations

import json
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/ is a folder of the checkout, not installed
from benchmarks import load, report  # noqa: E402

IDLE = {"best_s": 0.020, "median_s": 0.021, "slowdown": 1.05}
BUSY = {"best_s": 0.020, "median_s": 0.050, "slowdown": 2.5}


def test_load_average_above_the_cores_marks_the_run_loaded():
    quiet = load.summary(IDLE, IDLE, [1.9, 2.1], cpus=2)
    assert not quiet["loaded"] and load.warning(quiet) is None
    busy = load.summary(IDLE, IDLE, [15.0, 16.0], cpus=2)
    assert busy["loaded"] and "load average 15.5 on 2 CPUs" in load.warning(busy)


def test_a_slow_calibration_loop_marks_the_run_loaded():
    s = load.summary(IDLE, BUSY, [1.0], cpus=2)
    assert s["loaded"] and "2.5x slower" in s["reasons"][0]


def test_calibration_reports_best_median_and_their_ratio():
    c = load.calibrate(repeats=3)
    assert 0 < c["best_s"] <= c["median_s"] and c["slowdown"] >= 1.0


def _result_with_dates(tmp_path: Path, run: datetime, committed: datetime) -> Path:
    snapshot = max(ROOT.glob("benchmarks/results/*/asv-result.json"), key=lambda p: p.stat().st_mtime).parent
    data = json.loads((snapshot / "asv-result.json").read_text())
    data["date"] = int(committed.timestamp() * 1000)
    col = data["result_columns"].index("started_at")
    for row in data["results"].values():
        if len(row) > col:
            row[col] = int(run.timestamp() * 1000)
    (tmp_path / "r.json").write_text(json.dumps(data))
    shutil.copy(snapshot / "machine.json", tmp_path / "machine.json")
    return tmp_path / "r.json"


def test_report_header_shows_the_run_date_and_the_load_warning(tmp_path):
    path = _result_with_dates(tmp_path, datetime(2026, 3, 4, 5, 6, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC))
    busy = load.summary(IDLE, IDLE, [15.0], cpus=2)
    text = report.markdown(path, report.records(path), load=busy)
    assert text.startswith("**WARNING: the machine was loaded")
    assert "Run 2026-03-04 05:06 UTC" in text and "committed 2025-01-02" in text
    assert "unreliable" in text.split("Targets", 1)[1] or "not measured" in text.split("Targets", 1)[1]
    assert not report.markdown(path, report.records(path), load=load.summary(IDLE, IDLE, [1.0], cpus=2)) \
        .startswith("**WARNING")
