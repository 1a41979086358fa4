"""Removing what dead refvm runs left in libvirt: their domains and their staging directories.

A run that was killed never destroys its domains, and libvirtd outlives it; the next run (the
CLI and the pytest plugin, at start) reaps every refvm-<run id>-<n> domain whose run id belongs
to no living harness process. It lives apart from the backend because it works on a bare
connection, with no backend or VmSpec, and is all that the CLI and the plugin import.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from ..errors import InfraError
from .libvirt_connection import load_binding
from .libvirt_origin import origin_of, this_machine
from .libvirt_staging import STAGE_ROOT, WORKROOT_FILE

NAME_RE = re.compile(r"^refvm-([0-9a-f]+)-(\d+)$")


def run_id_of(name: str) -> str | None:
    match = NAME_RE.match(name)
    return match.group(1) if match else None


def run_directory(name: str, workdir: Path) -> Path | None:
    """The claimed directory of the run a VM belongs to (its workdir is
    <temp root>/refvm-<run id>/<n>), written into its domain and stage for the reaper; None
    for a VM that is not a run's (tests, plans of hand-made specs)."""
    run_id = run_id_of(name)
    parent = Path(workdir).parent
    return parent if run_id is not None and parent.name == f"refvm-{run_id}" else None


def run_is_dead(run_id: str, workroot: str | None, live_run_ids) -> bool:
    """Whether run ``run_id`` of this machine is over. Read from its own claimed directory
    when the domain (or stage) names it, so a live run under another temp root is never taken
    for a dead one; else (domains of older refvm versions) whether it is among
    ``live_run_ids``, the live runs under this process's temp root."""
    from ..reaper import owner_alive

    if workroot and Path(workroot).name == f"refvm-{run_id}":
        return not owner_alive(Path(workroot))
    return run_id not in live_run_ids


def reap_domains(conn, live_run_ids, stage_root: Path | None = STAGE_ROOT,
                 log=lambda _text: None, only_machine: str | None = None) -> list[str]:
    """Destroy (and undefine) refvm-* domains of dead runs of this machine; return their names.

    Also removes the staging directories of dead runs under ``stage_root`` (local hosts).
    Domains not named refvm-<hex>-<n> are never touched, nor any whose origin metadata names
    another machine (it came through the remote protocol: only that machine can judge it).
    A domain without origin metadata is judged by ``live_run_ids`` on a local host, and left
    alone when ``only_machine`` (this machine's id) is given: on a host other machines' runs
    may share, only domains that name this machine are candidates.
    """
    libvirt = load_binding()
    live = set(live_run_ids)
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
        if origin is None:
            if only_machine is not None or run_id in live:
                continue  # no origin: judged only on a host no other machine shares
        elif origin["machine"] != machine or not run_is_dead(run_id, origin["workroot"], live):
            continue  # another machine's run, or a live one
        try:
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                log(f"could not remove stale domain {name}: {err.get_error_message()}")
                continue
        log(f"removed stale libvirt domain {name}")
        reaped.append(name)
    if stage_root is not None and Path(stage_root).is_dir():
        for staged in Path(stage_root).glob("refvm-*"):
            run_id = run_id_of(staged.name)
            if run_id is None or not staged.is_dir():
                continue
            try:
                workroot = (staged / WORKROOT_FILE).read_text().strip()
            except OSError:
                workroot = None  # staged by an older refvm
            if run_is_dead(run_id, workroot, live):
                shutil.rmtree(staged, ignore_errors=True)
                log(f"removed stale {staged}")
    return reaped


def live_run_ids(root: Path | None = None) -> set[str]:
    """Run ids whose harness process is alive (harness/reaper.py's owner.json logic)."""
    from ..paths import temp_root
    from ..reaper import owner_alive

    root = root or temp_root()
    return {p.name[len("refvm-"):] for p in root.glob("refvm-*")
            if p.is_dir() and not p.is_symlink() and owner_alive(p)}
