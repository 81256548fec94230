"""pytest plugin of the mHC conformance suite (entry point `pytest11: mhc_conformance`).

    pytest --pyargs mhc_conformance --mhc-backend NAME [--mhc-dtypes float32,bfloat16] [--max-examples N]
           [--derandomize] [--mhc-report report.json] [--mhc-profile ci|ci-slow|thorough]

The plugin is loaded by every pytest run in an environment where the project is installed, so importing it costs
nothing (standard library and pytest only) and it does nothing until conformance tests are collected: the backend
is loaded, and the Hypothesis profile applied, only then. Backend: `--mhc-backend`, else $MHC_BACKEND, else `numpy`;
an entry-point name of the `mhc.backends` group or `module:object`.

Refused at startup with a usage error (exit status 4), before anything runs: an unknown backend, a backend whose
`spec_version` differs from the table's in major or minor (spec §12), an empty or unknown `--mhc-dtypes`,
`--max-examples` below 1, and an `--mhc-report` path that cannot be written.

Known failures: the folder of the backend's module may hold `known_failures.txt` (or pass --mhc-known-failures);
one pattern per line, `*` matching any text, against test ids such as `test_sinkhorn.py::test_values[bfloat16]`,
with the reason after `#`. Matching tests are marked xfail; entries that match nothing are reported (warning and
summary line).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_BACKEND = "numpy"
KNOWN_FAILURES = "known_failures.txt"
PROFILES = ("ci", "ci-slow", "thorough")  # defined in mhc_conformance.strategies


class KnownFailureWarning(pytest.PytestWarning):
    """An entry of a backend's known_failures.txt matches no collected test (stale, or a typo)."""


@dataclass
class _Run:
    backend_spec: str
    explicit: bool
    profile: str
    max_examples: int | None
    derandomize: bool
    shrink: bool
    dtypes: tuple[str, ...]
    report_path: str | None
    known_failures_path: str | None
    repro_dir: Path
    backend: Any = None
    context: Any = None
    saved_profile: str | None = None
    known: list[tuple[str, str, int]] = field(default_factory=list)  # (pattern, reason, line number)
    known_source: str | None = None
    stale: list[str] = field(default_factory=list)
    items: dict[str, dict[str, Any]] = field(default_factory=dict)  # nodeid -> op, dtype, test
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)  # nodeid -> outcome, duration

    def load_backend(self):
        """Load the backend once (this imports its framework)."""
        if self.backend is None:
            from mhc_backends import available_backends, load_backend

            try:
                backend = load_backend(self.backend_spec)
            except (ValueError, TypeError, ImportError) as e:
                raise pytest.UsageError(f"--mhc-backend {self.backend_spec!r}: {e}; installed backends: "
                                        f"{sorted(available_backends())} (or pass 'module:object')") from e
            check_spec_version(self.backend_spec, backend)
            self.backend = backend
        return self.backend


def _major_minor(version: Any) -> tuple[int, int] | None:
    parts = str(version).split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def check_spec_version(given: str, backend) -> None:
    """Refuse a backend whose spec_version differs from the suite's table in major or minor (spec §12: those are
    the breaking changes, so its results would be judged against another contract); a patch difference is fine."""
    from mhc_spec.table import load

    want, got = load().spec_version, getattr(backend, "spec_version", None)
    if _major_minor(got) is None or _major_minor(got) != _major_minor(want):
        raise pytest.UsageError(
            f"--mhc-backend {given!r}: backend {getattr(backend, 'name', '?')!r} implements spec_version {got!r}, this "
            f"suite checks spec {want}: the major.minor versions must match (spec §12). Install the suite of spec "
            f"{got}, or update the backend to spec {want}")


RUN = pytest.StashKey[_Run]()
SUMMARY = pytest.StashKey[list[str]]()


