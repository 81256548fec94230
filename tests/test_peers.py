"""The peer-grading command: the convention finder names planted deviations in copies of the reference, and the
adapters of the pinned peers give the table's verdicts (spec/mhc.toml [conformance.peers])."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

from mhc_conformance.peers import finder, reference
from mhc_conformance.peers.models import DEVIATIONS, GRADIENT_DEVIATIONS, MODELS

CONSTRAINTS = Path(__file__).resolve().parents[1] / ".ci" / "constraints.txt"


def pinned(dist: str) -> str | None:
    for line in CONSTRAINTS.read_text().splitlines():
        if line.startswith(dist + "=="):
            return line.split("==")[1].strip()
    return None


def peer_or_skip(dist: str, module: str):
    pytest.importorskip("torch")
    try:
        got = version(dist)
    except PackageNotFoundError:
        pytest.skip(f"{dist} not installed")
    if got != pinned(dist):
        pytest.skip(f"verdicts are recorded for {dist} {pinned(dist)}, installed {got}")
    return pytest.importorskip(f"mhc_conformance.peers.{module}")


def test_every_table_deviation_is_modelled_or_declared():
    modelled = {d for _, _, devs in MODELS.values() for d in devs} | set(GRADIENT_DEVIATIONS)
    declared_only = {"maps_from_C"}  # structural: a parameterisation, refused by the adapter, not an output change
    assert modelled | declared_only == set(DEVIATIONS)


@pytest.mark.parametrize("op", ["sinkhorn", "mhc_coeffs"])
def test_control_conforms_to_paper(op):
    f = finder.find(reference.subject(op))
    assert f.verdict == "conforms to preset paper", f.verdict
    assert f.score <= 1 and not f.examples


@pytest.mark.parametrize("op, kw, named", [
    ("sinkhorn", dict(deviations=("row_first",)), "differs: row_first"),
    ("sinkhorn", dict(deviations=("linear_domain",)), "differs: linear_domain"),
    ("sinkhorn", dict(preset="deepseek_v4"), "conforms to preset deepseek_v4"),
    ("sinkhorn", dict(t_max=10), "conforms with options t_max=10"),
    ("mhc_coeffs", dict(deviations=("per_stream_rms",)), "differs: per_stream_rms"),
    ("mhc_coeffs", dict(post_scale=1.0), "conforms with options post_scale=1.0 (no 2σ)"),
    ("mhc_coeffs", dict(preset="deepseek_v4", deviations=("row_first",)),
     "differs: row_first; otherwise preset deepseek_v4"),
    ("mhc_coeffs", dict(res_layout="col_major"), "conforms with options res_layout=col_major"),
    ("mhc_post_res", dict(deviations=("transposed_res",)), "differs: transposed_res"),
])
def test_planted_deviation_is_named(op, kw, named):
    f = finder.find(reference.subject(op, **kw))
    assert f.verdict.startswith(named), f.verdict
    # every named difference comes with a failing example: the peer against the candidate without it
    assert f.examples or f.verdict.startswith("conforms to preset")
    assert all(e.err > e.allowed for e in f.examples)


def test_fixed_point_gradient_is_named():
    f = finder.find(reference.subject("sinkhorn", deviations=("fixed_point_grad",)))
    assert f.verdict == "conforms to preset paper"  # the forward is the spec's
    assert f.gradient.startswith("✘") and "fixed_point_grad" in f.gradient, f.gradient


def test_row_first_breaks_the_exact_marginal():
    inv = finder.find(reference.subject("sinkhorn", deviations=("row_first",))).invariants
    assert inv["rows"].startswith("✘") and inv["cols"].startswith("✔")


@pytest.fixture(scope="module")
def hc_report(tmp_path_factory):
    """One run of the command on hyper-connections: {variant: row} from its JSON, and its stdout."""
    peer_or_skip("hyper-connections", "hyper_connections")
    out = tmp_path_factory.mktemp("peers")
    r = subprocess.run([sys.executable, "-m", "mhc_conformance.peers", "--peer", "hyper_connections", "--out",
                        str(out)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    assert (out / "peers.md").read_text().startswith("# mHC peers graded")
    rows = json.loads((out / "peers.json").read_text())["rows"]
    return {row["variant"]: row for row in rows}, r.stdout


def test_hyper_connections_verdicts(hc_report):
    rows, stdout = hc_report
    assert "| hyper-connections" in stdout and "## Failing examples" in stdout
    for v in ("mHC", "mHCv2"):
        assert rows[f"{v} sinkhorn_knopps"]["verdict"].startswith("differs: linear_domain;")
        assert rows[f"{v} log_domain_sinkhorn_knopps"]["verdict"] == "conforms to preset paper"
        layer = rows[f"{v} layer (log_domain_sinkhorn=True)"]
        assert layer["verdict"].startswith("differs: maps_from_C + per_stream_rms + row_first; "
                                           "options res_layout=col_major")
        assert layer["gradients"].startswith("✔")
        assert {e["what"] for e in layer["examples"]} >= {"per_stream_rms", "row_first"}
    assert rows["HC layer (tanh=True)"]["verdict"] == "conforms to preset paper"
    assert rows["reference sinkhorn (paper)"]["verdict"] == "conforms to preset paper"  # the control row


def test_hyper_connections_refuses_a_phi_it_cannot_express():
    hc = peer_or_skip("hyper-connections", "hyper_connections")
    import numpy as np

    phi = np.ones((hc.N * hc.C, hc.N * hc.N + 2 * hc.N))
    with pytest.raises(ValueError, match="cannot express this phi"):
        hc._read_mhc(phi, np.ones(3), np.zeros(hc.N * hc.N + 2 * hc.N))


def test_liger_verdicts(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    lig = peer_or_skip("liger-kernel", "liger")
    got = {s.variant: finder.find(s) for s in lig.subjects()}
    coeffs = got["liger_mhc_coeffs"]
    assert coeffs.verdict.startswith("differs: row_first; options res_layout=row_major off preset deepseek_v4")
    assert coeffs.invariants["rows"].startswith("✘") and coeffs.gradient.startswith("✔")
    assert got["liger_mhc_pre"].verdict.startswith("conforms")
    assert got["liger_mhc_post_res"].verdict.startswith("conforms")


def test_importing_peers_imports_no_framework():
    code = "import sys, mhc_conformance.peers; assert 'torch' not in sys.modules and 'jax' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
