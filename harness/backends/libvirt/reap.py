"""Removing what dead refvm runs left in libvirt: their domains and their staging directories.

A run that was killed never destroys its domains, and libvirtd outlives it; the next run (the
CLI and the pytest plugin, at start) reaps every refvm-<run id>-<n> domain that carries refvm's
mark (origin metadata naming this machine and its run directory) and whose run is dead
(harness/ownership.py). A domain or stage directory without that mark is left alone, whatever
its name. It lives apart from the backend because it works on a bare connection, with no
backend or VmSpec, and is all that the CLI and the plugin import.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ...errors import InfraError
from ...ownership import Verdict, run_directory_verdict, run_id_of_vm
from .connection import load_binding
from .origin import origin_of, this_machine
from .staging import STAGE_ROOT, WORKROOT_FILE

def run_id_of(name: str) -> str | None:
    return run_id_of_vm(name)


def run_directory(name: str, workdir: Path) -> Path | None:
    """The claimed directory of the run a VM belongs to (its workdir is
    <temp root>/refvm-<run id>/<n>), written into its domain and stage for the reaper; None
    for a VM that is not a run's (tests, plans of hand-made specs)."""
    run_id = run_id_of(name)
    parent = Path(workdir).parent
    return parent if run_id is not None and parent.name == f"refvm-{run_id}" else None


def run_verdict(run_id: str, workroot: str | None) -> Verdict | None:
    """Whether run ``run_id`` of this machine is over, read from the run directory its domain
    (or stage) names, so a live run under another temp root is never taken for a dead one.
    None when nothing names a run directory of that id: not refvm's mark, so not to be
    judged (domains of refvm versions before the mark are left alone too)."""
    if not workroot or Path(workroot).name != f"refvm-{run_id}":
        return None
    verdict = run_directory_verdict(workroot)
    return None if verdict.state == "foreign" else verdict


def reap_domains(conn, stage_root: Path | None = STAGE_ROOT, log=lambda _text: None,
                 only_machine: str | None = None, dry_run: bool = False) -> list[str]:
    """Destroy (and undefine) refvm's domains of dead runs of this machine; return their names.

    Also removes the staging directories of dead runs under ``stage_root`` (local hosts).
    Only domains named refvm-<run id>-<n> whose origin metadata names this machine
    (``only_machine``, default this one) and a dead run directory are touched: one that names
    another machine came through the remote protocol, and only that machine can judge it.
    ``dry_run`` says what would go, and why, and touches nothing.
    """
    libvirt = load_binding()
    machine = only_machine or this_machine()
    reaped = []
    try:
        domains = conn.listAllDomains(0)
    except libvirt.libvirtError as err:
        raise InfraError(f"cannot list the domains: {err.get_error_message()}") from None
    for dom in domains:
        try:
            name = dom.name()
        except libvirt.libvirtError:
            continue
        run_id = run_id_of(name)
        if run_id is None:
            continue
        origin = origin_of(dom, libvirt)
        if origin is None or origin["machine"] != machine:
            continue  # not marked as refvm's, or another machine's run
        verdict = run_verdict(run_id, origin["workroot"])
        if verdict is None or not verdict.dead:
            if dry_run:
                log(f"kept libvirt domain {name}: "
                    f"{verdict.reason if verdict else 'it names no run directory'}")
            continue
        if dry_run:
            log(f"would remove libvirt domain {name}: {verdict.reason}")
            reaped.append(name)
            continue
        try:
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                log(f"could not remove stale domain {name}: {err.get_error_message()}")
                continue
        log(f"removed stale libvirt domain {name}: {verdict.reason}")
        reaped.append(name)
    if stage_root is not None and Path(stage_root).is_dir():
        for staged in Path(stage_root).glob("refvm-*"):
            run_id = run_id_of(staged.name)
            if run_id is None or not staged.is_dir():
                continue
            try:
                workroot = (staged / WORKROOT_FILE).read_text(errors="replace")[:4096].strip()
            except OSError:
                workroot = None  # no mark: not (provably) refvm's
            verdict = run_verdict(run_id, workroot)
            if verdict is None or not verdict.dead:
                continue
            if not dry_run:
                shutil.rmtree(staged, ignore_errors=True)
            log(f"{'would remove' if dry_run else 'removed'} stale {staged}: {verdict.reason}")
    return reaped
