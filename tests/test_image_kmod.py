"""Unit tests of the refguest image builder's kernel module handling: .modinfo parsing,
dependency order, modules.dep and the unpacked module tree. Fake ELF files, no kernel."""
from __future__ import annotations

import struct

import pytest

from harness.images.debian_busybox.kmod import (ModuleTree, module_dependencies, modules_dep,
                                                read_modinfo, resolve_modules)
from harness.images.debian_busybox.recipe import RecipeError, normalize_module

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
    order = resolve_modules(["virtio_pci", "virtio_blk", "nvme"], DEPS)
    assert sorted(order) == sorted(set(order))
    for module in order:
        for dep in DEPS[module]:
            assert order.index(normalize_module(dep)) < order.index(module)
    assert order[-1] == "nvme"
    assert set(order) == set(DEPS)


def test_resolve_skips_builtin_and_normalizes_dashes():
    assert resolve_modules(["virtio-blk", "efivarfs"], DEPS, builtin=["efivarfs"]) == [
        "virtio_ring", "virtio", "virtio_blk"]


def test_resolve_missing_module_and_missing_dependency():
    with pytest.raises(RecipeError, match="the kernel has no module virtio_fs"):
        resolve_modules(["virtio_fs"], DEPS)
    with pytest.raises(RecipeError, match="module nvme_core needs t10_pi"):
        resolve_modules(["nvme"], {k: v for k, v in DEPS.items() if k != "t10_pi"})


def test_resolve_detects_cycles():
    with pytest.raises(RecipeError, match="cycle: a -> b -> a"):
        resolve_modules(["a"], {"a": ["b"], "b": ["a"]})


def test_modules_dep_lists_transitive_deps_like_depmod():
    order = resolve_modules(["nvme"], DEPS)
    text = modules_dep(order, DEPS, lambda name: f"kernel/{name}.ko")
    lines = dict(line.split(":", 1) for line in text.splitlines())
    assert lines["kernel/nvme.ko"].split() == ["kernel/nvme_core.ko", "kernel/t10_pi.ko",
                                               "kernel/crc_t10dif.ko"]
    assert lines["kernel/crc_t10dif.ko"] == ""


def test_module_dependencies_reads_depends_and_pre_softdeps():
    fields = {"depends": ["virtio,virtio_ring"], "softdep": ["pre: crc32c-generic post: foo"]}
    assert module_dependencies(fields) == (["virtio", "virtio_ring"], ["crc32c_generic"])
    assert module_dependencies({"depends": [""]}) == ([], [])


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
    fields = read_modinfo(image)
    assert fields["depends"] == ["nvme-core"]
    assert fields["name"] == ["nvme"]
    assert module_dependencies(fields)[0] == ["nvme_core"]


def test_read_modinfo_rejects_non_elf_and_missing_section():
    with pytest.raises(ValueError):
        read_modinfo(b"MZ" + b"\0" * 100)
    with pytest.raises(ValueError, match="no .modinfo"):
        read_modinfo(elf_with_sections({".text": b"\0"}))


def test_module_tree_reads_xz_modules_and_builtins(tmp_path):
    import lzma

    moddir = tmp_path / "6.1.0-test"
    (moddir / "kernel" / "drivers").mkdir(parents=True)
    image = elf_with_sections({".modinfo": b"depends=virtio\0softdep=pre: absent\0"})
    (moddir / "kernel" / "drivers" / "virtio-blk.ko.xz").write_bytes(lzma.compress(image))
    (moddir / "kernel" / "drivers" / "virtio.ko").write_bytes(
        elf_with_sections({".modinfo": b"depends=\0"}))
    (moddir / "modules.builtin").write_text("kernel/drivers/firmware/efi/efivars.ko\n")
    tree = ModuleTree(moddir)
    assert tree["virtio_blk"] == ["virtio"]  # absent softdep ignored
    assert tree.image("virtio_blk") == image
    assert tree.relpath("virtio_blk") == "kernel/drivers/virtio-blk.ko"
    assert "efivars" in tree.builtin
    order = resolve_modules(["virtio_blk", "efivars"], tree, tree.builtin)
    assert order == ["virtio", "virtio_blk"]
