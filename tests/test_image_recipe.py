"""Unit tests of the refguest image builder: recipe checks, module resolution, initramfs
writer and the download/verify path. No network, no apt, no boot: everything runs on fakes."""
from __future__ import annotations

import gzip
import hashlib
import stat
import struct
import subprocess
from pathlib import Path

import pytest
import yaml

from harness.images import debian_busybox as db
from harness.images.debian_busybox import Package, RecipeError

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "guests" / "linux" / "refguest" / "recipe.yaml"
GOOD_SHA = "a" * 64


def recipe_dict() -> dict:
    return {
        "builder": "debian-busybox-hybrid",
        "hostname": "refguest",
        "kernel_cmdline": "console=ttyS0,115200n8",
        "modules": ["virtio_pci", "nvme"],
        "packages": [{"name": "busybox-static", "version": "1:1.35.0-4+deb12u1+b1",
                      "arch": "amd64", "sha256": GOOD_SHA}],
    }


def write_recipe(tmp_path: Path, data) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def recipe_error(tmp_path: Path, data) -> str:
    path = write_recipe(tmp_path, data)
    with pytest.raises(RecipeError) as err:
        db.load_recipe(path)
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    return message


# Recipe ----------------------------------------------------------------------------------------
def test_repository_recipe_is_valid_and_pins_every_package():
    recipe = db.load_recipe(RECIPE)
    assert recipe.hostname == "refguest"
    assert "console=ttyS0,115200n8" in recipe.kernel_cmdline.split()
    names = [p.name for p in recipe.packages]
    assert any(n.startswith("linux-image-6.1.0-") and n.endswith("-amd64") for n in names)
    assert {"busybox-static", "grub-common", "grub-pc-bin", "grub-efi-amd64-bin"} <= set(names)
    assert {"virtio_pci", "virtio_blk", "virtio_net", "nvme"} <= set(recipe.modules)
    for package in recipe.packages:
        assert len(package.sha256) == 64


def test_repository_overlay_has_init_files_with_exec_bits():
    tree = db._overlay_entries(db.load_recipe(RECIPE).overlay)
    assert stat.S_IMODE(tree["etc/init.d/rcS"].mode) == 0o755
    assert stat.S_IMODE(tree["etc/inittab"].mode) == 0o644
    assert b"ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100" in tree["etc/inittab"].data


def test_valid_minimal_recipe(tmp_path):
    recipe = db.load_recipe(write_recipe(tmp_path, recipe_dict()))
    assert recipe.packages == (
        Package("busybox-static", "1:1.35.0-4+deb12u1+b1", "amd64", GOOD_SHA),)
    assert recipe.overlay == tmp_path / "overlay"


@pytest.mark.parametrize("field", ["builder", "hostname", "kernel_cmdline", "modules", "packages"])
def test_missing_field_is_named(tmp_path, field):
    data = recipe_dict()
    del data[field]
    assert f": {field}: missing" in recipe_error(tmp_path, data)


def test_missing_package_field_is_named(tmp_path):
    data = recipe_dict()
    del data["packages"][0]["sha256"]
    assert "packages[0].sha256: missing" in recipe_error(tmp_path, data)


@pytest.mark.parametrize("bad", ["abc", "A" * 64, "g" * 64, "a" * 63, "a" * 65])
def test_bad_sha256_format(tmp_path, bad):
    data = recipe_dict()
    data["packages"][0]["sha256"] = bad
    message = recipe_error(tmp_path, data)
    assert "packages[0].sha256" in message and "64 lowercase hex digits" in message


def test_unquoted_numeric_version_must_be_quoted(tmp_path):
    text = yaml.safe_dump(recipe_dict()).replace("1:1.35.0-4+deb12u1+b1", "1.5")
    text = text.replace("'1.5'", "1.5")  # make YAML read a float
    assert "packages[0].version: must be a string (quote it" in recipe_error(tmp_path, text)


def test_unknown_fields_are_rejected(tmp_path):
    data = recipe_dict()
    data["kernel_comandline"] = "typo"
    assert "kernel_comandline: unknown field" in recipe_error(tmp_path, data)
    data = recipe_dict()
    data["packages"][0]["url"] = "x"
    assert "packages[0].url: unknown field" in recipe_error(tmp_path, data)


