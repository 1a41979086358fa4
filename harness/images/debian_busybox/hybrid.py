"""The boot media: grub.cfg, GRUB images from the pinned packages and the hybrid ISO 9660 disk.

Why this exists: ``grub-mkrescue`` reads platform files only from the host's
``/usr/lib/grub/<platform>``, so its steps are replayed here with the GRUB extracted from the
recipe's packages: ``grub-mkimage`` for i386-pc-eltorito and x86_64-efi, an ``efi.img`` FAT made
with mtools, and one ``xorriso -as mkisofs`` run that gives an image bootable as a disk by BIOS
and by UEFI. Every date in it comes from ``SOURCE_DATE_EPOCH`` (helpers at the end), so the
same recipe gives the same image bytes.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Callable

from .host import _last_line, _run
from .recipe import Recipe, RecipeError

# The pinned grub-mkimage is a dynamically linked host program: name the package of a
# library the host lacks instead of printing the loader's message.
LIBRARY_PACKAGES = {
    "libdevmapper.so.1.02.1": "libdevmapper1.02.1",
    "liblzma.so.5": "liblzma5",
    "libselinux.so.1": "libselinux1",
    "libudev.so.1": "libudev1",
    "libpcre2-8.so.0": "libpcre2-8-0",
}


def grub_cfg(recipe: Recipe, kernel_version: str) -> str:
    """Serial console on COM1 for GRUB itself, no menu, boot the recipe's kernel at once."""
    # The first line still names the old single-file builder: grub.cfg is part of the image,
    # so rewording it would change the image bytes of an unchanged recipe.
    return (
        "# Written by harness/images/debian_busybox.py; edit the recipe, not this file.\n"
        "serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1\n"
        "terminal_input serial\n"
        "terminal_output serial\n"
        "# UEFI: hand the firmware's framebuffer to Linux; without a video driver GRUB prints\n"
        "# \"no suitable video mode found\" on the console.\n"
        "if [ \"${grub_platform}\" = efi ]; then insmod efi_gop; fi\n"
        "set timeout_style=hidden\n"
        "set timeout=0\n"
        "set default=0\n"
        f"menuentry '{recipe.hostname} (Linux {kernel_version})' {{\n"
        f"\tlinux /boot/vmlinuz {recipe.kernel_cmdline}\n"
        "\tinitrd /boot/initrd.gz\n"
        "}\n"
    )


def _check_grub_mkimage(mkimage: Path) -> None:
    """The pinned grub-mkimage runs on the host: name the package of a missing library."""
    proc = _run([mkimage, "--version"], check=False)
    if proc.returncode == 0:
        return
    message = proc.stderr.decode(errors="replace")
    found = re.search(r"error while loading shared libraries: ([^:\s]+)", message)
    if found:
        library = found.group(1)
        package = LIBRARY_PACKAGES.get(library, f"that provides {library}")
        raise RecipeError(f"the pinned grub-mkimage cannot run here: {library} is missing; "
                          f"install the Debian package {package}")
    raise RecipeError(f"the pinned grub-mkimage cannot run here: {_last_line(proc.stderr)}")


def _partmap_config(platform_dir: Path) -> str:
    """grub-mkrescue's embedded config: insmod every partition map the platform has."""
    partmaps = (platform_dir / "partmap.lst").read_text().split()
    return "".join(f"insmod {p}\n" for p in partmaps)


def _copy_grub_platform(source: Path, dest: Path) -> None:
    """The modules and lists GRUB loads at run time (no fonts/locales: serial console only)."""
    dest.mkdir(parents=True)
    for path in sorted(source.iterdir()):
        if path.suffix in (".mod", ".lst"):
            shutil.copyfile(path, dest / path.name)


def _set_mtimes(root: Path, epoch: int) -> None:
    for path in [root, *root.rglob("*")]:
        os.utime(path, (epoch, epoch), follow_symlinks=False)


