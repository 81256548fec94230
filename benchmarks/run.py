"""Run the asv suite against the current checkout, build the HTML dashboard and the Markdown/PNG report.

    python -m benchmarks.run                 # full profile: every shape config the device can run
    python -m benchmarks.run --quick         # CPU quick profile: cpu_small + cpu, few repeats (README: how long)
    python -m benchmarks.run --quick --snapshot --readme README.md   # also commit-ready results + README table

`nox -s bench -- <args>` calls this. asv runs in the current Python (`-E existing`), so nothing is built or
downloaded; results are recorded under the checkout's HEAD hash (the snapshot notes a dirty tree). The asv working
results (benchmarks/.asv/) and the dashboard (benchmarks/html/) are git-ignored; nothing is published anywhere.

Each stage prints a line. The machine's load is measured before, during and after the asv run (benchmarks.load);
the report warns when it was too busy for the times to mean much. The dashboard opens from the file system (its
data embedded, benchmarks.offline_assets); with Chromium installed it is checked headless (benchmarks.dashboard_check).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from mhc_spec.table import load

HERE = Path(__file__).resolve().parent
HTML = HERE / "html"


def asv(*args: str, env: dict[str, str] | None = None, check: bool = True, quiet: bool = False) -> int:
    """Run `python -m asv` (asv need not be on PATH); `quiet` shows its output only when it fails."""
    cmd = [sys.executable, "-m", "asv", *args, "--config", str(HERE / "asv.conf.json")]
    print("+", shlex.join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=HERE, env=env, capture_output=quiet, text=True)
    if quiet and proc.returncode != 0:
        print(proc.stdout + proc.stderr, flush=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"asv {args[0]} failed with exit code {proc.returncode}")
    return proc.returncode


def stage(text: str) -> None:
    print(f"\n== benchmarks.run: {text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="CPU shape configs only, 3 samples, 1 round, short tracks")
    ap.add_argument("--bench", action="append", default=[], help="asv --bench regex (repeatable)")
    ap.add_argument("--machine", default=os.environ.get("MHC_BENCH_MACHINE") or platform.node() or "local",
                    help="asv machine name (default: the host name)")
    ap.add_argument("--no-publish", action="store_true", help="skip `asv publish` (the HTML dashboard)")
    ap.add_argument("--snapshot", action="store_true", help="copy the results into benchmarks/results/ (committed)")
    ap.add_argument("--readme", type=Path, help="rewrite this README's bench-table section")
    args = ap.parse_args(argv)

    env = dict(os.environ)
    attrs: list[str] = []
    if args.quick:
        env["MHC_BENCH_SHAPES"] = ",".join(n for n, s in load().shapes.items() if s.device == "cpu")
        env.setdefault("MHC_BENCH_TRACK_BUDGET", "0.25")
        attrs = ["-a", "repeat=3", "-a", "rounds=1", "-a", "warmup_time=0.05"]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True,
                            check=True).stdout.strip()
    from . import load as machine_load

    start = time.perf_counter()
    stage(f"asv machine {args.machine} (--yes; its questionnaire is not shown)")
    asv("machine", "--yes", "--machine", args.machine, env=env, quiet=True)
    stage("measuring the machine's load (calibration loop, load average)")
    before = machine_load.calibrate()
    stage(f"asv run ({'quick CPU profile' if args.quick else 'full profile'}): one line per benchmark")
    with machine_load.LoadSampler() as sampler:
        rc = asv("run", "-E", f"existing:{sys.executable}", "--set-commit-hash", commit, "--machine", args.machine,
                 *attrs, *(x for b in args.bench for x in ("--bench", b)), env=env, check=False)
    measured = machine_load.summary(before, machine_load.calibrate(), sampler.samples)
    load_json = machine_load.write(measured, HERE / ".asv" / "load.json")
    print(f"asv run finished in {time.perf_counter() - start:.0f} s (exit code {rc})", flush=True)
    print(machine_load.warning(measured) or f"machine load: fine (load average {measured['load_average_mean']:.1f} on "
          f"{measured['cpus']} CPUs, calibration {measured['calibration_after']['slowdown']:.2f}x)", flush=True)
    if not args.no_publish:
        stage("asv publish: the HTML dashboard")
        asv("publish", env=env, quiet=True)
        from . import dashboard_check, offline_assets

        offline_assets.localize(HTML)  # the page loads its JS from CDNs; local copies render without internet
        offline_assets.file_openable(HTML)  # and its data is embedded: index.html opens from the file system
        if dashboard_check.browser() is not None:
            stage("headless Chromium check of the dashboard")
            ok, findings, _ = dashboard_check.check(HTML)
            print(f"dashboard check: {'renders' if ok else 'DOES NOT RENDER'}: " + "; ".join(findings), flush=True)
        print(f"HTML dashboard: {(HTML / 'index.html').as_uri()} (open it in a browser; or serve the folder: "
              f"python -m http.server -d {HTML} 8080, then http://127.0.0.1:8080/)", flush=True)
    stage("report")
    from . import report

    command = "python -m benchmarks.run " + shlex.join(argv if argv is not None else sys.argv[1:])  # = nox -s bench --
    rargs = ["--machine", args.machine, "--md", str(HTML / "report.md"), "--png", str(HTML / "report.png"),
             "--command", command, "--load", str(load_json)]
    if args.snapshot:
        rargs += ["--snapshot", str(HERE / "results")]
    if args.readme:
        rargs += ["--readme", str(args.readme)]
    report.main(rargs)
    return rc


if __name__ == "__main__":
    sys.exit(main())
