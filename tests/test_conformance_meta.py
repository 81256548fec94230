"""Tests of the conformance suite itself (mhc_conformance): it passes the reference and fails planted bugs.

- the suite, run against the reference (an unmodified subclass of the numpy backend: the mutant run's control), passes,
  with its header, summary line and JSON report;
- every planted-bug backend in `mhc_conformance.mutants` fails it, each of the newer ones by the check it was planted
  for (kill rate and control result in pytest's terminal summary, and written to JSON: to $MHC_MUTANT_REPORT when
  set, else under the test's tmp_path);
- the search space reaches every corner of the table: off-preset option values, the large sizes; cotangents are
  never constant; bad command lines and backends of another spec version are usage errors at startup;
- the pieces: every invariant of the table has a check, every op has its generated test module, known-failures
  files xfail what they list and flag stale entries, an unknown backend is a usage error, failure messages carry a
  repro snippet that runs, the matrix script prints a matrix, and discovering backends imports no framework.

The suite runs in subprocesses (derandomized, profile ci, mutants with -x and without shrinking), two at a time.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mhc_conformance import check, invariants, mutants, plugin, strategies
from mhc_conformance.check import Case
from mhc_conformance.runner import run_suite
from mhc_spec.table import load, resolve_shape

SPEC = load()


def _outcomes(report: dict) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in report.get("tests", []):
        counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
    return counts


# -- structure -------------------------------------------------------------------------------------------------
def test_every_invariant_in_the_table_has_a_check():
    named = {inv for op in SPEC.ops.values() for inv in op.invariants}
    assert named <= set(invariants.CHECKS), f"no check for {sorted(named - set(invariants.CHECKS))}"
    assert set(invariants.CHECKS) <= set(SPEC.invariants), "a check for an invariant the table does not define"


@pytest.mark.parametrize("op", list(SPEC.ops))
def test_every_op_has_a_generated_module(op):
    module = importlib.import_module(f"mhc_conformance.test_{op}")
    assert module.OP == op
    for name in ("test_values", "test_large", "test_invariants", "test_bad_calls", "test_nonfinite_inputs"):
        assert callable(getattr(module, name, None)), f"test_{op}.py lacks {name}"
    assert hasattr(module, "test_gradients") == SPEC.op(op).differentiable, (
        f"test_{op}.py must define test_gradients exactly when the table marks an input diff = true")


def test_discovery_and_plugin_import_no_framework():
    code = textwrap.dedent("""
        import sys
        import mhc_conformance.plugin
        assert not {"numpy", "hypothesis"} & set(sys.modules), "the pytest plugin must import nothing heavy"
        from mhc_backends import available_backends
        names = sorted(available_backends())
        assert "numpy" in names, names
        loaded = {"torch", "jax", "triton", "tensorflow"} & {m.split(".")[0] for m in sys.modules}
        assert not loaded, f"listing backends imported {loaded}"
        print("ok", names)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stdout + proc.stderr


def test_plugin_is_inert_outside_the_suite(tmp_path):
    (tmp_path / "test_plain.py").write_text(textwrap.dedent("""
        import sys
        def test_plain():
            assert not any(m.startswith("mhc_backends.numpy") for m in sys.modules)
    """))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mhc backend" not in proc.stdout and "mhc conformance" not in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--max-examples", "0"], "--max-examples must be >= 1"),
    (["--max-examples", "-3"], "--max-examples must be >= 1"),
    (["--mhc-dtypes="], "no dtype given"),
    (["--mhc-dtypes", "float32,float8"], "unknown dtypes ['float8']"),
    (["--mhc-report", "{tmp}/a_file/report.json"], "is a file, not a directory"),
    (["--mhc-report", "{tmp}"], "is a directory"),
], ids=["max-examples-0", "max-examples-negative", "dtypes-empty", "dtypes-unknown", "report-unwritable",
        "report-is-dir"])
