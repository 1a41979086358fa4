"""``refvm images repin``: pin a built guest to what Debian's archive offers now.

Why this exists: Debian's archive keeps one version of each package per suite, so a pinned
version vanishes when a newer one lands (a security kernel first of all), and every build of
that recipe then stops (by design). Repinning must be one command, and must show what it
changed, since the new pins are what the next images will be made of:

- a Debian root-file-system guest (builder ``debian-rootfs``): apt resolves the recipe's
  include list again and the lock file is rewritten (debian_rootfs/repin via archive.resolve);
- refguest (``debian-busybox-hybrid``): each pinned package moves to apt's candidate; the
  kernel package, whose name carries the kernel ABI, becomes the one ``linux-image-amd64``
  depends on now. The recipe is edited in place, its comments kept.
apt uses the host's sources and lists (``apt-get update`` first, done here when root).
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Callable

from .builders import BUILDERS
from .debian_busybox.host import _run
from .debian_busybox.recipe import Package, RecipeError

KERNEL_RE = re.compile(r"linux-image-\d[0-9.]*-\d+-amd64")


def changes(old: list[Package], new: list[Package]) -> list[str]:
    """Lines saying what moved: changed versions, new and dropped packages (sorted)."""
    before, after = {p.name: p for p in old}, {p.name: p for p in new}
    lines = []
    for name in sorted(before.keys() | after.keys()):
        a, b = before.get(name), after.get(name)
        if a and b and (a.version, a.sha256) != (b.version, b.sha256):
            lines.append(f"  {name}: {a.version} -> {b.version}")
        elif b and not a:
            lines.append(f"  + {name} {b.version}")
        elif a and not b:
            lines.append(f"  - {name} {a.version}")
    return lines


def candidate(name: str, arch: str) -> Package:
    """apt's candidate of ``name`` with its archive sha256."""
    spec = name if arch == "all" else f"{name}:{arch}"
    shown = _run(["apt-cache", "show", "--no-all-versions", spec], check=False)
    fields = dict(re.findall(r"^([A-Za-z0-9-]+): (.*)$", shown.stdout.decode(errors="replace"),
                             re.MULTILINE))
    if shown.returncode != 0 or "SHA256" not in fields:
        raise RecipeError(f"the archive offers no package {name} ({arch}) now")
    return Package(name, fields["Version"], arch, fields["SHA256"])


def current_kernel_package() -> str:
    """The versioned kernel package linux-image-amd64's candidate depends on."""
    shown = _run(["apt-cache", "show", "--no-all-versions", "linux-image-amd64"],
                 what="apt-cache show linux-image-amd64").stdout.decode(errors="replace")
    found = KERNEL_RE.search(re.search(r"^Depends: (.*)$", shown, re.MULTILINE).group(1))
    if not found:
        raise RecipeError("linux-image-amd64 depends on no linux-image-<abi>-amd64 package")
    return found.group(0)


def repin_refguest(recipe_path: Path) -> list[str]:
    from .debian_busybox.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    text = recipe_path.read_text()
    new = []
    for old in recipe.packages:
        name = current_kernel_package() if KERNEL_RE.fullmatch(old.name) else old.name
        pkg = candidate(name, old.arch)
        new.append(pkg)
        entry = re.compile(rf"(- name: ){re.escape(old.name)}\n(\s+version: ).*\n"
                           rf"(\s+arch: .*\n)(\s+sha256: ).*\n")
        text, count = entry.subn(lambda m: f"{m.group(1)}{pkg.name}\n{m.group(2)}{pkg.version}\n"
                                 f"{m.group(3)}{m.group(4)}{pkg.sha256}\n", text)
        if count != 1:
            raise RecipeError(f"{recipe_path}: package {old.name}: not written as name, "
                              "version, arch, sha256 lines; edit it by hand")
    lines = changes(list(recipe.packages), new)
    if lines:
        tmp = recipe_path.with_suffix(".yaml.tmp")
        tmp.write_text(text)
        load_recipe(tmp)  # what is written must still load
        os.replace(tmp, recipe_path)
    return lines


def repin_rootfs(recipe_path: Path) -> list[str]:
    from .debian_rootfs.archive import resolve
    from .debian_rootfs.recipe import load_lock, load_recipe, lock_text

    recipe = load_recipe(recipe_path)
    try:
        old = list(load_lock(recipe).packages)
    except RecipeError:
        old = []  # no lock yet, or one that no longer loads: every package is new
    with tempfile.TemporaryDirectory(prefix="refvm-repin-") as tmp:
        new = resolve(recipe.include, Path(tmp), recipe.suite)
    lines = changes(old, new)
    if lines or not recipe.lock_path.exists():
        recipe.lock_path.write_text(lock_text(recipe, new))
    return lines


def repin(recipe_path: Path, update: bool, log: Callable[[str], None]) -> list[str]:
    """Rewrite the pins of ``recipe_path``; the changes, one line each (empty: none)."""
    from .builders import builder_module

    if update and os.geteuid() == 0:
        log("apt-get update")
        _run(["apt-get", "update", "-qq"], what="apt-get update")
    module = builder_module(recipe_path).__name__.rsplit(".", 1)[-1]
    if module == BUILDERS["debian-rootfs"]:
        return repin_rootfs(recipe_path)
    return repin_refguest(recipe_path)
