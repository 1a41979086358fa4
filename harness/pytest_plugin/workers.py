"""Stopping pytest-xdist workers the way a single pytest process stops: tearing down their VMs.

A SIGTERM (a CI job cancelled, ``timeout``) reaches only the controller process. pytest-xdist
then ends its workers by closing their channels and, ten seconds later, killing them: a worker
busy in a scenario never runs its teardown, and its VM, scratch files and staging directory
outlive the run. So the controller passes the signal on: every worker writes its pid into a
directory the controller names in the environment it starts them with, and the controller's
signal handler sends each of them SIGTERM before it stops itself. A worker turns its first
SIGTERM or SIGINT into KeyboardInterrupt (pytest's own way out, through every teardown) and
ignores the ones after it, so a Ctrl-C that reaches the whole process group *and* the
forwarded SIGTERM cannot interrupt the teardown the first one started.
"""
from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

from ..hostproc import start_time as process_start_time
from ..ownership import make_owned

PIDS_ENV = "REFVM_XDIST_WORKER_PIDS"


def is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def uses_workers(config) -> bool:
    return bool(getattr(config.option, "numprocesses", None)) and not is_worker(config)


class Controller:
    """The controller's side: names the pid directory and forwards stop signals."""

    def __init__(self):
        # A claimed refvm-* directory, like a run's: `refvm clean` and every run's start
        # leave it alone while this process lives, and remove it if this process is killed.
        self.directory = make_owned("xdist")
        os.environ[PIDS_ENV] = str(self.directory)  # inherited by the workers it starts

    def worker_pids(self) -> list[int]:
        """The registered workers still alive: a pid file says "<pid> <start time>", and a
        pid now used by another process (a worker that died, its pid reused) is left out."""
        pids = []
        for entry in self.directory.glob("*.pid"):
            try:
                pid_text, start = entry.read_text().split()
                pid = int(pid_text)
            except (OSError, ValueError):
                continue
            if process_start_time(pid) in (start, "unknown"):
                pids.append(pid)
        return pids

    def forward(self) -> list[int]:
        """Send SIGTERM to every worker still alive; return the pids that got it."""
        sent = []
        for pid in self.worker_pids():
            try:
                os.kill(pid, signal.SIGTERM)
                sent.append(pid)
            except ProcessLookupError:
                pass
        return sent

    def close(self) -> None:
        os.environ.pop(PIDS_ENV, None)
        shutil.rmtree(self.directory, ignore_errors=True)


def register_worker() -> None:
    """A worker's side: announce our pid, and stop once on SIGTERM or SIGINT."""
    directory = os.environ.get(PIDS_ENV)
    if directory and Path(directory).is_dir():
        pid = os.getpid()
        (Path(directory) / f"{pid}.pid").write_text(f"{pid} {process_start_time(pid)}")
    stop_once_on(signal.SIGTERM, signal.SIGINT)


def unregister_worker() -> None:
    """A worker that ends takes its pid file with it (nothing signals its pid afterwards)."""
    directory = os.environ.get(PIDS_ENV)
    if directory:
        Path(directory, f"{os.getpid()}.pid").unlink(missing_ok=True)


def stop_once_on(*signums: int) -> None:
    """Turn the first of these signals into KeyboardInterrupt (pytest's way out, through every
    teardown) and ignore the ones after it, which would otherwise cut that teardown short."""
    stopping = []

    def stop_once(signum, _frame):
        if stopping:
            return  # already unwinding: let the teardown finish
        stopping.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    for signum in signums:
        signal.signal(signum, stop_once)
