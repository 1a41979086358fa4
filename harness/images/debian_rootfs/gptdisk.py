"""The boot disk: one GPT disk image that boots under UEFI and under legacy BIOS (CSM).

Why this exists: grub-install needs a block device (a loop device, so privileges these
machines do not give), and writes the host's GRUB, not the pinned one. Its steps are done
here on a plain file instead, with the GRUB that the lock pins (from the built root tree):

- partitions made with ``sgdisk`` on the file, with fixed GUIDs: 1 MiB BIOS boot partition,
  an EFI system partition (FAT, made with mtools, fixed serial), the ext4 root (``mke2fs -d``
  from the tree, fixed UUID, hash seed and time);
- UEFI: ``\\EFI\\BOOT\\BOOTX64.EFI`` on the ESP, a ``grub-mkimage -O x86_64-efi`` image;
- BIOS: what grub-bios-setup does for a GPT disk: ``boot.img`` in the MBR's code area (the
  protective partition table kept), pointing at ``core.img`` in the BIOS boot partition, whose
  first sector (``diskboot.img``) lists the sectors of the rest;
- both GRUBs find the ESP by its serial (an embedded config) and read one ``grub.cfg``, the
  kernel and the initrd from it, so the ext4 root needs no GRUB driver.
Every date is ``SOURCE_DATE_EPOCH``: the same tree gives the same disk bytes.
"""
from __future__ import annotations

import os
import re
import shutil
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Callable

from ..debian_busybox.host import _require_tools, _run
from ..debian_busybox.hybrid import _check_grub_mkimage, _copy_grub_platform, _set_mtimes
from ..debian_busybox.recipe import RecipeError

DISK_TOOLS = {"sgdisk": "gdisk", "mke2fs": "e2fsprogs", "debugfs": "e2fsprogs",
              "dumpe2fs": "e2fsprogs", "e2fsck": "e2fsprogs", "mformat": "mtools",
              "mcopy": "mtools"}
SECTOR = 512
MIB = 1 << 20
BIOS_START, ESP_START = 2048, 4096           # sectors
ESP_SECTORS = 96 * MIB // SECTOR
ROOT_START = ESP_START + ESP_SECTORS
ESP_SERIAL = "52454647"                      # mformat -N; GRUB reads it as 5245-4647
ESP_UUID = "5245-4647"
# Fixed identities, so the same tree gives the same bytes (and fstab/cmdline can name them).
DISK_GUID = "5245464d-0000-4000-8000-000000000000"
PART_GUIDS = ("5245464d-0001-4000-8000-000000000001", "5245464d-0002-4000-8000-000000000002",
              "5245464d-0003-4000-8000-000000000003")
ROOT_PARTUUID = PART_GUIDS[2]
ROOT_FS_UUID = "5245464d-0004-4000-8000-000000000004"
# GRUB's i386-pc boot.img (grub-core/boot/i386/pc/boot.S): offsets grub-bios-setup patches.
BOOT_KERNEL_SECTOR = 0x5C     # 64-bit LBA of core.img's first sector
BOOT_DRIVE_CHECK = 0x66       # a jmp replaced by two nops for hard disks
BOOT_CODE_END = 0x1B8         # code area; the disk signature and partition table follow
MODULES_COMMON = ["part_gpt", "fat", "search", "search_fs_uuid", "configfile", "normal",
                  "linux", "serial", "terminal", "echo", "test", "gzio", "minicmd"]


def early_config() -> str:
    return (f"search --no-floppy --fs-uuid --set=root {ESP_UUID}\n"
            "set prefix=($root)/grub\n")


def grub_cfg(hostname: str, cmdline: str) -> str:
    return ("# Written by refvm's image builder (harness/images/debian_rootfs).\n"
            "serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1\n"
            "terminal_input serial\nterminal_output serial\n"
            "if [ \"${grub_platform}\" = efi ]; then insmod efi_gop; fi\n"
            "set timeout_style=hidden\nset timeout=0\nset default=0\n"
            f"menuentry '{hostname}' {{\n"
            f"\tlinux /vmlinuz root=PARTUUID={ROOT_PARTUUID} ro {cmdline}\n"
            "\tinitrd /initrd.img\n}\n")