def summary_line(config: pytest.Config, text: str) -> None:
    """Queue a line for pytest's terminal summary, printed after the run instead of amid the progress dots (the
    meta-tests report the mutant kill rate and the control run this way)."""
    config.stash.setdefault(SUMMARY, []).append(text)


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    lines = config.stash.get(SUMMARY, [])
    if lines:
        terminalreporter.write_sep("-", "mhc conformance")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mhc_conformance", "mHC conformance suite")
    group.addoption("--mhc-backend", default=None, metavar="NAME",
                    help=f"backend under test: entry-point name or module:object (env MHC_BACKEND; default "
                         f"{DEFAULT_BACKEND})")
    group.addoption("--mhc-dtypes", default=None, metavar="LIST",
                    help="comma-separated, non-empty subset of the spec dtypes to test (default: all)")
    group.addoption("--mhc-report", default=None, metavar="PATH", help="write a JSON report of the run to PATH")
    group.addoption("--mhc-profile", default=None, choices=PROFILES,
                    help="Hypothesis profile (env MHC_HYPOTHESIS_PROFILE; default ci)")
    group.addoption("--max-examples", type=int, default=None, metavar="N",
                    help="Hypothesis examples per conformance test, >= 1 (overrides the profile)")
    group.addoption("--derandomize", action="store_true", default=False,
                    help="derive the Hypothesis examples from the test names (reproducible runs)")
    group.addoption("--mhc-no-shrink", action="store_true", default=False,
                    help="report the first failing example unshrunk (faster when only pass/fail matters)")
    group.addoption("--mhc-known-failures", default=None, metavar="PATH",
                    help="known-failures file to use instead of the backend folder's known_failures.txt")
    group.addoption("--mhc-repro-dir", default=None, metavar="DIR",
                    help="where failing cases too large to inline are saved as .npz (default: a temp folder)")


def pytest_configure(config: pytest.Config) -> None:
    from mhc_spec.table import load  # standard library only

    all_dtypes = tuple(load().conformance["dtypes"])
    dtypes = all_dtypes
    if config.getoption("mhc_dtypes") is not None:  # given, even empty: '' selects nothing, which is a mistake
        dtypes = tuple(d.strip() for d in config.getoption("mhc_dtypes").split(",") if d.strip())
        bad = [d for d in dtypes if d not in all_dtypes]
        if bad or not dtypes:
            raise pytest.UsageError(f"--mhc-dtypes {config.getoption('mhc_dtypes')!r}: "
                                    f"{f'unknown dtypes {bad}' if bad else 'no dtype given'}; choose from the spec "
                                    f"dtypes {list(all_dtypes)} (comma-separated), or leave the option out for all")
    max_examples = config.getoption("max_examples")
    if max_examples is not None and max_examples < 1:
        raise pytest.UsageError(f"--max-examples must be >= 1 (Hypothesis examples per conformance test), got "
                                f"{max_examples}")
    if config.getoption("mhc_report"):
        _check_writable(config.getoption("mhc_report"))
    profile = config.getoption("mhc_profile") or os.environ.get("MHC_HYPOTHESIS_PROFILE") or "ci"
    if profile not in PROFILES:
        raise pytest.UsageError(f"MHC_HYPOTHESIS_PROFILE must be one of {list(PROFILES)}, got {profile!r}")
    given = config.getoption("mhc_backend") or os.environ.get("MHC_BACKEND")
    repro = config.getoption("mhc_repro_dir")
    run = _Run(
        backend_spec=given or DEFAULT_BACKEND, explicit=bool(given), profile=profile,
        max_examples=config.getoption("max_examples"), derandomize=config.getoption("derandomize"),
        shrink=not config.getoption("mhc_no_shrink"), dtypes=dtypes,
        report_path=config.getoption("mhc_report"), known_failures_path=config.getoption("mhc_known_failures"),
        repro_dir=Path(repro) if repro else Path(tempfile.gettempdir()) / "mhc_conformance_repro",
    )
    config.stash[RUN] = run
    if given and ":" not in given:  # a cheap early check of a plain name (metadata only, nothing imported)
        from mhc_backends import available_backends

        installed = available_backends()
        if given not in installed:
            raise pytest.UsageError(f"--mhc-backend {given!r} is not installed; installed backends: "
                                    f"{sorted(installed) or 'none'} (or pass 'module:object')")
    if _requested(config):
        run.load_backend()
    config.pluginmanager.register(_Session(run), "mhc_conformance_session")


