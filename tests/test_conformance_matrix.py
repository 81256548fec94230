"""The matrix explains itself: legend, 'not claimed' for ops a backend does not declare, totals, progress per op,
the whole usage in --help, and what to install when pytest is missing."""

from __future__ import annotations

import subprocess
import sys

from mhc_conformance import matrix
from mhc_conformance.runner import _OpProgress


def _counts(**kw):
    return {k: kw.get(k, 0) for k in matrix.OUTCOMES} | {"worst_headroom": kw.get("h", 0.0)}


SUMMARY = {
    "sinkhorn": {"float32": _counts(passed=10, h=0.25), "bfloat16": _counts(passed=8, failed=1, h=1.7),
                 "any": _counts(passed=12)},
    "mhc_pre": {"float32": _counts(skipped=5), "bfloat16": _counts(passed=3, skipped=2, xfailed=1, h=0.5)},
}


def test_cells_read_not_claimed_when_everything_was_skipped():
    assert matrix.cell(SUMMARY["mhc_pre"]["float32"]) == "not claimed"
    assert matrix.cell(SUMMARY["mhc_pre"]["bfloat16"]) == "3p 2s 1x h0.5"
    assert matrix.cell(SUMMARY["sinkhorn"]["bfloat16"]) == "8p 1F h1.7"
    assert matrix.cell(None) == "-"


def test_totals_sum_every_cell_and_name_the_worst():
    t = matrix.totals(SUMMARY)
    assert (t["passed"], t["failed"], t["skipped"], t["xfailed"]) == (33, 1, 7, 1)
    assert t["worst"] == 1.7 and t["where"] == "sinkhorn bfloat16"


def test_render_has_legend_rows_and_totals():
    results = {"good": {"summary": SUMMARY, "rc": 1, "seconds": 12.0, "profile": "ci"},
               "broken": {"summary": {}, "rc": 4, "seconds": 1.0, "profile": "ci",
                          "tail": "ERROR: --mhc-backend 'broken': No module named 'jax'\n"}}
    text = matrix.render(results)
    assert text.startswith("legend:")
    assert "not claimed" in text and "No module named 'jax'" in text and "pip install" in text
    assert "total good: 33 passed, 1 failed, 7 skipped, 1 known failures; worst ratio 1.7 (sinkhorn bfloat16)" in text
    assert "total broken: not run" in text
    assert text.splitlines()[-1].startswith("total (2 backends): 33 passed, 1 failed, 7 skipped")
    assert "1 backend(s) not run: broken" in text


def test_progress_reports_each_op_once_it_is_done():
    lines: list[str] = []
    progress = _OpProgress(lines.append)
    for text in ("conformance/test_sinkhorn.py::test_values[float32] PASSED     [ 10%]",
                 "conformance/test_sinkhorn.py::test_values[bfloat16] FAILED    [ 20%]",
                 "some other output",
                 "conformance/test_mhc_pre.py::test_values[float32] SKIPPED (backend ...) [ 30%]"):
        progress.feed(text)
    assert len(lines) == 1 and lines[0].startswith("sinkhorn") and "2 tests" in lines[0] and "[ 20%]" in lines[0]
    assert "1 failed, 1 passed" in lines[0]
    progress.flush()
    assert lines[1].startswith("mhc_pre") and "1 skipped" in lines[1]


def test_help_shows_the_whole_usage():
    out = subprocess.run([sys.executable, "-m", "mhc_conformance.matrix", "--help"], capture_output=True, text=True,
                         timeout=120).stdout
    for part in ("usage: python -m mhc_conformance.matrix [BACKEND ...]", "-- PYTEST ARGS", "not claimed",
                 "--profile-for", "Exit status", "mhc-spec[conformance]"):
        assert part in out, part


def test_missing_pytest_says_what_to_install(monkeypatch, capsys):
    real = matrix.importlib.util.find_spec
    monkeypatch.setattr(matrix.importlib.util, "find_spec", lambda name: None if name == "pytest" else real(name))
    assert matrix.main(["numpy"]) == 2
    assert "pip install 'mhc-spec[conformance]'" in capsys.readouterr().err
