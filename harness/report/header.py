"""What a report's header says was tested: the host, the hypervisor, the firmware files and
guest images (each with its sha256) and refvm itself (version, git revision).

Every fact is read from the host at the end of the run; one that cannot be read is said as
such ("unknown: ..."), never guessed."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from .. import __version__
from ..errors import HarnessError
from ..hostdata import file_sha256
from ..images.cache import read_stamp
from ..paths import REPO_ROOT


def host_facts() -> dict:
    """OS name and release, kernel, machine, cores and memory of the host that ran the run."""
    facts = {"name": platform.node(), "system": platform.system(),
             "release": platform.release(), "machine": platform.machine(),
             "os": _os_name(), "cores": os.cpu_count()}
    try:
        import psutil
        facts["memory_mib"] = psutil.virtual_memory().total >> 20
    except (ImportError, OSError):
        pass
    return facts


def _os_name() -> str:
    """PRETTY_NAME of os-release(5) (Linux, FreeBSD 13+), else the system and release."""
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            for line in Path(path).read_text(errors="replace").splitlines():
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
        except OSError:
            continue
    return f"{platform.system()} {platform.release()}"


def backend_where(backend) -> str:
    """Where the run's VMs ran, for each case's ``host`` (the matrix is drawn per backend and
    host): this machine's name; for libvirt, with the URI (a pool's cases say "name URI"),
    and the URI alone when it names another host, whose name this machine's is not."""
    node = platform.node()
    uri = getattr(backend, "uri", None)
    if uri is None:
        return node
    return f"{node} {uri}" if backend.local else uri


def refvm_facts(repo: Path = REPO_ROOT) -> dict:
    """refvm's version and the git revision of its tree (``+dirty`` with local changes)."""
    return {"version": __version__, "git": git_revision(repo)}


def git_revision(repo: Path) -> str:
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return "unknown: not a git checkout"
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unknown: {err}"
    return head.stdout.strip() + ("+dirty" if dirty else "")


def firmware_facts(backend, profiles) -> list[dict]:
    """Each firmware file the run's profiles boot from: profile, file name, path, sha256."""
    out = []
    for profile in profiles:
        try:
            files = backend.firmware_files(profile)
        except HarnessError as err:
            out.append({"profile": profile, "error": str(err)})
            continue
        for path in files:
            entry = {"profile": profile, "file": Path(path).name, "path": str(path)}
            try:
                entry["sha256"] = file_sha256(Path(path))
            except OSError as err:
                entry["error"] = f"unreadable: {err.strerror}"
            out.append(entry)
    return out


def image_facts(cache, guests) -> list[dict]:
    """Each guest image: its path in the cache and the sha256 it was verified against (the
    stamp's, which the cache checks before every boot), or that it is not on this host."""
    out = []
    for guest in guests:
        path = cache.expected_path(guest)
        stamp = read_stamp(path) if path.is_file() else None
        entry = {"guest": guest.name, "path": str(path),
                 "sha256": (stamp or {}).get("sha256") or guest.image.sha256,
                 "here": path.is_file()}
        out.append(entry)
    return out
