"""Unit tests of the refguest image builder's initramfs writer and boot configuration: the
newc archive, grub.cfg and the pinned grub-mkimage check. No GRUB, no xorriso, no boot."""
from __future__ import annotations

import gzip
import stat
from pathlib import Path

import pytest

from harness.images.debian_busybox.hybrid import _check_grub_mkimage, grub_cfg
from harness.images.debian_busybox.initramfs import _Tree, cpio_newc, make_initramfs
from harness.images.debian_busybox.kmod import ModuleTree
from harness.images.debian_busybox.recipe import RecipeError, load_recipe

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "guests" / "linux" / "refguest" / "recipe.yaml"


def read_newc(archive: bytes) -> list[tuple[str, int, int, bytes]]:
    """(name, mode, mtime, data) per entry of a newc archive, checking its alignment."""
    entries, pos = [], 0
    while True:
        assert archive[pos:pos + 6] == b"070701"
        fields = [int(archive[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name_start = pos + 110
        name = archive[name_start:name_start + namesize - 1].decode()
        data_start = (name_start + namesize + 3) & ~3
        data = archive[data_start:data_start + filesize]
        pos = (data_start + filesize + 3) & ~3
        if name == "TRAILER!!!":
            assert pos == len(archive)
            return entries
        assert fields[2] == fields[3] == 0  # owned by root
        entries.append((name, fields[1], fields[5], data))


def test_cpio_newc_is_parents_first_root_owned_and_deterministic():
    tree = _Tree()
    tree.file("etc/init.d/rcS", b"#!/bin/sh\n", 0o755)
    tree.symlink("sbin/init", "/bin/busybox")
    tree.chardev("dev/console", 5, 1, 0o600)
    tree.file("etc-other", b"x")
    archive = cpio_newc(tree, 1234567890)
    assert archive == cpio_newc(dict(reversed(list(tree.items()))), 1234567890)
    entries = read_newc(archive)
    names = [e[0] for e in entries]
    for name in names:
        if "/" in name:
            assert names.index(name.rsplit("/", 1)[0]) < names.index(name)
    by_name = {e[0]: e for e in entries}
    rcs_mode = by_name["etc/init.d/rcS"][1]
    assert stat.S_ISREG(rcs_mode) and rcs_mode & 0o777 == 0o755
    assert stat.S_ISLNK(by_name["sbin/init"][1]) and by_name["sbin/init"][3] == b"/bin/busybox"
    assert stat.S_ISCHR(by_name["dev/console"][1])
    assert {e[2] for e in entries} == {1234567890}


FAKE_BUSYBOX = """#!/bin/sh
case "$1" in
  --list-full) printf 'bin/busybox\\nbin/sh\\nsbin/modprobe\\n' ;;
  mkpasswd) cat >/dev/null; echo '$6$salt$%s' ;;
  *) exit 1 ;;
esac
""" % ("a" * 86)


def test_initramfs_is_reproducible_gzip_without_timestamp(tmp_path):
    # The initramfs the builder writes, from the real recipe and overlay, with a fake busybox
    # and a kernel that has the recipe's modules built in (nothing to copy).
    busybox = tmp_path / "busybox"
    busybox.write_text(FAKE_BUSYBOX)
    busybox.chmod(0o755)
    recipe = load_recipe(RECIPE)
    moddir = tmp_path / "6.1.0-test"
    moddir.mkdir()
    (moddir / "modules.builtin").write_text(
        "".join(f"kernel/drivers/{m}.ko\n" for m in recipe.modules))
    modules = ModuleTree(moddir)

    def build() -> bytes:
        return make_initramfs(recipe, "secret", busybox, modules, "6.1.0-test", 1234567890,
                              log=lambda line: None)

    data = build()
    assert data[:2] == b"\x1f\x8b" and data[4:8] == b"\0\0\0\0"  # gzip, mtime 0
    assert build() == data
    entries = {e[0]: e for e in read_newc(gzip.decompress(data))}
    assert {"init", "bin/busybox", "etc/inittab", "etc/init.d/rcS", "etc/shadow"} <= set(entries)
    assert {e[2] for e in entries.values()} == {1234567890}


def test_grub_cfg_uses_serial_console_and_recipe_cmdline():
    recipe = load_recipe(RECIPE)
    cfg = grub_cfg(recipe, "6.1.0-99-amd64")
    assert "serial --unit=0 --speed=115200" in cfg
    assert "terminal_input serial" in cfg and "terminal_output serial" in cfg
    assert "set timeout=0" in cfg
    assert f"linux /boot/vmlinuz {recipe.kernel_cmdline}\n" in cfg
    assert "initrd /boot/initrd.gz" in cfg


def test_grub_mkimage_missing_library_names_debian_package(tmp_path):
    fake = tmp_path / "grub-mkimage"
    fake.write_text("#!/bin/sh\necho 'grub-mkimage: error while loading shared libraries: "
                    "libdevmapper.so.1.02.1: cannot open shared object file' >&2\nexit 127\n")
    fake.chmod(0o755)
    with pytest.raises(RecipeError, match="install the Debian package libdevmapper1.02.1"):
        _check_grub_mkimage(fake)
    fake.write_text("#!/bin/sh\necho 'grub-mkimage (GRUB) 2.06'\n")
    _check_grub_mkimage(fake)
