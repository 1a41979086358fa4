"""Find and remove what runs that died (SIGKILL, power loss) left behind, and nothing else.

Only directories refvm made and marked (harness/ownership.py) are candidates: a run directory
(``$TMP/refvm-<run id>``), a pool's signal directory, an image build's. One whose owner process
is gone is dead: the hypervisors whose pidfiles it holds are stopped (only if that pid's command
line still names the directory, so a recycled pid is never killed), the bhyve VMs, taps and
bridges that name its run are destroyed, then the directory is removed. Anything else named
like refvm's is foreign and left alone; it is reported once per process, so a person can see
why it stays. ``dry_run`` says what would go, and why, without touching anything.
"""
from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

from . import hostproc
from .backends.bhyve.argv import destroy_argv
from .backends.bhyve.caps import run_quietly
from .backends.bhyve.ifaces import reap_interfaces
from .ownership import VM_NAME_RE, Verdict, is_kept, judge
from .paths import temp_root

_reported_foreign: set[Path] = set()


def _stop_hypervisors(workroot: Path, dry_run: bool = False) -> list[int]:
    stopped = []
    for pidfile in workroot.glob("*/*.pid"):
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            continue
        argv = hostproc.command_line(pid)
        if argv is None or not any(str(workroot) in arg for arg in argv):
            continue  # gone, or the pid was recycled by something that is not ours
        try:
            if not dry_run:
                os.kill(pid, signal.SIGKILL)
            stopped.append(pid)
        except ProcessLookupError:
            pass
    return stopped


def _destroy_bhyve_vms(run_id: str, vmm_dir: Path = Path("/dev/vmm"),
                       bhyvectl: str = "bhyvectl", log=lambda _text: None,
                       dry_run: bool = False) -> list[str]:
    """bhyve VMs live in the kernel until destroyed: remove a dead run's (FreeBSD only).

    Only VMs named exactly refvm-<this run id>-<n>, or, for a Windows install's directory
    (``run_id`` install-<id>), its one VM, which is named after it: refvm-install-<id>. Returns the VMs bhyvectl destroyed (would
    destroy, with ``dry_run``); one it could not (failed, missing, timed out) is logged and the
    reap goes on."""
    destroyed = []
    if not vmm_dir.is_dir():
        return destroyed
    for vm in sorted(vmm_dir.iterdir()):
        if not _started_by(run_id, vm.name):
            continue
        status, output = (0, "") if dry_run else run_quietly(destroy_argv(bhyvectl, vm.name),
                                                             timeout=60)
        if status == 0:
            destroyed.append(vm.name)
        else:
            log(f"could not destroy stale bhyve VM {vm.name} (exit {status}): "
                f"{output.strip()[:200]}")
    return destroyed


def _started_by(run_id: str, vm_name: str) -> bool:
    if run_id.startswith("install-"):
        return vm_name == f"refvm-{run_id}"
    match = VM_NAME_RE.fullmatch(vm_name)
    return bool(match) and match.group(1) == run_id


def _remove_dead(verdict: Verdict, log, dry_run: bool) -> None:
    workroot = verdict.path
    verb = "would remove" if dry_run else "removed"
    killed = _stop_hypervisors(workroot, dry_run)
    if killed:
        log(f"{'would stop' if dry_run else 'stopped'} pids {killed} of {workroot}")
    vms = _destroy_bhyve_vms(workroot.name[len("refvm-"):], log=log, dry_run=dry_run)
    if vms:
        log(f"{'would destroy' if dry_run else 'destroyed'} stale bhyve VMs {', '.join(vms)}")
    if not dry_run:
        shutil.rmtree(workroot, ignore_errors=True)
    log(f"{verb} stale {workroot}: {verdict.reason}")


def survey(root: Path | None = None) -> list[Verdict]:
    """A verdict for every entry under ``root`` whose name starts with refvm-."""
    root = Path(root or temp_root())
    try:
        entries = sorted(p for p in root.iterdir() if p.name.startswith("refvm-"))
    except OSError:
        return []
    return [judge(path) for path in entries]


def reap(root: Path | None = None, log=lambda _text: None, dry_run: bool = False,
         report_foreign: bool = True, kept: bool = False) -> list[Path]:
    """Remove every dead refvm directory under ``root`` and what its run left in the kernel
    (bhyve VMs, taps, bridges); return the directories removed (would remove, ``dry_run``).
    What is only named like refvm's is left alone, and said once per process when
    ``report_foreign`` (always with ``dry_run``). A dead run directory whose VMs were kept
    for a person (refvm run --keep-failed) goes only when ``kept`` (`refvm clean`)."""
    removed = []
    for verdict in survey(root):
        if verdict.state == "foreign":
            if dry_run or (report_foreign and verdict.path not in _reported_foreign):
                _reported_foreign.add(verdict.path)
                log(f"left alone {verdict.path}: {verdict.reason}")
        elif verdict.dead and is_kept(verdict.path) and not kept:
            log(f"left {verdict.path} for you: its VMs were kept (refvm run --keep-failed) "
                f"and {verdict.reason}; `refvm clean` removes it")
        elif verdict.dead:
            _remove_dead(verdict, log, dry_run)
            removed.append(verdict.path)
        elif dry_run:
            log(f"kept {verdict.path}: {verdict.reason}")
    reap_interfaces(log=log, dry_run=dry_run)
    return removed
