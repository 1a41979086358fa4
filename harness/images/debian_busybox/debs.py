"""Fetching the pinned .deb files: apt download, sha256 check, and the downloads cache.

Why this exists: this is the build's only network access, and its one rule is that a .deb is
used only after its sha256 matched the recipe. Keeping download, verification and the cache
together makes that rule visible in one place: a wrong file is deleted, a new download is
renamed into the cache only once verified, and a cached file is re-hashed before each use.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from ...hostdata import file_sha256
from .host import _last_line, _require_tools, _run
from .recipe import Package, RecipeError

APT_TOOLS = {"apt-get": "apt", "apt-cache": "apt"}


def verify_deb(path: Path, package: Package) -> None:
    """Delete ``path`` and fail unless it is exactly the pinned file."""
    actual = file_sha256(path)
    if actual != package.sha256:
        path.unlink()
        raise RecipeError(f"sha256 mismatch for package {package.name} {package.version}: "
                          f"expected {package.sha256}, got {actual}; the file was deleted")


def apt_download(package: Package, directory: Path, recipe_path: Path) -> Path:
    """Have apt fetch one exact version into ``directory`` (an empty temp dir) and return it.

    apt uses the host's configured Debian sources, so no mirror is named in this project.
    """
    _require_tools(APT_TOOLS)
    proc = _run(["apt-get", "download", "-q", package.apt_spec], cwd=directory, check=False)
    if proc.returncode != 0:
        offered = _run(["apt-cache", "show", "--no-all-versions", package.apt_spec], check=False)
        if offered.returncode != 0 or b"Package:" not in offered.stdout:
            raise RecipeError(f"pinned version {package.version} of package {package.name} is no "
                              f"longer offered by the archive; update {recipe_path} (if apt-get "
                              "update never ran on this host, run it first)")
        raise RecipeError(f"apt-get download {package.apt_spec} failed: {_last_line(proc.stderr)}")
    debs = sorted(directory.glob("*.deb"))
    if len(debs) != 1:
        raise RecipeError(f"apt-get download {package.apt_spec} left {len(debs)} .deb files, "
                          "expected 1")
    return debs[0]


def fetch_package(package: Package, downloads: Path, log: Callable[[str], None],
                  recipe_path: Path = Path("recipe.yaml"),
                  download: Callable[[Package, Path, Path], Path] = apt_download) -> Path:
    """Return the verified .deb in ``downloads``, downloading it if needed.

    A cached file is re-hashed before every use (a corrupt one is deleted and fetched again).
    A new download lands in a temp dir inside ``downloads`` and is renamed into place only
    after its hash matched, so other builds never see a partial or wrong file.
    """
    downloads.mkdir(parents=True, exist_ok=True)
    final = downloads / package.filename
    if final.exists():
        actual = file_sha256(final)
        if actual == package.sha256:
            log(f"using cached {final.name}")
            return final
        log(f"cached {final.name} has sha256 {actual}, expected {package.sha256}: fetching again")
        final.unlink()
    log(f"downloading {package.apt_spec}")
    tmpdir = Path(tempfile.mkdtemp(prefix=".download-", dir=downloads))
    try:
        fetched = download(package, tmpdir, recipe_path)
        verify_deb(fetched, package)
        os.replace(fetched, final)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return final
