"""Sessions: `nox -s tests` (the test suite), `nox -s conformance` (every installed backend against the reference,
prints the backend x op x dtype matrix), `nox -s lint` (ruff), `nox -s bench` (asv + HTML dashboard).

Installs use CI's pinned versions, `.ci/constraints.txt` (torch 2.13.0 CPU build, ...); the project's extras only
declare ranges. pip's own output is shown (the first install downloads torch and triton, a few hundred MB).
Triton kernels run on CPU in interpreter mode (TRITON_INTERPRET=1), set here for every session.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "tests", "conformance"]
nox.options.reuse_existing_virtualenvs = True

CONSTRAINTS = ".ci/constraints.txt"
CPU_ENV = {"TRITON_INTERPRET": "1", "MHC_HYPOTHESIS_PROFILE": os.environ.get("MHC_HYPOTHESIS_PROFILE", "ci")}


def install(session: nox.Session, *args: str) -> None:
    """pip install under CI's constraints, with pip's progress lines (nox hides them unless --verbose)."""
    session.log(f"installing {' '.join(args)} (pinned by {CONSTRAINTS}; the first run downloads several hundred MB)")
    session.install("-c", CONSTRAINTS, *args, silent=False)


@nox.session
def lint(session: nox.Session) -> None:
    install(session, "ruff>=0.5")
    session.run("ruff", "check", ".")


@nox.session
def tests(session: nox.Session) -> None:
    """The project's own tests: reference (float64), conformance meta-tests (mutants), torch/triton, benchmark smoke."""
    install(session, "-e", ".[test,torch,jax,bench,peers]")
    session.run("pytest", "tests", "-q", *session.posargs, env=CPU_ENV)


@nox.session
def conformance(session: nox.Session) -> None:
    """Run the conformance suite for every installed backend (or those named after --) and print the matrix."""
    install(session, "-e", ".[conformance,torch,jax]")  # every backend's extra: the matrix runs all installed
    # torch-pipeline: every example is a pipeline step over worker processes; the reduced profile keeps it ~2 min
    # jax: every new shape / option set jit-compiles (~0.5-1 s of XLA on CPU), so it gets the reduced profile too
    session.run("python", "-m", "mhc_conformance.matrix", "--profile-for", "torch-pipeline=ci-slow",
                "--profile-for", "jax=ci-slow", *session.posargs, env=CPU_ENV)


@nox.session
def bench(session: nox.Session) -> None:
    """asv benchmarks of the current checkout, then the HTML dashboard (`-- --quick` for the CPU quick profile)."""
    install(session, "-e", ".[test,torch,bench]")
    session.run("python", "-m", "benchmarks.run", *session.posargs, env=CPU_ENV)


@nox.session
def gpu(session: nox.Session) -> None:
    """One command for a machine with one NVIDIA GPU, <= 8 minutes (benchmarks/gpu.py): conformance of every CUDA
    backend, copy bandwidth, the fused ops and the layer at paper_3b / paper_27b in bfloat16 (% of copy bandwidth),
    the W2-style block overhead, liger-kernel beside them, bitwise determinism; JSON + Markdown under
    benchmarks/results/<device>-<commit>/. `nox -s gpu -- --dry-run` checks every step on a CPU (CI runs it as a
    test). No constraints file and no TRITON_INTERPRET: the GPU needs the CUDA build of torch and compiled kernels."""
    session.install("-e", ".[test,torch,bench,peers]")
    session.run("python", "-m", "benchmarks.gpu", *session.posargs)
