"""The torchrun launcher of the pipeline runner (CPU, gloo): a few training steps lower the loss, and a rank that
dies mid-run makes the whole run end with a clear error within 60 s instead of hanging."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("torch")

from mhc_backends.torch.pipeline.distributed import free_port  # noqa: E402

TRAIN = "mhc_backends.torch.pipeline.train"


def launch(nproc: int, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr",
           "127.0.0.1", "--master-port", str(free_port()), "-m", TRAIN, *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def read_lines(proc: subprocess.Popen, timeout: float) -> tuple[list[tuple[float, str]], float]:
    """(arrival time, line) of the output and the time the process ended; kills it after `timeout` seconds."""
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: lines.extend((time.monotonic(), line) for line in proc.stdout))
    reader.start()
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ended = time.monotonic()
        reader.join(10)
    return lines, ended


def test_train_prints_falling_loss():
    proc = launch(2, "--schedule", "dualpipev", "--steps", "4", "--dim", "16", "--seq", "8", "--vocab", "16",
                  "--recompute", "2", "--lr", "1e-2")
    lines, _ = read_lines(proc, timeout=240)
    text = "".join(line for _, line in lines)
    assert proc.returncode == 0, text[-4000:]
    losses = [float(m) for m in re.findall(r"^step \d+ loss ([0-9.]+)", text, re.M)]
    assert len(losses) == 4, text[-4000:]
    assert losses[-1] < losses[0], losses
    assert "expected" in text and "[rank 1] stages [1, 2]" in text  # the per-rank measurement report


def test_killed_rank_ends_the_run_with_a_clear_error():
    proc = launch(2, "--schedule", "1f1b", "--steps", "50", "--dim", "16", "--seq", "8", "--vocab", "16",
                  "--fail-rank", "1", "--fail-step", "2", "--pg-timeout", "20", "--deadline", "120")
    lines, ended = read_lines(proc, timeout=200)
    text = "".join(line for _, line in lines)
    assert proc.returncode not in (0, None), text[-4000:]
    killed = [t for t, line in lines if "killing itself" in line]
    assert killed, text[-4000:]
    assert ended - killed[0] < 60, f"the run took {ended - killed[0]:.0f} s to end after the kill\n{text[-4000:]}"
    # the survivor says why it stops: a failed pipeline step (gloo saw the closed connection) or torchrun's SIGTERM
    assert re.search(r"\[rank 0\] ERROR: (pipeline step failed|terminated by signal)", text), text[-4000:]
