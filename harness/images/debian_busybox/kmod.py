"""Kernel modules: which ``.ko`` files of the pinned kernel go into the initramfs, in order.

Why this exists: the recipe names only the modules it wants (virtio, nvme, ...); their
dependencies must come along, loaded first, with a ``modules.dep`` for busybox ``modprobe``.
The dependencies are read from each module's ``.modinfo`` ELF section here, not with the host's
modinfo/depmod, so the build needs no kmod and its result does not depend on the host's tools.
The resolution is a pure function of a name -> dependencies mapping, so it is unit-tested
without a kernel.
"""
from __future__ import annotations

import gzip
import lzma
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from .recipe import RecipeError, normalize_module

_MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.gz", ".ko.zst")


def module_name(filename: str) -> str | None:
    for suffix in _MODULE_SUFFIXES:
        if filename.endswith(suffix):
            return normalize_module(filename[: -len(suffix)])
    return None


def read_modinfo(image: bytes) -> dict[str, list[str]]:
    """Fields of a kernel module's ``.modinfo`` ELF section (``depends=``, ``softdep=``, ...).

    Parsed here instead of with modinfo/depmod so the build needs no kmod on the host and
    the result does not depend on the host's tools.
    """
    if image[:4] != b"\x7fELF" or image[4] != 2 or image[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", image, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", image, 0x3A)

    def section(index: int) -> tuple[int, int, int]:
        base = shoff + index * shentsize
        name, = struct.unpack_from("<I", image, base)
        offset, size = struct.unpack_from("<QQ", image, base + 24)
        return name, offset, size

    _, strtab, _ = section(shstrndx)
    for index in range(shnum):
        name_offset, offset, size = section(index)
        start = strtab + name_offset
        if image[start:image.index(b"\0", start)] == b".modinfo":
            fields: dict[str, list[str]] = {}
            for item in image[offset:offset + size].split(b"\0"):
                key, sep, value = item.partition(b"=")
                if sep:
                    fields.setdefault(key.decode(), []).append(value.decode(errors="replace"))
            return fields
    raise ValueError("no .modinfo section")


def module_dependencies(fields: Mapping[str, Sequence[str]]) -> tuple[list[str], list[str]]:
    """(hard dependencies, soft "pre:" dependencies) of a module, names normalized."""
    hard = [normalize_module(d) for v in fields.get("depends", ()) for d in v.split(",") if d]
    soft: list[str] = []
    for value in fields.get("softdep", ()):
        pre = False
        for word in value.split():
            if word in ("pre:", "post:"):
                pre = word == "pre:"
            elif pre:
                soft.append(normalize_module(word))
    return hard, soft


def resolve_modules(wanted: Iterable[str], depends: Mapping[str, Sequence[str]],
                    builtin: Iterable[str] = ()) -> list[str]:
    """Modules to load for ``wanted``, each after everything it depends on.

    ``depends`` maps every available (loadable) module to its dependencies; a wanted module
    the kernel has built in is dropped. Pure function, so it is unit-tested without a kernel.
    """
    builtin = {normalize_module(b) for b in builtin}
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: list[str]) -> None:
        if name in builtin or state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise RecipeError(f"module dependency cycle: {' -> '.join(chain + [name])}")
        if name not in depends:
            if chain:
                raise RecipeError(f"module {chain[-1]} needs {name}, "
                                  "which the kernel does not have")
            raise RecipeError(f"the kernel has no module {name} (neither loadable nor built in)")
        state[name] = "visiting"
        for dep in depends[name]:
            visit(normalize_module(dep), chain + [name])
        state[name] = "done"
        order.append(name)

    for name in wanted:
        visit(normalize_module(name), [])
    return order


class ModuleTree(Mapping):
    """The unpacked kernel's loadable modules: name -> dependencies, read lazily per module.

    Only modules the resolution reaches are opened; soft "pre:" dependencies count when the
    kernel ships them (they are optional by definition).
    """

    def __init__(self, moddir: Path):
        self.moddir = moddir
        self.paths: dict[str, Path] = {}
        for path in sorted(moddir.rglob("*.ko*")):
            name = module_name(path.name)
            if name is not None:
                self.paths.setdefault(name, path)
        builtin = moddir / "modules.builtin"
        self.builtin = set()
        if builtin.exists():
            for line in builtin.read_text().split():
                name = module_name(line.rsplit("/", 1)[-1])
                if name:
                    self.builtin.add(name)
        self._deps: dict[str, list[str]] = {}

    def image(self, name: str) -> bytes:
        """The module's uncompressed ELF image (the initramfs stores plain .ko files)."""
        path = self.paths[name]
        data = path.read_bytes()
        if path.name.endswith(".xz"):
            return lzma.decompress(data)
        if path.name.endswith(".gz"):
            return gzip.decompress(data)
        if path.name.endswith(".zst"):
            raise RecipeError(f"{path.name}: zstd-compressed modules are not supported")
        return data

    def __getitem__(self, name: str) -> list[str]:
        if name not in self._deps:
            if name not in self.paths:
                raise KeyError(name)
            try:
                hard, soft = module_dependencies(read_modinfo(self.image(name)))
            except (ValueError, struct.error, IndexError) as err:
                raise RecipeError(f"{self.paths[name]}: cannot read module info: {err}") from None
            self._deps[name] = hard + [s for s in soft if s in self.paths and s not in hard]
        return self._deps[name]

    def __contains__(self, name: object) -> bool:
        return name in self.paths

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def relpath(self, name: str) -> str:
        """Path under /lib/modules/<version>/ as stored in the initramfs (always plain .ko)."""
        rel = self.paths[name].relative_to(self.moddir).as_posix()
        return rel[: rel.index(".ko") + 3]


def modules_dep(order: Sequence[str], tree: Mapping[str, Sequence[str]],
                relpath: Callable[[str], str]) -> str:
    """A modules.dep for ``order`` (deps first): each module with all its transitive deps,
    listed like depmod does (a module before the ones it needs), for busybox modprobe."""
    position = {name: i for i, name in enumerate(order)}
    lines = []
    for name in order:
        closure: set[str] = set()
        stack = list(tree[name])
        while stack:
            dep = normalize_module(stack.pop())
            if dep in position and dep not in closure:
                closure.add(dep)
                stack.extend(tree[dep])
        deps = sorted(closure, key=lambda d: -position[d])
        lines.append(f"{relpath(name)}: {' '.join(relpath(d) for d in deps)}".rstrip())
    return "".join(line + "\n" for line in sorted(lines))
