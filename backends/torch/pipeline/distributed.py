"""Process-group setup shared by the launcher, the equivalence check and the backend's workers.

- `init(...)`: gloo (or the backend asked for, e.g. NCCL for CUDA stages), 127.0.0.1 only, a process-group timeout
  (a collective or receive that waits longer raises instead of hanging).
- `Deadline(seconds)`: a watchdog thread that ends the process with a clear message when the whole run takes too
  long (exit status 3), whatever it is blocked in.
- `on_termination()`: SIGTERM (what torchrun sends the surviving ranks when one rank dies) prints a clear message
  and exits with status 143 instead of a bare traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from datetime import timedelta

import torch.distributed as dist

LOCALHOST = "127.0.0.1"


def init(rank: int | None = None, world: int | None = None, port: int | None = None, timeout_s: float = 60.0,
         backend: str = "gloo") -> tuple[int, int]:
    """Join the process group (torchrun's environment when rank/world/port are None); returns (rank, world)."""
    rank = int(os.environ["RANK"]) if rank is None else rank
    world = int(os.environ["WORLD_SIZE"]) if world is None else world
    addr = os.environ.get("MASTER_ADDR", LOCALHOST) if port is None else LOCALHOST
    if addr not in (LOCALHOST, "localhost"):
        raise ValueError(f"the pipeline runs on one machine: MASTER_ADDR must be {LOCALHOST}, got {addr!r}")
    port = int(os.environ["MASTER_PORT"]) if port is None else port
    dist.init_process_group(backend, init_method=f"tcp://{LOCALHOST}:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))
    return rank, world


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


class Deadline:
    """Exit the process (status 3) with a message if it is still running `seconds` from now."""

    def __init__(self, seconds: float, what: str):
        self.seconds, self.what = seconds, what
        self._done = threading.Event()
        threading.Thread(target=self._watch, name="mhc-deadline", daemon=True).start()

    def _watch(self) -> None:
        if not self._done.wait(self.seconds):
            rank = os.environ.get("RANK", "?")
            print(f"[rank {rank}] ERROR: {self.what} exceeded its deadline of {self.seconds:.0f} s; exiting",
                  file=sys.stderr, flush=True)
            os._exit(3)

    def cancel(self) -> None:
        self._done.set()


def on_termination() -> None:
    def handler(signum, frame):
        rank = os.environ.get("RANK", "?")
        print(f"[rank {rank}] ERROR: terminated by signal {signum} (the launcher stops every rank when one fails); "
              f"exiting", file=sys.stderr, flush=True)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def stamp() -> str:
    return time.strftime("%H:%M:%S")
