"""Is the machine busy with other work while the benchmarks run? Then times and speed ratios are not trustworthy.

Two measurements, both cheap:
- a calibration loop (fixed pure-Python work, ~30 ms) timed many times: on an idle core every repeat takes about
  the same time, so the median stays close to the best (the stand-in for the idle value); when other processes
  compete for the cores, repeats get preempted and the median/best ratio grows;
- the 1-minute load average sampled every few seconds during the asv run, against the CPU count (the benchmarks
  themselves keep at most that many threads busy; anything above is someone else). On a 2-core VM shared with
  ~15 runnable processes the ratio read only 1.2-1.6 while the load average read 11-16: the load average is the
  stronger signal, the ratio catches bursts it averages away.

`python -m benchmarks.run` measures before and after the run and samples during it, writes the numbers into the
dashboard folder (`load.json`) and the report prints a warning when either says the machine was loaded.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from pathlib import Path

SLOWDOWN_LIMIT = 1.5  # median / best of the calibration loop; an idle machine measures ~1.0-1.2
LOAD_LIMIT = 1.25  # mean 1-minute load average per CPU during the run


def _work(n: int = 400_000) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def calibrate(repeats: int = 30) -> dict[str, float]:
    """Best and median time of the calibration loop, and their ratio (the slowdown; 1.0 = nothing competes)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _work()
        times.append(time.perf_counter() - start)
        time.sleep(0.002)  # spread the repeats over time, so that they sample the other processes' activity
    best, median = min(times), statistics.median(times)
    return {"best_s": best, "median_s": median, "slowdown": median / best}


class LoadSampler:
    """Samples the 1-minute load average every `every` seconds in a background thread (`with LoadSampler() as s`)."""

    def __init__(self, every: float = 5.0):
        self.every, self.samples = every, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(self.every)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def summary(before: dict, after: dict, samples: list[float], cpus: int | None = None) -> dict:
    """The numbers and a verdict: `loaded` with the reasons when either measure exceeds its limit."""
    cpus = cpus or os.cpu_count() or 1
    mean_load = statistics.fmean(samples) if samples else os.getloadavg()[0]
    reasons = []
    worst = max(before["slowdown"], after["slowdown"])
    if worst > SLOWDOWN_LIMIT:
        reasons.append(f"calibration loop {worst:.1f}x slower (median/best) than its idle time "
                       f"(limit {SLOWDOWN_LIMIT}x)")
    if mean_load / cpus > LOAD_LIMIT:
        reasons.append(f"load average {mean_load:.1f} on {cpus} CPUs during the run (limit {LOAD_LIMIT * cpus:.1f})")
    return {"cpus": cpus, "calibration_before": before, "calibration_after": after, "load_average_mean": mean_load,
            "load_average_max": max(samples, default=mean_load), "samples": len(samples), "loaded": bool(reasons),
            "reasons": reasons}


def warning(load: dict | None) -> str | None:
    """The report's warning line, or None when the machine was idle enough (or nothing was measured)."""
    if not load or not load.get("loaded"):
        return None
    return ("WARNING: the machine was loaded during this run (" + "; ".join(load["reasons"]) + "): times and "
            "speed ratios are unreliable and the targets' verdicts may be wrong; rerun on an idle machine.")


def write(load: dict, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(load, indent=1), encoding="utf-8")
    return path


def read(path: Path | None) -> dict | None:
    if path is None or not Path(path).is_file():
        return None
    return json.loads(Path(path).read_text(encoding="utf-8"))
