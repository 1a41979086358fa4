"""Build the offline reference Linux guest ("refguest") from pinned Debian packages.

Why this exists: the harness needs a Linux guest that boots the same way everywhere, without
any download but Debian's archive, so that a failure means the hypervisor changed and not the
guest. The recipe (``guests/linux/refguest/recipe.yaml``) pins a kernel, busybox-static and
GRUB as exact ``.deb`` files by version and sha256; this package turns them into one raw disk
image that boots as a *disk* (not a CD) under legacy BIOS and under UEFI:

1. fetch each ``.deb`` with ``apt-get download NAME=VERSION`` (apt's configured sources, so no
   mirror is named here) into ``downloads``; a file is used only after its sha256 matched;
2. unpack them with ``dpkg-deb -x``;
3. write a gzip'd newc initramfs in Python (fixed mtimes and owners, device nodes without
   root): busybox and its applet links, the recipe's kernel modules plus their dependencies
   (read from each ``.ko``'s ``.modinfo`` section, with a ``modules.dep`` for busybox
   ``modprobe``), ``/etc/{passwd,shadow,group,hostname,modules}`` and the recipe's overlay;
4. lay out an ISO 9660 tree with the kernel, initramfs and a serial-console ``grub.cfg``, and
   do what ``grub-mkrescue`` does, but with the *extracted* GRUB: ``grub-mkrescue`` reads
   platform files only from the host's ``/usr/lib/grub/<platform>`` (``-d`` takes a single
   platform), so its steps are replayed: ``grub-mkimage -d <pinned dir>`` for
   ``i386-pc-eltorito`` and ``x86_64-efi``, an ``efi.img`` FAT made with mtools, and the same
   ``xorriso -as mkisofs`` hybrid invocation (GRUB's ``boot_hybrid.img`` MBR for BIOS disks,
   GPT/MBR EFI system partition for UEFI disks).

The result is read-only by nature (ISO 9660), so one cached image can back many guests at once.
Builds are reproducible: every timestamp comes from ``SOURCE_DATE_EPOCH`` (taken from the
environment, or else the newest file in the pinned packages), the FAT serial is fixed and the
password salt is derived from its inputs, so the same recipe gives the same image bytes.

Every failure the builder anticipates is a :class:`RecipeError` with a one-line message.

The package has one module per job, each importing only the ones before it:

- ``recipe``: the recipe file, checked field by field; :class:`RecipeError`;
- ``host``: running host programs (argv lists only) and the missing-tool message;
- ``debs``: step 1, apt download, sha256 check and the downloads cache;
- ``kmod``: module dependencies from ``.modinfo``, their load order and ``modules.dep``;
- ``initramfs``: step 3, the newc writer, the overlay and the root password hash;
- ``hybrid``: step 4, ``grub.cfg``, the GRUB images, ``efi.img``, xorriso, and the
  ``SOURCE_DATE_EPOCH`` helpers;
- this file: :func:`build`, which checks the host, unpacks the packages (step 2), finds the
  kernel, busybox and GRUB in them and runs the steps in order.
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Callable, Iterable

from .debs import fetch_package
from .host import HOST_TOOLS, _require_tools, _run
from .hybrid import _check_grub_mkimage, _source_date_epoch, grub_cfg, make_hybrid_image
from .initramfs import make_initramfs
from .kmod import ModuleTree
from .recipe import Recipe, RecipeError, load_recipe

__all__ = ["RecipeError", "build"]


def _one(paths: Iterable[Path], recipe: Recipe, what: str) -> Path:
    found = sorted(paths)
    if len(found) != 1:
        detail = "none" if not found else ", ".join(p.name for p in found)
        raise RecipeError(f"{recipe.path}: packages: expected exactly one {what}, found {detail}")
    return found[0]


def build(recipe_path: Path, root_password: str, downloads: Path, workdir: Path, output: Path,
          log: Callable[[str], None]) -> None:
    """Build the raw disk image described by ``recipe_path`` into ``output``.

    ``downloads`` keeps verified .debs between builds; ``workdir`` is scratch space the
    caller creates and removes; ``output`` appears only complete (temp name, then rename).
    """
    started = time.monotonic()
    recipe_path, downloads, workdir, output = map(Path, (recipe_path, downloads, workdir, output))
    recipe = load_recipe(recipe_path)
    if not isinstance(root_password, str) or not root_password or any(
            c in root_password for c in "\n\r\0"):
        raise RecipeError("the root password must be a non-empty single line")
    if platform.machine() not in ("x86_64", "amd64"):
        raise RecipeError(f"building {recipe.hostname} runs the pinned amd64 busybox and "
                          f"grub-mkimage, so it needs an x86_64 host, not {platform.machine()}")
    _require_tools(HOST_TOOLS)

    debs = [fetch_package(p, downloads, log, recipe.path) for p in recipe.packages]
    root = workdir / "debroot"
    root.mkdir(parents=True)
    for deb in debs:
        log(f"unpacking {deb.name}")
        _run(["dpkg-deb", "-x", deb, root], what=f"dpkg-deb -x {deb.name}")

    kernel = _one((root / "boot").glob("vmlinuz-*"), recipe, "kernel (/boot/vmlinuz-*)")
    kernel_version = kernel.name[len("vmlinuz-"):]
    moddir = _one((d for d in (root / "lib/modules" / kernel_version,
                               root / "usr/lib/modules" / kernel_version) if d.is_dir()),
                  recipe, f"module folder for kernel {kernel_version}")
    busybox = _one((p for p in (root / "bin/busybox", root / "usr/bin/busybox") if p.is_file()),
                   recipe, "busybox binary")
    mkimage = _one((p for p in (root / "usr/bin/grub-mkimage",) if p.is_file()), recipe,
                   "grub-mkimage (package grub-common)")
    grub_lib = root / "usr/lib/grub"
    for plat, package in (("i386-pc", "grub-pc-bin"), ("x86_64-efi", "grub-efi-amd64-bin")):
        if not (grub_lib / plat / "moddep.lst").is_file():
            raise RecipeError(f"{recipe.path}: packages: no GRUB {plat} platform "
                              f"(add package {package})")
    _check_grub_mkimage(mkimage)

    epoch = _source_date_epoch(root)
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch), TZ="UTC", LC_ALL="C")
    log(f"kernel {kernel_version}; SOURCE_DATE_EPOCH={epoch}")
    initrd = make_initramfs(recipe, root_password, busybox, ModuleTree(moddir), kernel_version,
                            epoch, log)
    log(f"initramfs: {len(initrd)} bytes")
    make_hybrid_image(grub_lib, mkimage, kernel, initrd, grub_cfg(recipe, kernel_version),
                      workdir, output, epoch, env, log)
    log(f"wrote {output} ({output.stat().st_size} bytes) in {time.monotonic() - started:.0f}s")