def test_bad_command_lines_are_usage_errors_at_startup(args, message, tmp_path):
    (tmp_path / "a_file").write_text("")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "mhc_conformance", "-q", "-p",
                           "no:cacheprovider", *args], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 4, proc.stdout + proc.stderr  # pytest's usage-error status, before any test ran
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_unknown_backend_is_a_usage_error_listing_installed(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "mhc_conformance", "--mhc-backend",
                           "no-such-backend", "-q", "-p", "no:cacheprovider"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 4, proc.stdout + proc.stderr  # pytest's usage-error status
    assert "no-such-backend" in proc.stderr and "installed backends" in proc.stderr and "numpy" in proc.stderr


# -- the reference passes --------------------------------------------------------------------------------------
def test_reference_passes_the_suite(kills):
    """The mutant run's control: the unmodified reference under the mutants' settings, over the whole suite."""
    report = kills["control"]["report"]
    counts = _outcomes(report)
    assert report["rc"] == 0 and counts.get("passed", 0) > 300, (counts, report["tail"])
    assert set(counts) == {"passed"}, counts  # the reference claims everything: nothing skipped or xfailed
    assert report["backend"] == "faithful" and report["spec_version"] == SPEC.spec_version
    assert "mhc backend: faithful" in report["tail"] or "mhc conformance: backend faithful" in report["tail"]
    summary = report["summary"]
    assert set(SPEC.ops) <= set(summary), sorted(summary)
    for op, row in summary.items():
        for dtype, cell in row.items():
            assert cell["failed"] == 0 and cell["error"] == 0, (op, dtype, cell)
            assert float(cell["worst_headroom"]) <= 1.0, (op, dtype, cell)
    checks = [c for t in report["tests"] for c in t["checks"]]
    assert checks and all(c["passed"] for c in checks)
    assert {c["kind"] for c in checks} == {"forward", "gradient"}
    assert all({"op", "dtype", "output", "max_err", "allowed", "headroom", "params"} <= set(c) for c in checks)


# -- planted bugs are caught -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kills():
    return mutants.kill_all(jobs=2)


# the newer mutants and what must kill them: the test (its node id contains it) or the message of the failure
PLANTED_FOR = {
    "TileTruncated": "test_large", "TokenTail": "test_large",  # sizes past the default search space
    "InPlaceInput": "modified its input", "VjpOverwritesCotangent": "modified its input",  # inputs unchanged
    "OutputAliasesInput": "shares memory",  # no aliasing
    "CotangentMeanGrad": "test_gradients",  # random, non-constant cotangents
    "WrongSpecVersion": "spec_version",  # refused at startup
}


def test_mutants_are_killed(kills, tmp_path, request):
    path = Path(os.environ.get("MHC_MUTANT_REPORT") or tmp_path / "mutants.json")
    path.write_text(mutants.as_json(kills))
    plugin.summary_line(request.config, f"{mutants.summary(kills)} ({path})")  # after the run, not amid the dots
    assert kills["total"] >= 10
    assert kills["control"]["passed"], kills["control"]["counts"]
    survivors = [(m["mutant"], m["bug"], m["message"]) for m in kills["mutants"] if not m["killed"]]
    assert not survivors, f"mutants that pass the suite: {survivors}"
    assert json.loads(path.read_text())["kill_rate"] == 1.0
    by_name = {m["mutant"]: m for m in kills["mutants"]}
    for name, needle in PLANTED_FOR.items():
        m = by_name[name]
        assert needle in f"{m['by']} {m['message']}", (name, m["by"], m["message"])


# -- the search space reaches the corners of the table -----------------------------------------------------------
FLOAT_OPTIONS = sorted({o for op in SPEC.ops.values() for o in op.options if SPEC.options[o].type == "float"})


@pytest.mark.parametrize("op", [op for op, spec in SPEC.ops.items() if spec.options])
def test_options_are_drawn_off_the_presets(op):
    """Every float option takes values no preset sets (and its range ends), every choice option every choice under
    each preset, within the table's bounds."""
    seen: dict[tuple[str, str], set] = {}

    @settings(max_examples=150, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def collect(data):
        preset = data.draw(st.sampled_from(sorted(SPEC.presets)))
        for name, value in strategies.draw_options(data, op, preset).items():
            seen.setdefault((name, preset), set()).add(value)
    collect()
    for (name, preset), values in seen.items():
        spec = SPEC.options[name]
        preset_values = {SPEC.preset(p).get(spec.preset_key or name) for p in SPEC.presets}
        if spec.choices is not None:
            assert values == set(spec.choices), (op, name, preset, values)
        elif spec.type == "float":
            off = values - preset_values
            assert len(off) >= 3, (op, name, preset, values)
            assert all(spec.min is None or v >= spec.min for v in values), (op, name, values)
            bounds = strategies.draw_range(name)
            assert {bounds["min"], bounds["max"]} <= values and max(values) == bounds["max"], (op, name, sorted(values))
            assert bounds["max"] >= 4 * max(v for v in preset_values if v is not None), (name, bounds)


@pytest.mark.parametrize("op", list(SPEC.ops))
def test_large_sizes_reach_tiles_and_long_reductions(op):
    sizes = strategies.large_sizes(op)
    lead = tuple(SPEC.conformance["large"]["lead"])
    assert len(lead) >= 3 and int(np.prod(lead)) >= 20, lead
    if "C" in sizes:
        assert sizes["n"] * sizes["C"] > 1024, sizes
    for arg in SPEC.op(op).inputs:
        resolve_shape(arg, lead, **sizes)  # every input shape resolves at these sizes


def _case(op: str, dtype: str = "float64", lead=(2, 3)) -> Case:
    rng = np.random.default_rng(1)
    sizes = {"n": 3, "C": 4, "L": 2}
    options = SPEC.op_options(op, "paper", **({"n": 3} if "n" in SPEC.op(op).options else {}))
    inputs = tuple(rng.standard_normal(resolve_shape(a, lead, **sizes)) if a.required_when is None else None
                   for a in SPEC.op(op).inputs)
    return Case(op, dtype, sizes, lead, "paper", options, inputs).with_inputs()


def test_a_constant_cotangent_is_refused():
    """The suite's own guard: a constant cotangent, or one constant along the rows, fails the gradient check (a
    Sinkhorn gradient is ~0 for either, so a zero backward would pass)."""
    case = _case("sinkhorn")
    ctx = _Ctx(mutants.Faithful(), Path("."))
    check.gradient(ctx, case, check.random_cotangents(case, 0))  # random ones are fine
    shape = case.input("logits").shape
    rows = np.repeat(np.random.default_rng(0).standard_normal(shape[:-1])[..., None], shape[-1], axis=-1)
    for g in (np.ones(shape), rows):
        with pytest.raises(AssertionError, match="constant along axis"):
            check.gradient(ctx, case, [g])


@pytest.mark.parametrize("dtype", ["float64", "bfloat16"])
def test_random_cotangents_never_constant(dtype):
    for op, spec in SPEC.ops.items():
        if not spec.differentiable:
            continue
        case = _case(op, dtype, lead=(1,))
        for seed in range(20):
            check.assert_cotangents_vary(case, check.random_cotangents(case, seed))


@pytest.mark.parametrize("version, refused", [("0.1.0", False), ("0.1.99", False), ("0.2.0", True), ("1.1.0", True),
                                              ("x", True), (None, True)])
def test_spec_version_must_match_in_major_and_minor(version, refused, monkeypatch):
    monkeypatch.setattr("mhc_spec.table.load", lambda *a, **k: type("T", (), {"spec_version": "0.1.3"})())
    backend = type("B", (), {"name": "b", "spec_version": version})()
    if refused:
        with pytest.raises(pytest.UsageError, match="major.minor"):
            plugin.check_spec_version("b", backend)
    else:
        plugin.check_spec_version("b", backend)


def test_calls_that_write_to_inputs_or_alias_them_fail():
    ctx = _Ctx(mutants.InPlaceInput(), Path("."))
    with pytest.raises(AssertionError, match="modified its input x in place"):
        check.forward(ctx, _case("mhc_post_res"))
    ctx = _Ctx(mutants.OutputAliasesInput(), Path("."))
    with pytest.raises(AssertionError, match="output x shares memory with the input h"):
        check.forward(ctx, _case("expand_streams"))


# -- known failures --------------------------------------------------------------------------------------------
def test_known_failures_xfail_and_stale_entries_are_reported(tmp_path):
    listing = tmp_path / "known_failures.txt"
    listing.write_text("# planted bug\n"
                       "test_sinkhorn.py::test_values[*]   # one pair short, on purpose\n"
                       "test_sinkhorn.py::test_no_such_test   # stale\n")
    report = run_suite("mhc_conformance.mutants:SinkhornOneShort", profile="ci-slow", k="test_values and sinkhorn",
                       extra=["--mhc-known-failures", str(listing), "--mhc-dtypes", "float64,float32"])
    assert report["rc"] == 0, report["tail"]
    assert _outcomes(report) == {"xfailed": 2}, _outcomes(report)
    assert report["known_failures"]["stale"] == ["known_failures.txt:3: test_sinkhorn.py::test_no_such_test"]
    assert "matches no collected test" in report["tail"] and "1 matching no test" in report["tail"]


# -- messages and reports --------------------------------------------------------------------------------------
class _Ctx:
    def __init__(self, backend, repro_dir):
        self.backend, self.backend_spec, self.repro_dir = backend, "mhc_conformance.mutants:TransposedHres", repro_dir

    def record(self, verdict):
        pass


@pytest.mark.parametrize("C", [2, 40])  # inline arrays, and arrays saved to an .npz file
def test_failure_message_has_the_numbers_and_a_repro_that_runs(C, tmp_path):
    be = mutants.TransposedHres()
    rng = np.random.default_rng(0)
    n = 3
    inputs = (rng.standard_normal((2, n, C)), rng.standard_normal((2, C)), rng.uniform(0, 2, (2, n)),
              rng.uniform(0, 1, (2, n, n)))
    case = Case("mhc_post_res", "float32", {"n": n, "C": C}, (2,), "paper", {},
                tuple(a.astype(np.float32) for a in inputs))
    with pytest.raises(AssertionError) as info:
        check.forward(_Ctx(be, tmp_path), case)
    text = str(info.value)
    for needle in ("y: max_err=", "allowed", "naive", "ceiling", "headroom", "mhc_post_res", "float32", "n=3"):
        assert needle in text, needle
    snippet = text[text.index("# --- repro"):]
    scope: dict = {}
    exec(compile(snippet, "<repro>", "exec"), scope)  # noqa: S102 (the point: the snippet must run as printed)
    got, want = np.asarray(scope["got"], np.float64), np.asarray(scope["want"], np.float64)
    assert np.max(np.abs(got - want)) > 1e-3  # it reproduces the failure
    assert (C > 20) == ("np.load" in snippet)


def test_matrix_prints_backend_op_dtype_cells(tmp_path):
    out = tmp_path / "matrix.json"
    proc = subprocess.run([sys.executable, "-m", "mhc_conformance.matrix", "numpy", "--json", str(out),
                           "--profile", "ci-slow", "--", "-k", "test_values and (sinkhorn or expand)"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith("backend"))
    assert all(d in header for d in SPEC.conformance["dtypes"])
    row = next(line for line in lines if line.split()[:2] == ["numpy", "sinkhorn"])
    assert row.count("1p") == len(SPEC.conformance["dtypes"]), row
    assert json.loads(out.read_text())["numpy"]["summary"]["sinkhorn"]["float64"]["passed"] == 1
