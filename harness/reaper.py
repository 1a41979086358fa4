"""Find and remove what runs that died (SIGKILL, power loss) left behind.

Every run's scratch directory (``$TMP/refvm-<run id>``) holds ``owner.json``: the pid and
start time of the harness process and the host's boot id. A directory whose owner is gone is
stale: the hypervisors whose pidfiles it holds are stopped (only if that pid's command line
still names the directory, so a recycled pid is never killed), then the directory is removed.
Directories of live runs, and anything not named refvm-*, are never touched.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

from .backends.bhyve_argv import destroy_argv
from .backends.bhyve_caps import run_quietly
from .paths import temp_root

OWNER_FILE = "owner.json"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)  # no /proc (FreeBSD without linprocfs): existence only
            return "unknown"
        except ProcessLookupError:
            return None
        except PermissionError:
            return "unknown"
    return stat.rsplit(")", 1)[1].split()[19]


def claim(workroot: Path) -> None:
    """Mark ``workroot`` as owned by this process."""
    workroot.mkdir(parents=True, exist_ok=True)
    owner = {"pid": os.getpid(), "start": process_start_time(os.getpid()), "boot_id": _boot_id(),
             "created": time.time()}
    (workroot / OWNER_FILE).write_text(json.dumps(owner))


def owner_alive(workroot: Path) -> bool:
    try:
        owner = json.loads((workroot / OWNER_FILE).read_text())
    except (OSError, ValueError):
        # No owner file yet: a run that is just starting, unless the directory is old.
        try:
            return time.time() - workroot.stat().st_mtime < 300
        except OSError:
            return False
    if owner.get("boot_id") != _boot_id():
        return False
    started = process_start_time(int(owner["pid"]))
    return started is not None and started in (owner.get("start"), "unknown")


def _stop_hypervisors(workroot: Path) -> list[int]:
    stopped = []
    for pidfile in workroot.glob("*/*.pid"):
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, ValueError):
            continue
        if str(workroot).encode() not in cmdline:
            continue  # the pid was recycled by something that is not ours
        try:
            os.kill(pid, signal.SIGKILL)
            stopped.append(pid)
        except ProcessLookupError:
            pass
    return stopped


def _destroy_bhyve_vms(run_id: str, vmm_dir: Path = Path("/dev/vmm"),
                       bhyvectl: str = "bhyvectl", log=lambda _text: None) -> list[str]:
    """bhyve VMs live in the kernel until destroyed: remove a dead run's (FreeBSD only).

    Returns the VMs bhyvectl destroyed; one it could not (failed, missing, timed out) is
    logged and the reap goes on."""
    destroyed = []
    if not vmm_dir.is_dir():
        return destroyed
    for vm in sorted(vmm_dir.glob(f"refvm-{run_id}-*")):
        status, output = run_quietly(destroy_argv(bhyvectl, vm.name), timeout=60)
        if status == 0:
            destroyed.append(vm.name)
        else:
            log(f"could not destroy stale bhyve VM {vm.name} (exit {status}): "
                f"{output.strip()[:200]}")
    return destroyed


def reap(root: Path | None = None, log=lambda _text: None) -> list[Path]:
    """Remove every stale run directory under ``root``; return those removed."""
    root = root or temp_root()
    removed = []
    for workroot in sorted(root.glob("refvm-*")):
        if not workroot.is_dir() or workroot.is_symlink() or owner_alive(workroot):
            continue
        killed = _stop_hypervisors(workroot)
        vms = _destroy_bhyve_vms(workroot.name[len("refvm-"):], log=log)
        if vms:
            log(f"destroyed stale bhyve VMs {', '.join(vms)}")
        shutil.rmtree(workroot, ignore_errors=True)
        log(f"removed stale {workroot}" + (f" (stopped pids {killed})" if killed else ""))
        removed.append(workroot)
    return removed