def _check_writable(report: str) -> None:
    """--mhc-report must be writable: found at startup, not after the whole run (a file created here is removed)."""
    path = Path(report)
    if path.is_dir():
        raise pytest.UsageError(f"--mhc-report {report!r} is a directory; give a file path such as report.json")
    existed = path.exists()
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise pytest.UsageError(f"--mhc-report {report!r}: {ancestor} is a file, not a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as e:
        raise pytest.UsageError(f"--mhc-report {report!r}: cannot write the report there ({e})") from e
    if not existed:
        path.unlink()


def pytest_unconfigure(config: pytest.Config) -> None:
    plugin = config.pluginmanager.get_plugin("mhc_conformance_session")
    if plugin is not None:
        config.pluginmanager.unregister(plugin)


def _requested(config: pytest.Config) -> bool:
    """Whether the command line points at the conformance package (then the header shows the backend)."""
    for arg in config.args:
        target = str(arg).split("::")[0]
        if config.option.pyargs and target.split(".")[0] == "mhc_conformance":
            return True
        path = Path(target).resolve()
        if path == PACKAGE_DIR or PACKAGE_DIR in path.parents:
            return True
    return False


def _in_package(path) -> bool:
    return path is not None and PACKAGE_DIR in Path(path).resolve().parents


def _relative_id(item) -> str:
    """`test_sinkhorn.py::test_values[float32]`: the node id without the path to the package."""
    return item.path.name + "::" + item.nodeid.split("::", 1)[1]


def _matches(pattern: str, text: str) -> bool:
    """`*` matches any text; everything else (brackets included) is literal."""
    parts = pattern.split("*")
    if len(parts) == 1:
        return pattern == text
    if not text.startswith(parts[0]) or not text.endswith(parts[-1]) or len(text) < len(parts[0]) + len(parts[-1]):
        return False
    pos, end = len(parts[0]), len(text) - len(parts[-1])
    for part in parts[1:-1]:
        found = text.find(part, pos, end)
        if found < 0:
            return False
        pos = found + len(part)
    return True


def _seed_from_test_id(item, test_id: str | None) -> None:
    """--derandomize: seed the test's examples from its id inside the package (None: unseed after the call).

    Hypothesis's own derandomized seed hashes pytest's node id, whose path part depends on where the package lies
    relative to the rootdir (`conformance/test_x.py` in a checkout, `.../site-packages/mhc_conformance/test_x.py`
    installed), so the same command drew other examples, and reported other worst errors, from another place.
    """
    test = getattr(item, "obj", None)
    if getattr(test, "hypothesis", None) is None:  # not a @given test
        return
    from hypothesis import seed

    seed(None if test_id is None else int.from_bytes(hashlib.sha256(test_id.encode()).digest()[:8], "big"))(test)


def parse_known_failures(text: str) -> list[tuple[str, str, int]]:
    """(pattern, reason, line number) per non-comment line `pattern  # reason`."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        pattern, _, reason = line.partition("#")
        if pattern.strip():
            out.append((pattern.strip(), reason.strip() or "known failure", number))
    return out


@pytest.fixture(scope="session")
def mhc(request):
    """The run's Context: the backend under test, the selected dtypes, the report being collected."""
    from .context import Context

    run = request.config.stash[RUN]
    if run.context is None:
        run.context = Context(run.load_backend(), run.backend_spec, run.dtypes, run.repro_dir)
    return run.context


class _Session:
    """The hooks of one pytest session, bound to its run state."""

    def __init__(self, run: _Run):
        self.run = run

    def pytest_report_header(self, config: pytest.Config) -> list[str] | None:
        run = self.run
        if run.backend is None:
            return None
        from mhc_spec.table import load

        be, spec_version = run.backend, load().spec_version
        caps = be.capabilities
        versions = ", ".join(f"{k} {v}" for k, v in be.versions().items()) or "-"
        env = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("MHC_")) or "-"
        lines = [
            f"mhc backend: {be.name} ({run.backend_spec}) on {be.device}; implements spec {be.spec_version}, "
            f"suite spec {spec_version}; {versions}",
            f"mhc claims: ops {sorted(caps.ops)}; grad {sorted(caps.grad_ops)}; dtypes {sorted(caps.dtypes)}; "
            f"presets {sorted(caps.presets)}; devices {list(caps.devices)}",
            f"mhc run: dtypes {list(run.dtypes)}; hypothesis profile {run.profile}"
            f"{f', max_examples {run.max_examples}' if run.max_examples else ''}"
            f"{', derandomized' if run.derandomize else ''}; env {env}",
        ]
        if be.spec_version != spec_version:  # major.minor equal (else refused at load): a compatible difference
            lines.append(f"mhc note: backend implements spec {be.spec_version}, the suite checks {spec_version} "
                         f"(same major.minor: compatible)")
        path = self._known_failures_file()
        if path is not None:
            entries = parse_known_failures(path.read_text(encoding="utf-8"))
            lines.append(f"mhc known failures: {path} ({len(entries)} entries, marked xfail)")
        return lines

    # -- collection -------------------------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_collectstart(self, collector) -> None:
        """Apply the run's Hypothesis profile while a conformance module is imported (its @given reads it then)."""
        if not isinstance(collector, pytest.Module) or not _in_package(collector.path):
            return
        from hypothesis import settings

        from .strategies import run_profile

        run = self.run
        run.saved_profile = settings.get_current_profile_name()
        settings.load_profile(run_profile(run.profile, run.max_examples, run.derandomize, run.shrink))

    def pytest_collectreport(self, report) -> None:
        if self.run.saved_profile is not None:
            from hypothesis import settings

            settings.load_profile(self.run.saved_profile)
            self.run.saved_profile = None

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "dtype" in metafunc.fixturenames and _in_package(metafunc.definition.path):
            metafunc.parametrize("dtype", self.run.dtypes)

    def _known_failures_file(self) -> Path | None:
        run = self.run
        if run.known_failures_path:
            path = Path(run.known_failures_path)
            if not path.is_file():
                raise pytest.UsageError(f"--mhc-known-failures: no file {path}")
            return path
        module = sys.modules.get(type(run.backend).__module__)
        if module is None or not getattr(module, "__file__", None):
            return None
        path = Path(module.__file__).with_name(KNOWN_FAILURES)
        return path if path.is_file() else None

    @pytest.hookimpl(tryfirst=True)  # before -k / -m deselection: entries are matched against every collected test
    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config, items: list) -> None:
        ours = [item for item in items if _in_package(item.path)]
        if not ours:
            return
        run = self.run
        run.load_backend()
        for item in ours:
            params = getattr(getattr(item, "callspec", None), "params", {})
            run.items[item.nodeid] = {"op": getattr(item.module, "OP", None), "dtype": params.get("dtype"),
                                      "test": getattr(item, "originalname", item.name)}
        path = self._known_failures_file()
        if path is None:
            return
        run.known, run.known_source = parse_known_failures(path.read_text(encoding="utf-8")), str(path)
        used: set[int] = set()
        for item in ours:
            rid = _relative_id(item)
            for pattern, reason, number in run.known:
                if _matches(pattern, rid):
                    item.add_marker(pytest.mark.xfail(reason=f"{path.name}:{number}: {reason}", strict=False))
                    used.add(number)
                    break
        files = {item.path.name for item in ours}
        for pattern, _, number in run.known:
            if number not in used and any(_matches(pattern.split("::")[0], f) for f in files):
                run.stale.append(f"{path.name}:{number}: {pattern}")
                warnings.warn(KnownFailureWarning(f"{path}:{number}: entry {pattern!r} matches no collected test"),
                              stacklevel=1)

    def pytest_deselected(self, items) -> None:
        for item in items:
            self.run.items.pop(item.nodeid, None)

    # -- running ----------------------------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_call(self, item) -> None:
        if self.run.context is not None:
            self.run.context.nodeid = item.nodeid
        if self.run.derandomize and item.nodeid in self.run.items:
            _seed_from_test_id(item, _relative_id(item))

    def pytest_runtest_teardown(self, item) -> None:
        if self.run.derandomize and item.nodeid in self.run.items:
            _seed_from_test_id(item, None)

    def pytest_runtest_logreport(self, report) -> None:
        run = self.run
        if report.nodeid not in run.items:
            return
        entry = run.outcomes.setdefault(report.nodeid, {"outcome": "passed", "duration": 0.0})
        entry["duration"] += report.duration
        xfail = hasattr(report, "wasxfail")
        if report.when == "call":
            entry["outcome"] = ("xfailed" if report.skipped else "xpassed") if xfail else report.outcome
            if report.failed:
                crash = getattr(report.longrepr, "reprcrash", None)
                entry["message"] = crash.message if crash is not None else str(report.longrepr)[:2000]
        elif report.when == "setup" and not report.passed:
            entry["outcome"] = ("xfailed" if xfail else "skipped") if report.skipped else "error"
            if report.skipped and isinstance(report.longrepr, tuple):
                entry["message"] = str(report.longrepr[2])
        elif report.when == "teardown" and report.failed:
            entry["outcome"] = "error"

    def pytest_terminal_summary(self, terminalreporter, exitstatus, config: pytest.Config) -> None:
        run = self.run
        if not run.items:
            return
        counts: dict[str, int] = {}
        for entry in run.outcomes.values():
            counts[entry["outcome"]] = counts.get(entry["outcome"], 0) + 1
        text = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "nothing run"
        terminalreporter.write_line(f"mhc conformance: backend {run.backend.name} ({run.backend_spec}): {text}")
        if run.known_source:
            stale = f": {'; '.join(run.stale)}" if run.stale else ""
            terminalreporter.write_line(f"mhc known failures: {run.known_source}: {len(run.known)} entries, "
                                        f"{len(run.stale)} matching no test{stale}")
        if run.report_path:
            terminalreporter.write_line(f"mhc report: {run.report_path}")

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus) -> None:
        run = self.run
        if not run.report_path or not run.items:
            return
        path = Path(run.report_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report_json(run), indent=1, default=str), encoding="utf-8")


