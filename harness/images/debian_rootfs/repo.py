"""A local flat apt repository holding exactly the locked .debs, for mmdebstrap to install.

Why this exists: mmdebstrap resolves with apt, and apt takes whatever the newest version in its
sources is. Given a repository that holds only the verified, locked files, apt can choose only
them, so the installed set is the lock and nothing else, whatever the archive holds today.
The ``Packages`` index is each .deb's own control stanza plus its name, size and sha256
(what dpkg-scanpackages writes); apt checks every file against it before installing.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Sequence

from ...hostdata import file_sha256
from ..debian_busybox.host import _run
from ..debian_busybox.recipe import Package, RecipeError


def deb_epoch(deb: Path) -> int:
    """The build date dpkg-deb put in the .deb's first ar member header (bytes 24..36)."""
    with open(deb, "rb") as f:
        head = f.read(60)
    if head[:8] != b"!<arch>\n":
        raise RecipeError(f"{deb.name}: not a .deb (no ar header)")
    try:
        return int(head[24:36].decode().strip())
    except ValueError:
        raise RecipeError(f"{deb.name}: unreadable date in its ar header") from None


def _link_or_copy(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


def make_repo(packages: Sequence[Package], debs: Sequence[Path], repo: Path,
              suite: str) -> str:
    """Lay out ``repo`` (readable by the unprivileged user mmdebstrap's apt may run as) and
    return its one-line sources.list entry."""
    repo.mkdir(parents=True)
    os.chmod(repo, 0o755)
    stanzas = []
    for package, deb in zip(packages, debs):
        control = _run(["dpkg-deb", "-f", deb], what=f"dpkg-deb -f {deb.name}").stdout.decode()
        _link_or_copy(deb, repo / deb.name)
        os.chmod(repo / deb.name, 0o644)
        stanzas.append(control.rstrip("\n") + f"\nFilename: ./{deb.name}\n"
                       f"Size: {deb.stat().st_size}\nSHA256: {file_sha256(deb)}\n")
    index = "\n".join(stanzas).encode()
    (repo / "Packages").write_bytes(index)
    # mmdebstrap picks the Essential packages of the suite it is given (apt's ?codename), so
    # the repository says which suite it is; unsigned, hence trusted=yes on the source line.
    (repo / "Release").write_text(
        f"Suite: {suite}\nCodename: {suite}\nArchitectures: amd64 all\nComponents: main\n"
        f"SHA256:\n {hashlib.sha256(index).hexdigest()} {len(index)} Packages\n")
    # copy://: apt copies each file into the chroot's cache, where dpkg inside can read it.
    return f"deb [trusted=yes] copy://{repo} ./"
