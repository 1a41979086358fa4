"""The Debian root-file-system recipe and its lock file, read and checked.

Why this exists: a distribution guest is hundreds of packages, so its recipe names only what
it wants (``include``) while a separate lock file pins every package apt resolved, each by
exact version and sha256, the same discipline as refguest's recipe. The build installs exactly
the locked set; ``refvm images repin`` rewrites the lock (harness/images/debian_rootfs/repin.py).
Values that reach a command line or a file in the image are checked here, once.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..debian_busybox.recipe import (_NAME_RE, Package, RecipeError, host_and_cmdline,
                                     parse_packages, read_fields)

BUILDER_NAME = "debian-rootfs"
RECIPE_FIELDS = ("builder", "hostname", "suite", "kernel_cmdline", "include", "lock")
LOCK_FIELDS = ("suite", "packages")
_SUITE_RE = re.compile(r"[a-z][a-z0-9-]{1,30}")
_LOCK_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+\.yaml")


@dataclass(frozen=True)
class RootfsRecipe:
    path: Path
    hostname: str
    suite: str
    kernel_cmdline: str
    include: tuple[str, ...]
    lock_name: str

    @property
    def lock_path(self) -> Path:
        return self.path.parent / self.lock_name


@dataclass(frozen=True)
class Lock:
    path: Path
    suite: str
    packages: tuple[Package, ...]


def load_recipe(path: Path) -> RootfsRecipe:
    """Read and check a recipe; every problem names the file and the field to edit."""
    path = Path(path)
    data, fail = read_fields(path, RECIPE_FIELDS, builder=BUILDER_NAME)
    hostname, cmdline = host_and_cmdline(data, fail)
    suite = data["suite"]
    if not isinstance(suite, str) or not _SUITE_RE.fullmatch(suite):
        raise fail("suite", f"must be a Debian suite name such as bookworm, got {suite!r}")
    include = data["include"]
    if not isinstance(include, list) or not include:
        raise fail("include", "must be a non-empty list of Debian package names")
    for i, name in enumerate(include):
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise fail(f"include[{i}]", f"not a Debian package name: {name!r}")
        if include.index(name) != i:
            raise fail(f"include[{i}]", f"{name!r} is listed twice")
    lock = data["lock"]
    if not isinstance(lock, str) or not _LOCK_NAME_RE.fullmatch(lock):
        raise fail("lock", f"must be a file name beside the recipe (NAME.yaml), got {lock!r}")
    return RootfsRecipe(path, hostname, suite, cmdline, tuple(include), lock)


def load_lock(recipe: RootfsRecipe) -> Lock:
    """The recipe's lock file; a missing one says how to make it."""
    path = recipe.lock_path
    if not path.exists():
        raise RecipeError(f"{path}: missing; make it with: refvm images repin "
                          f"--guest GUEST (the guest whose image is {recipe.path})")
    data, fail = read_fields(path, LOCK_FIELDS)
    if data["suite"] != recipe.suite:
        raise fail("suite", f"{data['suite']!r} is not the recipe's suite {recipe.suite!r}: "
                   "repin")
    packages = parse_packages(data["packages"], fail)
    names = {p.name for p in packages}
    missing = [n for n in recipe.include if n not in names]
    if missing:
        raise fail("packages", f"the recipe includes {', '.join(missing)}, which the lock "
                   "does not pin: repin")
    return Lock(path, data["suite"], packages)


def lock_text(recipe: RootfsRecipe, packages: list[Package]) -> str:
    """The lock file's bytes: one flow mapping per package, sorted by name (stable diffs)."""
    lines = [f"# Written by `refvm images repin`: every package of {recipe.hostname}'s image,",
             f"# as apt resolved {recipe.path.name}'s include list in {recipe.suite}. Do not edit",
             "# by hand; each .deb must have exactly this sha256.",
             f"suite: {recipe.suite}", "packages:"]
    for p in sorted(packages, key=lambda p: p.name):
        lines.append(f"  - {{name: {p.name}, version: '{p.version}', arch: {p.arch}, "
                     f"sha256: {p.sha256}}}")
    return "\n".join(lines) + "\n"
