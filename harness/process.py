"""Child processes that cannot outlive the harness.

Hypervisors are started in their own session (a Ctrl-C at the terminal reaches the harness, which
then shuts them down in order) and with a parent-death signal, so the kernel kills them even if
the harness itself is SIGKILLed: Linux ``prctl(PR_SET_PDEATHSIG)``, FreeBSD 11.2+
``procctl(P_PID, 0, PROC_PDEATHSIG_CTL)`` (procctl(2)), the host bhyve runs on.

That call has to run in the child between fork and exec, where the parent's other threads
(console readers, libvirt's event loop) may hold locks: so libc is loaded, the function looked up
and its arguments built *before* fork (``deathsig_request``), and the child only makes the one
foreign call. Python has no other portable way to set it (subprocess has no such option).
"""
from __future__ import annotations

import ctypes
import functools
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

_PR_SET_PDEATHSIG = 1      # linux/prctl.h
_P_PID = 0                 # FreeBSD sys/wait.h: idtype_t P_PID
_PROC_PDEATHSIG_CTL = 11   # FreeBSD sys/procctl.h


@functools.lru_cache(maxsize=None)
def deathsig_request(platform: str = sys.platform) -> Callable[[], object] | None:
    """A ready-made call asking the kernel to SIGKILL the calling process when its parent
    dies, or None on a system without one. Everything it needs is built here, before fork."""
    if not (platform.startswith("linux") or platform.startswith("freebsd")):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    if platform.startswith("linux"):
        prctl = libc.prctl
        prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                          ctypes.c_ulong]
        args = (_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        return functools.partial(prctl, *args)
    procctl = libc.procctl  # int procctl(idtype_t, id_t, int, void *)
    procctl.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int, ctypes.c_void_p]
    signum = ctypes.c_int(int(signal.SIGKILL))
    request = functools.partial(procctl, _P_PID, 0, _PROC_PDEATHSIG_CTL,
                                ctypes.cast(ctypes.pointer(signum), ctypes.c_void_p))
    request.signum = signum  # the int the pointer points at lives as long as the request
    return request


def spawn(argv: list[str], log_path: Path, pass_fds: tuple = ()) -> subprocess.Popen:
    """Start ``argv`` (a list, never a shell string) with stdout and stderr going to a log;
    ``pass_fds`` stay open in it (QEMU's ``-incoming fd:N``)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, preexec_fn=deathsig_request(),
                                close_fds=True, pass_fds=pass_fds)


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
