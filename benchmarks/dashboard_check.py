"""Check that the published dashboard renders, in headless Chromium, opened as a file (file:// URL).

    python -m benchmarks.dashboard_check [benchmarks/html] [--png shot.png]

Loads index.html (the benchmark grid) and one parameterized benchmark page, lets their scripts run, and reads the
resulting DOM: the grid must hold drawn plots and no asv error page ("external dependencies failed to load", "Error
fetching content"); the benchmark page's legend must list lines with data only (its parameter choice comes from
`offline_assets.file_openable`). A screenshot of the grid is written next to index.html (`dashboard.png`).
Exit status 0 when it renders, 1 when not, 77 when no Chromium is installed (`apt-get install chromium`).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--virtual-time-budget=15000")
ERRORS = ("failed to load", "Error fetching content", "Can not determine continental origin")


def browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def _chromium(url: str, *extra: str, timeout: float = 120.0) -> str:
    exe = browser()
    if exe is None:
        raise FileNotFoundError("no Chromium found (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="mhc-chromium-") as profile:
        proc = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *extra, url], capture_output=True,
                              text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium exited with {proc.returncode}: {proc.stderr[-1000:]}")
    return proc.stdout


def parameterized_benchmark(html_dir: Path) -> str | None:
    """A benchmark with data and at least two parameters (the pages that can open on an empty combination)."""
    html_dir = Path(html_dir)
    index = json.loads((html_dir / "index.json").read_text(encoding="utf-8"))
    def values(point) -> list:
        value = point[1] if isinstance(point, list) and len(point) > 1 else None
        return value if isinstance(value, list) else [value]

    with_data = {path.name.removesuffix(".json") for path in (html_dir / "graphs").rglob("*.json")
                 if "summary" not in path.parts
                 and any(v is not None for point in json.loads(path.read_text()) for v in values(point))}
    names = sorted(n for n, b in index["benchmarks"].items() if len(b.get("params") or []) >= 2 and n in with_data)
    preferred = [n for n in names if n.endswith("MhcLayerModule.time_layer")]
    return (preferred or names or [None])[0]


def check(html_dir: Path, png: Path | None = None) -> tuple[bool, list[str], list[str]]:
    """(renders, findings, legend of the benchmark page): open the grid and one parameterized benchmark page from
    file:// and read what the scripts drew."""
    html_dir = Path(html_dir).resolve()
    url = (html_dir / "index.html").as_uri()
    findings: list[str] = []
    grid = _chromium(url, "--window-size=1400,20000", "--dump-dom")  # tall: the grid draws the plots in view
    plots = grid.count('class="flot-base"')
    errors = [e for e in ERRORS if e in grid]
    findings.append(f"grid: {plots} plots drawn" + (f"; error page: {errors}" if errors else ""))
    ok = plots > 0 and not errors
    bench, legend = parameterized_benchmark(html_dir), []
    if bench is not None:
        page = _chromium(f"{url}#{bench}", "--dump-dom")
        legend = re.findall(r'class="legendLabel">([^<]*)<', page)
        findings.append(f"{bench}: {len(legend)} lines: {legend}")
        ok = ok and bool(legend) and not any(e in page for e in ERRORS)
    png = Path(png) if png else html_dir / "dashboard.png"
    _chromium(url, "--window-size=1400,900", f"--screenshot={png}")
    findings.append(f"screenshot: {png}")
    return ok, findings, legend


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("html", nargs="?", type=Path, default=HERE / "html")
    ap.add_argument("--png", type=Path, help="screenshot path (default: <html>/dashboard.png)")
    args = ap.parse_args(argv)
    if browser() is None:
        print("dashboard check: skipped, no Chromium installed (apt-get install chromium)")
        return 77
    ok, findings, _ = check(args.html, args.png)
    print(f"dashboard check ({'renders from file://' if ok else 'DOES NOT RENDER'}): " + "; ".join(findings))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
