"""Facts about this host's processes, the same way on Linux and FreeBSD.

Liveness of a run (is the harness process that made a directory still the same process?) and
the reaper's "is this pid still our hypervisor?" need a process's start time and command line.
Linux has them in /proc; FreeBSD does not mount /proc by default (they come from
``sysctl kern.proc``). psutil answers both ways from one call, so nothing here reads /proc.
"""
from __future__ import annotations

from pathlib import Path

import psutil

LINUX_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def start_time(pid: int) -> str | None:
    """When ``pid`` started, as a stable string; None when no such process runs (a zombie is
    over too); "unknown" when the host will not say (another user's process)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return f"{proc.create_time():.2f}"
    except (psutil.NoSuchProcess, ValueError):
        return None
    except psutil.AccessDenied:
        return "unknown"


def command_line(pid: int) -> list[str] | None:
    """``pid``'s argv, or None when it is gone or may not be read."""
    try:
        return psutil.Process(pid).cmdline()
    except (psutil.Error, ValueError):
        return None


def boot_id() -> str:
    """Changes at every boot of this host: Linux's random boot id where there is one, else the
    boot time (FreeBSD's kern.boottime). A pid from another boot is another process."""
    try:
        return LINUX_BOOT_ID.read_text().strip()
    except OSError:
        return f"boot-{int(psutil.boot_time())}"
