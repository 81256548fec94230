"""Run the conformance suite against one backend in a subprocess and read back its JSON report.

Used by `python -m mhc_conformance.matrix` (every installed backend) and `python -m mhc_conformance.mutants`.
A subprocess per backend keeps frameworks apart (torch and jax never share an interpreter) and lets each run pick
its own Hypothesis profile.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

# a test's line in pytest -v output: `.../test_sinkhorn.py::test_values[float32] PASSED    [ 12%]`
_VERBOSE_LINE = re.compile(r"test_(\w+)\.py::\S+ (PASSED|FAILED|SKIPPED|XFAIL|XPASS|ERROR)\b(?:.*\[\s*(\d+)%\])?")


def suite_command(backend: str, report: str, *, profile: str | None = None, k: str | None = None,
                  max_examples: int | None = None, derandomize: bool = True, dtypes: str | None = None,
                  extra: list[str] | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "--pyargs", "mhc_conformance", "--mhc-backend", backend,
           "--mhc-report", report, "-q", "-p", "no:cacheprovider"]
    if profile:
        cmd += ["--mhc-profile", profile]
    if derandomize:
        cmd.append("--derandomize")
    if dtypes:
        cmd += ["--mhc-dtypes", dtypes]
    if max_examples:
        cmd += ["--max-examples", str(max_examples)]
    if k:
        cmd += ["-k", k]
    return cmd + list(extra or [])


class _OpProgress:
    """Reads pytest -v lines and reports each test module (= op) when the run moves past it."""

    def __init__(self, report: Callable[[str], None]):
        self.report, self.op, self.counts, self.pct, self.start = report, None, {}, "", time.perf_counter()

    def feed(self, line: str) -> None:
        m = _VERBOSE_LINE.search(line)
        if m is None:
            return
        op, outcome, pct = m.groups()
        if op != self.op:
            self.flush()
            self.op, self.counts, self.start = op, {}, time.perf_counter()
        self.counts[outcome.lower()] = self.counts.get(outcome.lower(), 0) + 1
        self.pct = f" [{pct:>3s}%]" if pct else ""

    def flush(self) -> None:
        if self.op is not None:
            text = ", ".join(f"{v} {k}" for k, v in sorted(self.counts.items()))
            seconds = time.perf_counter() - self.start
            self.report(f"{self.op:17s} {sum(self.counts.values()):4d} tests in {seconds:5.1f} s{self.pct}  ({text})")
            self.op = None


def _run_streaming(cmd: list[str], cwd: str, env: dict, timeout: float, progress: Callable[[str], None]):
    """Run with -v instead of -q, pass each finished op to `progress`; (exit status, output tail)."""
    cmd = ["-v" if a == "-q" else a for a in cmd]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    expired = threading.Event()
    timer = threading.Timer(timeout, lambda: (expired.set(), proc.kill()))
    timer.start()
    ops, tail = _OpProgress(progress), ""
    try:
        for line in proc.stdout:
            ops.feed(line)
            tail = (tail + line)[-4000:]
        rc = proc.wait()
    finally:
        timer.cancel()
    ops.flush()
    if expired.is_set():
        return -1, f"timed out after {timeout:.0f} s\n{tail[-2000:]}"
    return rc, tail


def run_suite(backend: str, *, timeout: float = 900.0, cwd: str | None = None, env: dict | None = None,
              progress: Callable[[str], None] | None = None, **options) -> dict:
    """The run's JSON report (empty if none was written) plus `rc`, `seconds`, `command` and the output's `tail`.

    `options` are those of `suite_command`. The working directory defaults to a fresh temporary folder, so that no
    stray metadata (an `*.egg-info` in a source checkout) shadows the installed backends' entry points. With
    `progress`, pytest runs verbosely and `progress(line)` is called once per op as the run moves past it.
    """
    with tempfile.TemporaryDirectory(prefix="mhc-conformance-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = suite_command(backend, str(report), **options)
        cmd += ["--mhc-repro-dir", str(Path(tmp) / "repro")]
        start = time.perf_counter()
        full_env = {**os.environ, **(env or {})}
        if progress is not None:
            rc, tail = _run_streaming(cmd, cwd or tmp, full_env, timeout, progress)
        else:
            try:
                proc = subprocess.run(cmd, cwd=cwd or tmp, capture_output=True, text=True, timeout=timeout,
                                      env=full_env)
                rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-4000:]
            except subprocess.TimeoutExpired as e:
                rc, tail = -1, f"timed out after {timeout:.0f} s\n{(e.stdout or b'')[-2000:]!r}"
        out = json.loads(report.read_text(encoding="utf-8")) if report.exists() else {}
    out.update(rc=rc, seconds=round(time.perf_counter() - start, 2), command=" ".join(cmd), tail=tail)
    return out