def make_hybrid_image(grub_lib: Path, mkimage: Path, kernel: Path, initrd: bytes,
                      cfg: str, workdir: Path, output: Path, epoch: int, env: Mapping[str, str],
                      log: Callable[[str], None]) -> None:
    """grub-mkrescue's steps with the pinned GRUB: one ISO 9660 image, bootable as a disk
    (and as a CD) by BIOS through i386-pc and by UEFI through x86_64-efi."""
    pc_dir, efi_dir = grub_lib / "i386-pc", grub_lib / "x86_64-efi"
    iso = workdir / "iso"
    (iso / "boot").mkdir(parents=True)
    shutil.copyfile(kernel, iso / "boot" / "vmlinuz")
    (iso / "boot" / "initrd.gz").write_bytes(initrd)
    _copy_grub_platform(pc_dir, iso / "boot" / "grub" / "i386-pc")
    _copy_grub_platform(efi_dir, iso / "boot" / "grub" / "x86_64-efi")
    (iso / "boot" / "grub" / "grub.cfg").write_text(cfg)

    log("grub-mkimage: i386-pc-eltorito and x86_64-efi (pinned GRUB)")
    pc_cfg, efi_cfg = workdir / "load-pc.cfg", workdir / "load-efi.cfg"
    pc_cfg.write_text(_partmap_config(pc_dir))
    efi_cfg.write_text(_partmap_config(efi_dir))
    # BIOS: GRUB's root is the boot drive, where the ISO 9660 file system starts at sector 0.
    _run([mkimage, "--directory", pc_dir, "--prefix", "/boot/grub",
          "--output", iso / "boot" / "grub" / "i386-pc" / "eltorito.img",
          "--format", "i386-pc-eltorito", "--compression", "auto", "--config", pc_cfg,
          "biosdisk", "iso9660"], what="grub-mkimage (i386-pc-eltorito)", env=env)
    # UEFI: "()" is the device the firmware loaded GRUB from; GRUB maps the EFI partition
    # back to the whole disk, whose ISO 9660 file system holds /boot/grub.
    efi_tree = workdir / "efi-tree"
    (efi_tree / "efi" / "boot").mkdir(parents=True)
    _run([mkimage, "--directory", efi_dir, "--prefix", "()/boot/grub",
          "--output", efi_tree / "efi" / "boot" / "bootx64.efi",
          "--format", "x86_64-efi", "--compression", "auto", "--config", efi_cfg,
          "part_gpt", "part_msdos", "fat", "part_apple", "iso9660"],
         what="grub-mkimage (x86_64-efi)", env=env)
    _set_mtimes(efi_tree, epoch)
    efi_img = iso / "efi.img"
    _run(["mformat", "-C", "-f", "2880", "-L", "16", "-N", "52454647", "-i", efi_img, "::"],
         what="mformat", env=env)
    _run(["mcopy", "-s", "-m", "-i", efi_img, efi_tree / "efi", "::/"], what="mcopy", env=env)
    _set_mtimes(iso, epoch)

    stamp = time.strftime("%Y%m%d%H%M%S00", time.gmtime(epoch))
    tmp = output.with_name(f".{output.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        log(f"xorriso: writing hybrid image (volume date {stamp})")
        _run(["xorriso", "-as", "mkisofs", "-graft-points", f"--modification-date={stamp}",
              "-V", "REFGUEST",
              "-b", "boot/grub/i386-pc/eltorito.img", "-no-emul-boot", "-boot-load-size", "4",
              "-boot-info-table", "--grub2-boot-info", "--grub2-mbr", pc_dir / "boot_hybrid.img",
              "--efi-boot", "efi.img", "-efi-boot-part", "--efi-boot-image",
              "--protective-msdos-label", "-o", tmp, "-r", iso,
              "--sort-weight", "0", "/", "--sort-weight", "1", "/boot"], what="xorriso", env=env)
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    finally:
        if tmp.exists():
            tmp.unlink()


def _source_date_epoch(root: Path) -> int:
    """SOURCE_DATE_EPOCH if set, else the newest mtime in the pinned packages: every date in
    the image derives from it, so the image depends only on the recipe."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    if value.isdigit():
        return int(value)
    # Regular files only: dpkg-deb gives them the package's dates, while folders it creates
    # carry the time of unpacking.
    return max(int(p.lstat().st_mtime) for p in root.rglob("*")
               if stat.S_ISREG(p.lstat().st_mode))