def summarize(run: _Run) -> dict[str, dict[str, dict[str, Any]]]:
    """op -> dtype (or 'any') -> counts of each outcome and the worst headroom of the recorded checks."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for nodeid, meta in run.items.items():
        outcome = run.outcomes.get(nodeid, {}).get("outcome")
        if outcome is None:  # deselected or not run
            continue
        cell = table.setdefault(meta["op"] or "backend", {}).setdefault(meta["dtype"] or "any", {
            "passed": 0, "failed": 0, "skipped": 0, "xfailed": 0, "xpassed": 0, "error": 0, "worst_headroom": 0.0})
        cell[outcome] += 1
    if run.context is not None:
        for (nodeid, _, _), rec in run.context.records.items():
            meta = run.items.get(nodeid)
            if meta is None:
                continue
            cell = table.get(meta["op"] or "backend", {}).get(meta["dtype"] or "any")
            if cell is not None and rec.worst_headroom > cell["worst_headroom"]:
                cell["worst_headroom"] = rec.worst_headroom
    for cells in table.values():
        for cell in cells.values():
            h = cell["worst_headroom"]
            cell["worst_headroom"] = h if h != float("inf") else "inf"
    return table


def report_json(run: _Run) -> dict[str, Any]:
    from mhc_spec.table import load

    be = run.backend
    checks: dict[str, list] = {}
    if run.context is not None:
        for (nodeid, _, _), rec in run.context.records.items():
            checks.setdefault(nodeid, []).append(rec.as_json())
    tests = [{"nodeid": nodeid, **meta, **run.outcomes.get(nodeid, {"outcome": "not run"}),
              "checks": checks.get(nodeid, [])} for nodeid, meta in run.items.items()]
    caps = be.capabilities
    return {
        "backend": be.name, "backend_spec": run.backend_spec, "device": be.device, "versions": be.versions(),
        "spec_version": load().spec_version, "backend_spec_version": be.spec_version,
        "capabilities": {"ops": sorted(caps.ops), "grad_ops": sorted(caps.grad_ops), "dtypes": sorted(caps.dtypes),
                         "presets": sorted(caps.presets), "devices": list(caps.devices)},
        "run": {"dtypes": list(run.dtypes), "profile": run.profile, "max_examples": run.max_examples,
                "derandomize": run.derandomize, "env": {k: v for k, v in os.environ.items() if k.startswith("MHC_")}},
        "known_failures": {"file": run.known_source, "entries": len(run.known), "stale": run.stale},
        "summary": summarize(run),
        "tests": tests,
    }


