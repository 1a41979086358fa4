"""Build a Debian system guest (e.g. Debian 12 "bookworm") from its recipe and lock file.

Why this exists: a distribution guest (systemd, udev, agetty, sshd, a root file system on the
boot disk) is what a bhyve developer means by a reference Linux VM, and it must be as pinned
as refguest: every package by exact version and sha256 (the lock), the same lock giving the
same image bytes, nothing downloaded but Debian's packages, no loop device and no mounts.

1. ``archive``: the locked .debs from apt's configured sources, each checked against its
   sha256 (one apt run for all missing ones); a version the archive dropped stops the build;
2. ``repo``: a local apt repository holding exactly those files;
3. ``rootfs``: mmdebstrap (unshare mode) installs them, unpacked into a tree, then the guest's
   own files (host name, fstab, root password hash, fixed SSH host key: ``sshkey``);
4. ``gptdisk``: the GPT disk (BIOS boot partition, ESP, ext4 root) with the locked GRUB for
   UEFI and BIOS.
``repin`` makes a new lock from what the archive offers now and shows what changed.
All dates are ``SOURCE_DATE_EPOCH`` (the environment's, else the newest .deb's build date).
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Callable

from ..debian_busybox.recipe import RecipeError
from .archive import fetch_all
from .gptdisk import ROOT_PARTUUID, make_disk
from .recipe import load_lock, load_recipe
from .repo import deb_epoch, make_repo
from .rootfs import configure, install, remove_tree

__all__ = ["RecipeError", "build"]


def build(recipe_path: Path, root_password: str, downloads: Path, workdir: Path, output: Path,
          log: Callable[[str], None]) -> dict:
    """Build the disk image into ``output``; returns facts to record with it (the SSH host
    key). ``workdir`` is scratch space the caller creates and removes."""
    started = time.monotonic()
    if not isinstance(root_password, str) or not root_password or any(
            c in root_password for c in "\n\r\0:"):
        raise RecipeError("the root password must be a non-empty single line without ':'")
    if os.geteuid() != 0:
        raise RecipeError("building a Debian root file system needs root (the tree keeps its "
                          "owners until mke2fs -d reads it)")
    recipe = load_recipe(recipe_path)
    lock = load_lock(recipe)
    debs = fetch_all(lock.packages, downloads, log, lock.path)
    env_epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    epoch = int(env_epoch) if env_epoch.isdigit() else max(deb_epoch(d) for d in debs)
    log(f"{len(debs)} locked packages verified; SOURCE_DATE_EPOCH={epoch}")
    source = make_repo(lock.packages, debs, workdir / "repo", recipe.suite)
    tree = install(recipe, [p.name for p in lock.packages], source, workdir, epoch, log)
    seed = hashlib.sha256(lock.path.read_bytes()).digest()
    host_key = configure(tree, recipe, root_password, ROOT_PARTUUID, seed, epoch)
    make_disk(tree, recipe.hostname, recipe.kernel_cmdline, workdir, output, epoch, log)
    remove_tree(tree)
    log(f"wrote {output} ({output.stat().st_size >> 20} MiB) in "
        f"{time.monotonic() - started:.0f}s")
    return {"ssh_host_key": host_key}
