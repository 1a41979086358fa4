"""What refvm made, and whether the process that made it still lives.

Clean-up after killed runs must never remove anything a person or another program made: a
folder that merely looks like refvm's (``$TMPDIR/refvm-photos``) was once deleted that way.
So every directory refvm makes under the temp root is

- named by an exact pattern: ``refvm-<id>`` (a run), ``refvm-xdist-<id>`` (a pool's signal
  directory), ``refvm-build-<id>`` (an image build) or ``refvm-fetch-<id>`` (a download, in
  the image cache), ``<id>`` eight hex digits;
- created fresh (never adopted: an existing directory of that name is refused), and
- marked at once with ``owner.json``: refvm's tag, the kind and name it was made as, and the
  pid, start time and boot id of the process that made it.

Only a directory with both the name and a matching marker is refvm's; it is dead when its
owner process is gone (or its pid now belongs to another process, or the host rebooted).
Everything else is *foreign*: left alone whatever its name. The same marker decides for the
things a run's directory stands for elsewhere (bhyve VMs, taps and bridges, libvirt domains and
stages, which name their run directory).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from . import hostproc
from .paths import temp_root

OWNER_FILE = "owner.json"
KEPT_FILE = "kept.json"  # a run directory whose VMs refvm run --keep-failed kept (keep.py)
TAG = "refvm-owner/1"  # what makes an owner.json refvm's own; bumped if the format changes
KINDS = {"run": "refvm-{id}", "xdist": "refvm-xdist-{id}", "build": "refvm-build-{id}",
         "fetch": "refvm-fetch-{id}", "install": "refvm-install-{id}"}
NAME_RE = re.compile(r"refvm-(?:(xdist|build|fetch|install)-)?([0-9a-f]{8})")
VM_NAME_RE = re.compile(r"refvm-([0-9a-f]{8})-([0-9]+)")  # a run's VM: refvm-<run id>-<n>
MARKER_MAX_BYTES = 4096


def new_id() -> str:
    return secrets.token_hex(4)


def kind_of(name: str) -> str | None:
    """The kind a directory name is refvm's pattern for, or None."""
    match = NAME_RE.fullmatch(name)
    return (match.group(1) or "run") if match else None


def run_id_of_vm(name: str) -> str | None:
    """The run id in a VM's name (refvm-<run id>-<n>), or None for a name refvm never gives."""
    match = VM_NAME_RE.fullmatch(name)
    return match.group(1) if match else None


def run_directory_verdict(workroot: Path | str) -> Verdict:
    """For a thing that carries refvm's marker naming its run directory (a domain's
    metadata, a stage's file, a tap's description): a live run always has its directory, so
    one that is gone is a dead run; one that exists is judged like any directory."""
    workroot = Path(workroot)
    if kind_of(workroot.name) != "run" or not workroot.is_absolute():
        return Verdict(workroot, "foreign", "it names no refvm run directory")
    if not os.path.lexists(workroot):
        return Verdict(workroot, "dead", f"its run directory {workroot} is gone")
    return judge(workroot)


def claim(directory: Path, kind: str = "run") -> None:
    """Make ``directory`` (named by ``kind``'s pattern) and mark it as this process's.

    Refuses a directory that already exists: refvm never adopts what it did not create."""
    directory = Path(directory)
    if kind_of(directory.name) != kind:
        raise ValueError(f"{directory.name!r} is not a refvm {kind} directory name")
    directory.parent.mkdir(parents=True, exist_ok=True)
    directory.mkdir()  # FileExistsError: not ours to take
    pid = os.getpid()
    marker = {"tag": TAG, "kind": kind, "name": directory.name, "pid": pid,
              "start": hostproc.start_time(pid), "boot_id": hostproc.boot_id(),
              "created": time.time()}
    (directory / OWNER_FILE).write_text(json.dumps(marker))


def mark_kept(workroot: Path, vms: list[str]) -> None:
    """Say in a run directory that its VMs were kept for a person: if its run dies, the
    automatic reap leaves it (and its files) to an explicit `refvm clean`."""
    (Path(workroot) / KEPT_FILE).write_text(json.dumps({"tag": TAG, "vms": vms,
                                                        "kept": time.time()}))


def is_kept(workroot: Path) -> bool:
    path = Path(workroot) / KEPT_FILE
    return path.is_file() and not path.is_symlink()


def make_owned(kind: str, root: Path | None = None) -> Path:
    """A fresh, claimed directory of ``kind`` under ``root`` (default: the temp root)."""
    root = Path(root or temp_root())
    while True:
        directory = root / KINDS[kind].format(id=new_id())
        try:
            claim(directory, kind)
            return directory
        except FileExistsError:
            continue  # 1 in 4 billion: draw again


@dataclass(frozen=True)
class Verdict:
    """What a reaper may do with a path: ``state`` is "live", "dead" or "foreign"."""

    path: Path
    state: str
    reason: str

    @property
    def dead(self) -> bool:
        return self.state == "dead"


def judge(directory: Path) -> Verdict:
    """Whether ``directory`` is refvm's, and if so whether its owner process lives."""
    directory = Path(directory)

    def foreign(reason: str) -> Verdict:
        return Verdict(directory, "foreign", reason)

    kind = kind_of(directory.name)
    if kind is None:
        return foreign("its name is not one refvm gives")
    if directory.is_symlink() or not directory.is_dir():
        return foreign("not a directory (refvm makes directories)")
    marker_path = directory / OWNER_FILE
    try:
        if marker_path.is_symlink() or not marker_path.is_file():
            return foreign(f"no {OWNER_FILE} marker (refvm marks every directory it makes)")
        with open(marker_path, "rb") as f:
            marker = json.loads(f.read(MARKER_MAX_BYTES + 1)[:MARKER_MAX_BYTES])
    except (OSError, ValueError):
        return foreign(f"{OWNER_FILE} is not refvm's marker")
    if not isinstance(marker, dict) or marker.get("tag") != TAG:
        return foreign(f"{OWNER_FILE} is not refvm's marker")
    if marker.get("name") != directory.name or marker.get("kind") != kind:
        return foreign(f"{OWNER_FILE} was made for another directory (a copy?)")
    pid = marker.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return foreign(f"{OWNER_FILE} names no process")
    return _owner_verdict(directory, pid, marker)


def _owner_verdict(directory: Path, pid: int, marker: dict) -> Verdict:
    if marker.get("boot_id") != hostproc.boot_id():
        return Verdict(directory, "dead", f"made by pid {pid} before this host last booted")
    started = hostproc.start_time(pid)
    if started is None:
        return Verdict(directory, "dead", f"its owner, pid {pid}, has exited")
    if started not in (marker.get("start"), "unknown"):
        return Verdict(directory, "dead", f"its owner, pid {pid}, has exited (that pid is now "
                                          f"another process, started at {started})")
    return Verdict(directory, "live", f"its owner, pid {pid}, is running")