def root_fs_bytes(root: Path) -> int:
    """A size for the ext4 root: its content in 4 KiB blocks plus inodes, with a sixth and
    160 MiB more for ext4's own metadata and the guest's writes (logs, scratch files). (192
    MiB made debian-12's image 1018167296 bytes, over the 10^9 bytes it is allowed.)"""
    used = 0
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        used += 256 + ((st.st_size + 4095) // 4096) * 4096
    size = int(used * 1.17) + 160 * MIB
    return (size + MIB - 1) // MIB * MIB


def used_inodes(dumpe2fs_text: str) -> list[int]:
    """Inode numbers in use, from ``dumpe2fs`` output (each group's range minus its free
    inode ranges)."""
    per_group = int(re.search(r"^Inodes per group:\s+(\d+)", dumpe2fs_text, re.M).group(1))
    used = []
    for group, free in enumerate(re.findall(r"^\s+Free inodes: ?(.*)$", dumpe2fs_text, re.M)):
        first = group * per_group + 1
        numbers = set(range(first, first + per_group))
        for part in filter(None, (p.strip() for p in free.split(","))):
            low, _, high = part.partition("-")
            numbers -= set(range(int(low), int(high or low) + 1))
        used += sorted(numbers)
    return used


def clamp_inode_times(image: Path, epoch: int, workdir: Path, env: Mapping[str, str]) -> None:
    """Every used inode's access, change and creation times set to ``epoch``.

    Why: e2fsprogs 1.47.0's ``mke2fs -d`` copies each file's atime and ctime as the host saw
    them (unpacking sets ctime to now; ``E2FSPROGS_FAKE_TIME`` covers only the file system's
    own dates), so the same tree gave different bytes. debugfs rewrites them in one batch
    (with the inode checksums), about a second for the whole tree."""
    text = _run(["dumpe2fs", image], what="dumpe2fs", env=env).stdout.decode(errors="replace")
    commands = []
    for ino in used_inodes(text):
        for field in ("atime", "ctime", "crtime"):
            commands.append(f"sif <{ino}> {field} {epoch}\nsif <{ino}> {field}_extra 0\n")
    script = workdir / "clamp-times.debugfs"
    script.write_text("".join(commands))
    _run(["debugfs", "-w", "-f", script, image], what="debugfs (clamping inode times)", env=env)
    check = _run(["e2fsck", "-fn", image], what="e2fsck -fn", env=env, check=False)
    if check.returncode != 0:
        raise RecipeError(f"the root file system is not clean after mke2fs -d: "
                          f"{check.stdout.decode(errors='replace').strip()[-300:]}")


def _copy_into(source: Path, disk, offset: int) -> None:
    """Write ``source`` into the open ``disk`` at ``offset``, leaving zero MiBs as holes."""
    with open(source, "rb") as src:
        position = offset
        while chunk := src.read(MIB):
            if chunk.count(0) != len(chunk):
                disk.seek(position)
                disk.write(chunk)
            position += len(chunk)


def bios_boot_sectors(boot_img: bytes, core_img: bytes, mbr: bytes, core_lba: int) -> tuple:
    """(new MBR, patched core.img): what grub-bios-setup writes for an embedded core.img.

    The MBR keeps its disk signature and partition table; boot.img's code goes in front and
    learns where core.img starts; core.img's first sector (diskboot.img) gets one blocklist
    entry for the rest of it, loaded at segment 0x820."""
    if len(boot_img) != SECTOR or len(mbr) != SECTOR:
        raise RecipeError("boot.img and the MBR must be one 512-byte sector")
    new = bytearray(boot_img[:BOOT_CODE_END] + mbr[BOOT_CODE_END:])
    struct.pack_into("<Q", new, BOOT_KERNEL_SECTOR, core_lba)
    new[BOOT_DRIVE_CHECK:BOOT_DRIVE_CHECK + 2] = b"\x90\x90"
    sectors = (len(core_img) + SECTOR - 1) // SECTOR
    core = bytearray(core_img + b"\0" * (sectors * SECTOR - len(core_img)))
    struct.pack_into("<QHH", core, SECTOR - 12, core_lba + 1, sectors - 1, 0x820)
    return bytes(new), bytes(core)


def make_disk(tree: Path, hostname: str, cmdline: str, workdir: Path, output: Path,
              epoch: int, log: Callable[[str], None]) -> None:
    """The GPT disk image from the unpacked root ``tree`` (kernel and initrd in its /boot)."""
    _require_tools(DISK_TOOLS)
    env: Mapping[str, str] = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch), TZ="UTC",
                                  LC_ALL="C", E2FSPROGS_FAKE_TIME=str(epoch))
    grub_lib, mkimage = tree / "usr/lib/grub", tree / "usr/bin/grub-mkimage"
    for needed in (mkimage, grub_lib / "i386-pc" / "boot.img", grub_lib / "x86_64-efi"):
        if not needed.exists():
            raise RecipeError(f"the root tree has no {needed.relative_to(tree)}: the lock "
                              "must pin grub-common, grub-pc-bin and grub-efi-amd64-bin")
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    initrds = sorted((tree / "boot").glob("initrd.img-*"))
    if len(kernels) != 1 or len(initrds) != 1:
        raise RecipeError(f"expected one kernel and one initrd in /boot, found "
                          f"{[p.name for p in kernels + initrds]}")
    _check_grub_mkimage(mkimage)

    esp = workdir / "esp-tree"
    (esp / "EFI" / "BOOT").mkdir(parents=True)
    shutil.copyfile(kernels[0], esp / "vmlinuz")
    shutil.copyfile(initrds[0], esp / "initrd.img")
    for platform in ("i386-pc", "x86_64-efi"):
        _copy_grub_platform(grub_lib / platform, esp / "grub" / platform)
    (esp / "grub" / "grub.cfg").write_text(grub_cfg(hostname, cmdline))
    early = workdir / "early.cfg"
    early.write_text(early_config())
    core = workdir / "core.img"
    log("grub-mkimage: i386-pc and x86_64-efi (the locked GRUB)")
    _run([mkimage, "-d", grub_lib / "i386-pc", "-O", "i386-pc", "-o", core, "-c", early,
          "-p", "/grub", "biosdisk", *MODULES_COMMON], what="grub-mkimage (i386-pc)", env=env)
    _run([mkimage, "-d", grub_lib / "x86_64-efi", "-O", "x86_64-efi", "-o",
          esp / "EFI" / "BOOT" / "BOOTX64.EFI", "-c", early, "-p", "/grub", *MODULES_COMMON],
         what="grub-mkimage (x86_64-efi)", env=env)
    if core.stat().st_size > (ESP_START - BIOS_START) * SECTOR:
        raise RecipeError("GRUB's core.img does not fit the 1 MiB BIOS boot partition")
    _set_mtimes(esp, epoch)
    esp_img = workdir / "esp.img"
    _run(["mformat", "-i", esp_img, "-C", "-T", str(ESP_SECTORS), "-h", "64", "-s", "32",
          "-N", ESP_SERIAL, "-v", "ESP", "::"], what="mformat (ESP)", env=env)
    _run(["mcopy", "-s", "-m", "-i", esp_img, *sorted(esp.iterdir()), "::/"],
         what="mcopy (ESP)", env=env)

    root_bytes = root_fs_bytes(tree)
    root_img = workdir / "root.img"
    log(f"mke2fs -d: ext4 root of {root_bytes >> 20} MiB")
    _run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-L", "root",
          "-U", ROOT_FS_UUID, "-E", f"hash_seed={ROOT_FS_UUID}", "-d", tree, root_img,
          f"{root_bytes // 1024}k"], what="mke2fs -d (root file system)", env=env)

    clamp_inode_times(root_img, epoch, workdir, env)

    root_sectors = root_bytes // SECTOR
    total = (ROOT_START + root_sectors) * SECTOR + MIB  # room for the backup GPT
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as disk:
            disk.truncate(total)
        _run(["sgdisk", "--disk-guid", DISK_GUID,
              "-n", f"1:{BIOS_START}:{ESP_START - 1}", "-t", "1:EF02", "-c", "1:bios",
              "-u", f"1:{PART_GUIDS[0]}",
              "-n", f"2:{ESP_START}:{ROOT_START - 1}", "-t", "2:EF00", "-c", "2:esp",
              "-u", f"2:{PART_GUIDS[1]}",
              "-n", f"3:{ROOT_START}:{ROOT_START + root_sectors - 1}", "-t", "3:8300",
              "-c", "3:root", "-u", f"3:{PART_GUIDS[2]}", tmp], what="sgdisk", env=env)
        with open(tmp, "r+b") as disk:
            mbr = disk.read(SECTOR)
            boot, core_bytes = bios_boot_sectors(
                (grub_lib / "i386-pc" / "boot.img").read_bytes(), core.read_bytes(), mbr,
                BIOS_START)
            disk.seek(0)
            disk.write(boot)
            disk.seek(BIOS_START * SECTOR)
            disk.write(core_bytes)
            _copy_into(esp_img, disk, ESP_START * SECTOR)
            _copy_into(root_img, disk, ROOT_START * SECTOR)
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
