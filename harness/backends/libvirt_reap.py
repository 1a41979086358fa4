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

from .libvirt_connection import load_binding
from .libvirt_origin import origin_of
from .libvirt_staging import STAGE_ROOT

NAME_RE = re.compile(r"^refvm-([0-9a-f]+)-(\d+)$")


def run_id_of(name: str) -> str | None:
    match = NAME_RE.match(name)
    return match.group(1) if match else None


def reap_domains(conn, live_run_ids, stage_root: Path | None = STAGE_ROOT,
                 log=lambda _text: None, only_machine: str | None = None) -> list[str]:
    """Destroy (and undefine) refvm-* domains whose run id is not live; return their names.

    Also removes the staging directories of those runs under ``stage_root`` (local hosts).
    Domains not named refvm-<hex>-<n> are never touched. ``live_run_ids`` is what this
    machine knows: on a host other machines' runs may share, pass ``only_machine`` (this
    machine's id, libvirt_origin.this_machine()) and only domains whose origin metadata names
    that machine are candidates.
    """
    libvirt = load_binding()
    live = set(live_run_ids)
    reaped = []
    for dom in conn.listAllDomains(0):
        try:
            name = dom.name()
        except libvirt.libvirtError:
            continue
        run_id = run_id_of(name)
        if run_id is None or run_id in live:
            continue
        if only_machine is not None:
            origin = origin_of(dom, libvirt)
            if origin is None or origin["machine"] != only_machine:
                continue  # another machine's run (or no origin): not ours to judge
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
            if run_id is not None and run_id not in live and staged.is_dir():
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
