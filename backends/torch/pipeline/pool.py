"""The backend's worker processes: started once per backend instance, reused for every call, stopped at exit.

Each worker is a `python -m mhc_backends.torch.pipeline.pool` subprocess (the caller's __main__ is never
re-imported) that connects back to the parent over an authenticated 127.0.0.1 socket, joins a gloo process group on
127.0.0.1 (a free port chosen by the parent) and serves tasks: the parent sends every rank the same task, each runs
its part (`stack.run_stack`) and answers with its share or the traceback of its error. A worker that errs or dies,
or an answer that does not come within `timeout_s`, closes the whole pool (the process group may hold half-finished
transfers) and raises; the next call starts a new pool. A worker whose parent vanishes exits on the closed socket.
"""

from __future__ import annotations

import argparse
import atexit
import os
import subprocess
import sys
import threading
import traceback
from multiprocessing.connection import Client, Listener

from .distributed import LOCALHOST, free_port

AUTHKEY_ENV = "MHC_PIPELINE_AUTHKEY"


def _worker(rank: int, world: int, pg_port: int, conn, timeout_s: float) -> None:
    import torch
    import torch.distributed as dist

    from . import distributed
    from .stack import run_stack

    torch.set_num_threads(1)
    distributed.init(rank, world, pg_port, timeout_s=timeout_s, backend="gloo")
    try:
        while True:
            try:
                task = conn.recv()
            except EOFError:  # the parent is gone
                break
            if task is None:
                break
            try:
                conn.send(("ok", run_stack(rank, world, task)))
            except Exception:  # noqa: BLE001 (sent to the parent, which raises it)
                conn.send(("error", traceback.format_exc()))
    finally:
        dist.destroy_process_group()


class WorkerPool:
    """`world` worker processes (`python -m mhc_backends.torch.pipeline.pool`, so the caller's __main__ is never
    re-imported), each connected back to this process over an authenticated 127.0.0.1 socket."""

    def __init__(self, world: int, timeout_s: float = 120.0, start_timeout_s: float = 120.0):
        self.world, self.timeout_s = world, timeout_s
        authkey = os.urandom(16)
        listener = Listener((LOCALHOST, 0), authkey=authkey)
        pg_port = free_port()
        env = {**os.environ, AUTHKEY_ENV: authkey.hex()}
        self.procs = [subprocess.Popen([sys.executable, "-m", __name__, "--rank", str(rank), "--world", str(world),
                                        "--pg-port", str(pg_port), "--connect", str(listener.address[1]),
                                        "--timeout", str(timeout_s)], env=env, stdin=subprocess.DEVNULL)
                      for rank in range(world)]
        accepted: dict[int, object] = {}

        def accept():
            try:
                for _ in range(world):
                    conn = listener.accept()
                    accepted[conn.recv()] = conn
            except OSError:  # the listener was closed: start-up timed out
                pass

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        thread.join(start_timeout_s)
        listener.close()
        self.conns = [accepted.get(rank) for rank in range(world)]
        atexit.register(self.close)
        if any(c is None for c in self.conns):
            codes = [p.poll() for p in self.procs]
            self.close()
            raise RuntimeError(f"torch-pipeline: {world} workers did not all start within {start_timeout_s:.0f} s "
                               f"(exit codes {codes})")

    @property
    def alive(self) -> bool:
        return bool(self.procs) and all(p.poll() is None for p in self.procs)

    def run(self, task: dict) -> list[dict]:
        """Every rank's answer to `task`, in rank order."""
        try:
            for conn in self.conns:
                conn.send(task)
            answers = []
            for rank, conn in enumerate(self.conns):
                if not conn.poll(self.timeout_s):
                    raise RuntimeError(f"torch-pipeline: rank {rank} did not answer within {self.timeout_s:.0f} s")
                answers.append(conn.recv())
        except (EOFError, OSError) as e:
            codes = [p.poll() for p in self.procs]
            self.close()
            raise RuntimeError(f"torch-pipeline: a worker process died (exit codes {codes}): {e}") from e
        except BaseException:
            self.close()
            raise
        errors = [(rank, a[1]) for rank, a in enumerate(answers) if a[0] != "ok"]
        if errors:
            self.close()
            rank, tb = errors[0]
            raise RuntimeError(f"torch-pipeline: rank {rank} failed:\n{tb}")
        return [a[1] for a in answers]

    def close(self) -> None:
        for conn in self.conns:
            if conn is not None:
                try:
                    conn.send(None)
                except (OSError, ValueError):
                    pass
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for conn in self.conns:
            if conn is not None:
                conn.close()
        self.conns, self.procs = [], []
        atexit.unregister(self.close)


def main() -> None:
    parser = argparse.ArgumentParser(description="a torch-pipeline worker (started by WorkerPool)")
    for name in ("--rank", "--world", "--pg-port", "--connect"):
        parser.add_argument(name, type=int, required=True)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    conn = Client((LOCALHOST, args.connect), authkey=bytes.fromhex(os.environ.pop(AUTHKEY_ENV)))
    conn.send(args.rank)
    _worker(args.rank, args.world, args.pg_port, conn, args.timeout)


if __name__ == "__main__":
    main()