def test_wrong_builder(tmp_path):
    data = recipe_dict()
    data["builder"] = "debootstrap"
    assert "builder: must be 'debian-busybox-hybrid'" in recipe_error(tmp_path, data)


def test_cmdline_cannot_inject_grub_script(tmp_path):
    data = recipe_dict()
    data["kernel_cmdline"] = "console=ttyS0; reboot"
    assert "kernel_cmdline" in recipe_error(tmp_path, data)


def test_duplicate_module_and_package(tmp_path):
    data = recipe_dict()
    data["modules"] = ["nvme-core", "nvme_core"]
    assert "modules[1]: 'nvme_core' is listed twice" in recipe_error(tmp_path, data)
    data = recipe_dict()
    data["packages"].append(dict(data["packages"][0]))
    message = recipe_error(tmp_path, data)
    assert "packages[1].name: package busybox-static is listed twice" in message


def test_invalid_yaml_names_line(tmp_path):
    message = recipe_error(tmp_path, "builder: x\nmodules: [a, b\nhostname: y\n")
    assert "not valid YAML" in message and "(line " in message


def test_not_a_mapping(tmp_path):
    assert "must be a mapping" in recipe_error(tmp_path, "- a\n- b\n")


def test_unreadable_recipe(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(RecipeError, match=r"nope\.yaml: cannot read recipe"):
        db.load_recipe(missing)


def test_package_file_name_and_apt_spec():
    package = Package("busybox-static", "1:1.35.0-4", "amd64", GOOD_SHA)
    assert package.filename == "busybox-static_1%3a1.35.0-4_amd64.deb"
    assert package.apt_spec == "busybox-static:amd64=1:1.35.0-4"
    assert Package("grub-common", "2.06", "all", GOOD_SHA).apt_spec == "grub-common=2.06"


# Downloads -------------------------------------------------------------------------------------
def fake_deb(content: bytes):
    """A download function that 'fetches' ``content`` the way apt-get download would."""
    calls = []

    def download(package: Package, directory: Path, recipe_path: Path) -> Path:
        calls.append(package.name)
        path = directory / package.filename
        path.write_bytes(content)
        return path

    download.calls = calls
    return download


def test_hash_mismatch_names_package_and_both_hashes_and_deletes(tmp_path):
    content = b"!<arch>\nnot really a deb\n"
    package = Package("busybox-static", "1:1.35.0-4", "amd64", GOOD_SHA)
    downloads = tmp_path / "debs"
    with pytest.raises(RecipeError) as err:
        db.fetch_package(package, downloads, lambda m: None, download=fake_deb(content))
    message = str(err.value)
    assert "busybox-static" in message
    assert GOOD_SHA in message
    assert hashlib.sha256(content).hexdigest() in message
    assert list(downloads.iterdir()) == []  # neither the file nor the temp dir is left


def test_verify_deb_deletes_a_wrong_file(tmp_path):
    fake = tmp_path / "grub-common_2.06_amd64.deb"
    fake.write_bytes(b"tampered")
    with pytest.raises(RecipeError, match=r"sha256 mismatch for package grub-common 2\.06: "
                       rf"expected {GOOD_SHA}, got {hashlib.sha256(b'tampered').hexdigest()}"):
        db.verify_deb(fake, Package("grub-common", "2.06", "amd64", GOOD_SHA))
    assert not fake.exists()
    good = tmp_path / "good.deb"
    good.write_bytes(b"ok")
    db.verify_deb(good, Package("grub-common", "2.06", "amd64", hashlib.sha256(b"ok").hexdigest()))
    assert good.exists()


def test_verified_download_is_renamed_into_place(tmp_path):
    content = b"fake deb"
    package = Package("grub-common", "2.06-13", "amd64", hashlib.sha256(content).hexdigest())
    downloads = tmp_path / "debs"
    download = fake_deb(content)
    path = db.fetch_package(package, downloads, lambda m: None, download=download)
    assert path == downloads / "grub-common_2.06-13_amd64.deb"
    assert path.read_bytes() == content
    assert [p.name for p in downloads.iterdir()] == [path.name]
    # Second call: re-verified from the cache, not downloaded again.
    assert db.fetch_package(package, downloads, lambda m: None, download=download) == path
    assert download.calls == ["grub-common"]


def test_corrupt_cached_file_is_replaced(tmp_path):
    content = b"good"
    package = Package("grub-pc-bin", "2.06-13", "amd64", hashlib.sha256(content).hexdigest())
    downloads = tmp_path / "debs"
    downloads.mkdir()
    (downloads / package.filename).write_bytes(b"corrupted")
    messages = []
    path = db.fetch_package(package, downloads, messages.append, download=fake_deb(content))
    assert path.read_bytes() == content
    assert any("fetching again" in m for m in messages)


def test_vanished_version_message(tmp_path, monkeypatch):
    def fake_run(argv, **kwargs):
        return subprocess.CompletedProcess(argv, 100, b"",
                                           b"E: Version '9.9' for 'x' was not found")

    monkeypatch.setattr(db.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(db, "_run", fake_run)
    package = Package("grub-common", "9.9", "amd64", GOOD_SHA)
    with pytest.raises(RecipeError) as err:
        db.apt_download(package, tmp_path, Path("guests/linux/refguest/recipe.yaml"))
    assert str(err.value).startswith(
        "pinned version 9.9 of package grub-common is no longer offered by the archive; "
        "update guests/linux/refguest/recipe.yaml")


def test_missing_host_tool_names_debian_package(monkeypatch):
    monkeypatch.setattr(db.shutil, "which",
                        lambda tool: None if tool in ("xorriso", "mcopy") else "/x")
    with pytest.raises(RecipeError) as err:
        db._require_tools(db.HOST_TOOLS)
    message = str(err.value)
    assert "xorriso (Debian package xorriso)" in message
    assert "mcopy (Debian package mtools)" in message
    assert "apt-get install mtools xorriso" in message


def test_bad_password_rejected_without_echoing_it(tmp_path):
    secret = "hunter2\nroot"
    with pytest.raises(RecipeError) as err:
        db.build(RECIPE, secret, tmp_path / "d", tmp_path / "w", tmp_path / "out.img", print)
    assert "hunter2" not in str(err.value)
    assert not (tmp_path / "d").exists()


# Kernel modules --------------------------------------------------------------------------------
DEPS = {
    "virtio_ring": [],
    "virtio": ["virtio_ring"],
    "virtio_pci": ["virtio", "virtio_ring", "virtio_pci_modern_dev"],
    "virtio_pci_modern_dev": [],
    "virtio_blk": ["virtio", "virtio_ring"],
    "nvme_core": ["t10_pi"],
    "t10_pi": ["crc_t10dif"],
    "crc_t10dif": [],
    "nvme": ["nvme-core"],
}


def test_resolve_orders_dependencies_first_each_once():
    order = db.resolve_modules(["virtio_pci", "virtio_blk", "nvme"], DEPS)
    assert sorted(order) == sorted(set(order))
    for module in order:
        for dep in DEPS[module]:
            assert order.index(db.normalize_module(dep)) < order.index(module)
    assert order[-1] == "nvme"
    assert set(order) == set(DEPS)


def test_resolve_skips_builtin_and_normalizes_dashes():
    assert db.resolve_modules(["virtio-blk", "efivarfs"], DEPS, builtin=["efivarfs"]) == [
        "virtio_ring", "virtio", "virtio_blk"]


def test_resolve_missing_module_and_missing_dependency():
    with pytest.raises(RecipeError, match="the kernel has no module virtio_fs"):
        db.resolve_modules(["virtio_fs"], DEPS)
    with pytest.raises(RecipeError, match="module nvme_core needs t10_pi"):
        db.resolve_modules(["nvme"], {k: v for k, v in DEPS.items() if k != "t10_pi"})


def test_resolve_detects_cycles():
    with pytest.raises(RecipeError, match="cycle: a -> b -> a"):
        db.resolve_modules(["a"], {"a": ["b"], "b": ["a"]})


def test_modules_dep_lists_transitive_deps_like_depmod():
    order = db.resolve_modules(["nvme"], DEPS)
    text = db.modules_dep(order, DEPS, lambda name: f"kernel/{name}.ko")
    lines = dict(line.split(":", 1) for line in text.splitlines())
    assert lines["kernel/nvme.ko"].split() == ["kernel/nvme_core.ko", "kernel/t10_pi.ko",
                                               "kernel/crc_t10dif.ko"]
    assert lines["kernel/crc_t10dif.ko"] == ""


def test_module_dependencies_reads_depends_and_pre_softdeps():
    fields = {"depends": ["virtio,virtio_ring"], "softdep": ["pre: crc32c-generic post: foo"]}
    assert db.module_dependencies(fields) == (["virtio", "virtio_ring"], ["crc32c_generic"])
    assert db.module_dependencies({"depends": [""]}) == ([], [])


def elf_with_sections(sections: dict[str, bytes]) -> bytes:
    """A minimal ELF64 little-endian relocatable file with the given sections."""
    names = [""] + list(sections) + [".shstrtab"]
    shstrtab = b"\0".join(n.encode() for n in names) + b"\0"
    name_offsets = {}
    for name in names:
        name_offsets[name] = shstrtab.index(name.encode() + b"\0") if name else 0
    body = bytearray(b"\0" * 64)
    offsets = {}
    for name, data in list(sections.items()) + [(".shstrtab", shstrtab)]:
        offsets[name] = len(body)
        body += data
    shoff = len(body)
    for name in names:
        data = sections.get(name, shstrtab if name == ".shstrtab" else b"")
        body += struct.pack("<IIQQQQIIQQ", name_offsets[name], 1 if name else 0, 0, 0,
                            offsets.get(name, 0), len(data), 0, 0, 1, 0)
    header = b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * 9
    header += struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64,
                          len(names), len(names) - 1)
    body[:64] = header
    return bytes(body)


def test_read_modinfo_parses_elf_section():
    modinfo = b"license=GPL\0depends=nvme-core\0name=nvme\0vermagic=6.1.0 SMP\0"
    image = elf_with_sections({".text": b"\x90" * 16, ".modinfo": modinfo})
    fields = db.read_modinfo(image)
    assert fields["depends"] == ["nvme-core"]
    assert fields["name"] == ["nvme"]
    assert db.module_dependencies(fields)[0] == ["nvme_core"]


def test_read_modinfo_rejects_non_elf_and_missing_section():
    with pytest.raises(ValueError):
        db.read_modinfo(b"MZ" + b"\0" * 100)
    with pytest.raises(ValueError, match="no .modinfo"):
        db.read_modinfo(elf_with_sections({".text": b"\0"}))


def test_module_tree_reads_xz_modules_and_builtins(tmp_path):
    import lzma

    moddir = tmp_path / "6.1.0-test"
    (moddir / "kernel" / "drivers").mkdir(parents=True)
    image = elf_with_sections({".modinfo": b"depends=virtio\0softdep=pre: absent\0"})
    (moddir / "kernel" / "drivers" / "virtio-blk.ko.xz").write_bytes(lzma.compress(image))
    (moddir / "kernel" / "drivers" / "virtio.ko").write_bytes(
        elf_with_sections({".modinfo": b"depends=\0"}))
    (moddir / "modules.builtin").write_text("kernel/drivers/firmware/efi/efivars.ko\n")
    tree = db.ModuleTree(moddir)
    assert tree["virtio_blk"] == ["virtio"]  # absent softdep ignored
    assert tree.image("virtio_blk") == image
    assert tree.relpath("virtio_blk") == "kernel/drivers/virtio-blk.ko"
    assert "efivars" in tree.builtin
    order = db.resolve_modules(["virtio_blk", "efivars"], tree, tree.builtin)
    assert order == ["virtio", "virtio_blk"]


# Initramfs and boot config ---------------------------------------------------------------------
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
    tree = db._Tree()
    tree.file("etc/init.d/rcS", b"#!/bin/sh\n", 0o755)
    tree.symlink("sbin/init", "/bin/busybox")
    tree.chardev("dev/console", 5, 1, 0o600)
    tree.file("etc-other", b"x")
    archive = db.cpio_newc(tree, 1234567890)
    assert archive == db.cpio_newc(dict(reversed(list(tree.items()))), 1234567890)
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


def test_gzip_of_initramfs_has_no_timestamp():
    data = gzip.compress(b"x", mtime=0)
    assert data[4:8] == b"\0\0\0\0"


def test_grub_cfg_uses_serial_console_and_recipe_cmdline():
    recipe = db.load_recipe(RECIPE)
    cfg = db.grub_cfg(recipe, "6.1.0-99-amd64")
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
        db._check_grub_mkimage(fake)
    fake.write_text("#!/bin/sh\necho 'grub-mkimage (GRUB) 2.06'\n")
    db._check_grub_mkimage(fake)
