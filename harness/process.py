"""Child processes that cannot outlive the harness.

Hypervisors are started in their own session (a Ctrl-C at the terminal reaches the harness, which
then shuts them down in order) and, on Linux, with PR_SET_PDEATHSIG so the kernel kills them even
if the harness itself is SIGKILLed.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(argv: list[str], log_path: Path) -> subprocess.Popen:
    """Start ``argv`` (a list, never a shell string) with stdout and stderr going to a log."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, preexec_fn=_die_with_parent,
                                close_fds=True)


def stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM, wait ``grace`` seconds, then SIGKILL. Safe on an already-exited process."""
    if proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)
    except ProcessLookupError:
        pass


def tail_text(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, for error messages."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return ""
