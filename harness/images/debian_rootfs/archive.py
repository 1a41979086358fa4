"""Debian's archive as apt on this host sees it: fetch the locked .debs, resolve a new lock.

Why this exists: the lock names a few hundred packages, so they are fetched with one
``apt-get download`` (one process per package would cost minutes) and each file is still
used only after its sha256 matched the lock (the rule of debian_busybox/debs.py). A version
the archive no longer offers stops the build with its name and the way out (repin).
Resolution for a new lock asks apt itself what an empty system needs for the recipe
(``apt-get -s install`` against an empty dpkg status), so no resolver is written here.
apt uses the host's configured sources: no mirror is named in this project.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from ...hostdata import file_sha256
from ..debian_busybox.debs import APT_TOOLS
from ..debian_busybox.host import _last_line, _require_tools, _run
from ..debian_busybox.recipe import Package, RecipeError

_INST_RE = re.compile(r"^Inst (\S+) \((\S+) .*\[([a-z0-9-]+)\]\)", re.MULTILINE)


def _cached(package: Package, downloads: Path) -> Path | None:
    path = downloads / package.filename
    if path.exists():
        if file_sha256(path) == package.sha256:
            return path
        path.unlink()  # corrupt or replaced: fetched again below
    return None


def not_offered(packages: Iterable[Package]) -> list[Package]:
    """The packages whose pinned version apt's lists no longer hold."""
    gone = []
    for package in packages:
        shown = _run(["apt-cache", "show", "--no-all-versions", package.apt_spec], check=False)
        if shown.returncode != 0 or b"Package:" not in shown.stdout:
            gone.append(package)
    return gone


def fetch_all(packages: Iterable[Package], downloads: Path, log: Callable[[str], None],
              lock_path: Path) -> list[Path]:
    """The verified .deb of every package, in order; missing ones fetched in one apt run.

    A new file lands in a temp dir inside ``downloads`` and is renamed into place only after
    its sha256 matched; a wrong one is deleted and named."""
    packages = list(packages)
    downloads.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if _cached(p, downloads) is None]
    if missing:
        _require_tools(APT_TOOLS)
        log(f"downloading {len(missing)} of {len(packages)} pinned packages")
        tmpdir = Path(tempfile.mkdtemp(prefix=".download-", dir=downloads))
        try:
            proc = _run(["apt-get", "download", "-q", *(p.apt_spec for p in missing)],
                        cwd=tmpdir, check=False)
            if proc.returncode != 0:
                gone = not_offered(missing)
                if gone:
                    names = ", ".join(f"{p.name} {p.version}" for p in gone[:10])
                    more = f" and {len(gone) - 10} more" if len(gone) > 10 else ""
                    raise RecipeError(
                        f"the archive no longer offers pinned {names}{more}; rewrite the lock "
                        f"with `refvm images repin` ({lock_path}; if apt-get update never ran "
                        "on this host, run it first)")
                raise RecipeError(f"apt-get download failed: {_last_line(proc.stderr)}")
            for number, package in enumerate(missing, 1):
                got = tmpdir / package.filename
                if not got.exists():
                    raise RecipeError(f"apt-get download did not leave {package.filename}")
                actual = file_sha256(got)
                if actual != package.sha256:
                    got.unlink()
                    raise RecipeError(f"sha256 mismatch for package {package.name} "
                                      f"{package.version}: expected {package.sha256}, got "
                                      f"{actual}; the file was deleted")
                os.replace(got, downloads / package.filename)
                if number % 25 == 0 or number == len(missing):
                    log(f"verified {number}/{len(missing)} downloaded packages")
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
    return [downloads / p.filename for p in packages]


def foreign_suites(policy: str, suite: str) -> list[str]:
    """The suites in ``apt-cache policy`` output other than ``suite`` and its -updates,
    -security and -backports: apt would resolve from them too (and their versions win)."""
    mine = {suite, f"{suite}-updates", f"{suite}-security", f"{suite}-backports"}
    return sorted({name for name in re.findall(r"^\s*release .*\bn=([^,\s]+)", policy,
                                                re.MULTILINE) if name not in mine})


def resolve(include: Iterable[str], workdir: Path, suite: str) -> list[Package]:
    """What apt would install on an empty system for Debian's Essential packages plus
    ``include`` (no Recommends), with the archive's sha256 of each file. apt resolves from
    this host's sources, so they must be ``suite``'s alone: a trixie host would write trixie's
    packages into a lock that says bookworm."""
    _require_tools(APT_TOOLS)
    policy = _run(["apt-cache", "policy"], what="apt-cache policy").stdout.decode(
        errors="replace")
    if suite not in re.findall(r"\bn=([^,\s]+)", policy):
        raise RecipeError(f"this host's apt sources do not offer {suite}: repin on a {suite} "
                          f"host (or one whose sources list {suite})")
    others = foreign_suites(policy, suite)
    if others:
        raise RecipeError(f"this host's apt sources offer {', '.join(others)} besides "
                          f"{suite}: apt would mix them into the lock; repin on a host whose "
                          f"sources list {suite} alone")
    status = workdir / "empty-status"
    status.write_bytes(b"")
    empty = ["-o", f"Dir::State::status={status}", "-o", "Debug::NoLocking=1"]
    avail = _run(["apt-cache", *empty, "dumpavail"], what="apt-cache dumpavail").stdout
    essential = sorted({m.group(1).decode() for m in re.finditer(
        rb"^Package: (\S+)\n(?:[^\n]+\n)*?Essential: yes$", avail, re.MULTILINE)})
    if not essential:
        raise RecipeError("apt knows no Essential packages: run apt-get update first")
    sim = _run(["apt-get", "-s", *empty, "-o", "APT::Install-Recommends=false", "install",
                *essential, *include], what="apt-get -s install").stdout.decode()
    chosen = _INST_RE.findall(sim)
    if not chosen:
        raise RecipeError(f"apt resolved nothing: {sim.strip()[-300:]}")
    specs = [f"{n}:{a}={v}" if a != "all" else f"{n}={v}" for n, v, a in chosen]
    shown = _run(["apt-cache", "show", "--no-all-versions", *specs], what="apt-cache show")
    sums = {}
    for stanza in shown.stdout.decode(errors="replace").split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z0-9-]+): (.*)$", stanza, re.MULTILINE))
        if "Package" in fields and "SHA256" in fields:
            sums[(fields["Package"], fields["Version"], fields["Architecture"])] = \
                fields["SHA256"]
    packages = []
    for name, version, arch in chosen:
        sha = sums.get((name, version, arch))
        if sha is None:
            raise RecipeError(f"apt-cache show gave no SHA256 for {name} {version} {arch}")
        packages.append(Package(name, version, arch, sha))
    return packages
