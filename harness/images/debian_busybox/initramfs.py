"""The initramfs: busybox, kernel modules, account files and the overlay as a gzip'd newc cpio.

Why this exists: the guest's whole root file system is this archive. It is written in Python
rather than with cpio(1) and mknod so that device nodes need no root and the bytes depend only
on the inputs: fixed owners and mtimes, sorted entries, a gzip header without a timestamp and
a password salt derived from the password and host name.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .host import _run
from .kmod import ModuleTree, modules_dep, resolve_modules
from .recipe import Recipe, RecipeError, normalize_module

_SALT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class CpioEntry:
    mode: int                 # full st_mode: file type and permissions
    data: bytes = b""         # file contents, or the target of a symlink
    rdev: tuple[int, int] = (0, 0)


def cpio_newc(entries: Mapping[str, CpioEntry], mtime: int) -> bytes:
    """A newc ("070701") archive, owned by root, every mtime ``mtime``, parents first.

    Written here rather than with cpio(1) so device nodes need no root and the bytes depend
    only on the inputs.
    """
    out = bytearray()

    def record(ino: int, name: str, entry: CpioEntry, nlink: int) -> None:
        encoded = name.encode() + b"\0"
        fields = (ino, entry.mode, 0, 0, nlink, mtime, len(entry.data), 0, 0,
                  entry.rdev[0], entry.rdev[1], len(encoded), 0)
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(entry.data)
        out.extend(b"\0" * (-len(out) % 4))

    for ino, name in enumerate(sorted(entries, key=lambda p: p.split("/")), start=1):
        entry = entries[name]
        record(ino, name, entry, 2 if stat.S_ISDIR(entry.mode) else 1)
    record(0, "TRAILER!!!", CpioEntry(mode=0), 1)
    return bytes(out)


class _Tree(dict):
    """Initramfs contents by path (no leading '/'); parents are created as 0755 dirs."""

    def _parents(self, path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self.setdefault("/".join(parts[:i]), CpioEntry(stat.S_IFDIR | 0o755))

    def dir(self, path: str, perm: int = 0o755) -> None:
        self._parents(path)
        self[path] = CpioEntry(stat.S_IFDIR | perm)

    def file(self, path: str, data: bytes, perm: int = 0o644) -> None:
        self._parents(path)
        self[path] = CpioEntry(stat.S_IFREG | perm, data)

    def symlink(self, path: str, target: str) -> None:
        self._parents(path)
        self[path] = CpioEntry(stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, path: str, major: int, minor: int, perm: int) -> None:
        self._parents(path)
        self[path] = CpioEntry(stat.S_IFCHR | perm, rdev=(major, minor))


def _overlay_entries(overlay: Path) -> _Tree:
    """The overlay folder as initramfs entries: files 0755 if executable in git, else 0644."""
    tree = _Tree()
    if not overlay.is_dir():
        raise RecipeError(f"{overlay}: overlay folder missing (it holds inittab, rcS, ...)")
    for path in sorted(overlay.rglob("*")):
        rel = path.relative_to(overlay).as_posix()
        if path.is_symlink():
            tree.symlink(rel, os.readlink(path))
        elif path.is_dir():
            tree.dir(rel)
        elif path.is_file():
            tree.file(rel, path.read_bytes(), 0o755 if path.stat().st_mode & 0o111 else 0o644)
        else:
            raise RecipeError(f"{path}: overlay may hold only files, folders and symlinks")
    for required in ("etc/inittab", "etc/init.d/rcS"):
        if required not in tree:
            raise RecipeError(f"{overlay}: overlay lacks {required}")
    return tree


def shadow_hash(busybox: Path, password: str, hostname: str) -> str:
    """SHA-512 crypt of the root password by the pinned busybox ``mkpasswd``.

    The password goes in on stdin (never argv, never the log). The salt is derived from the
    password and host name so that builds are reproducible; this password is a test
    credential of the harness, not a secret worth a random salt.
    """
    seed = hashlib.sha256(b"refvm shadow salt\0" + hostname.encode() + b"\0" + password.encode())
    salt = "".join(_SALT_ALPHABET[b % 64] for b in seed.digest()[:16])
    proc = _run([busybox, "mkpasswd", "-m", "sha512", "-S", salt], what="busybox mkpasswd",
                input=password.encode() + b"\n")
    hashed = proc.stdout.decode().strip()
    if not re.fullmatch(r"\$6\$[./0-9A-Za-z]+\$[./0-9A-Za-z]{86}", hashed):
        raise RecipeError("busybox mkpasswd did not print a SHA-512 crypt hash")
    return hashed


def make_initramfs(recipe: Recipe, password: str, busybox: Path, modules: ModuleTree,
                   kernel_version: str, epoch: int, log: Callable[[str], None]) -> bytes:
    """gzip'd newc initramfs: busybox, modules + deps, account files, hostname, overlay."""
    tree = _Tree()
    for path in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "run",
                 "mnt", "var/log"):
        tree.dir(path)
    tree.dir("tmp", 0o1777)
    tree.dir("root", 0o700)
    tree.chardev("dev/console", 5, 1, 0o600)
    tree.symlink("var/run", "../run")

    tree.file("bin/busybox", busybox.read_bytes(), 0o755)
    applets = _run([busybox, "--list-full"], what="busybox --list-full").stdout.decode().split()
    for applet in sorted(applets):
        if "/" in applet and applet != "bin/busybox":
            tree.symlink(applet, "/bin/busybox")
    tree.symlink("init", "/bin/busybox")  # the kernel runs /init from an initramfs

    wanted = [normalize_module(m) for m in recipe.modules]
    for name in wanted:
        if name in modules.builtin:
            log(f"module {name} is built into the kernel; not loading it")
    try:
        order = resolve_modules(wanted, modules, modules.builtin)
    except RecipeError as err:
        raise RecipeError(f"{recipe.path}: modules: {err}") from None
    log(f"kernel modules (dependencies first): {' '.join(order)}")
    base = f"lib/modules/{kernel_version}"
    for name in order:
        tree.file(f"{base}/{modules.relpath(name)}", modules.image(name))
    tree.file(f"{base}/modules.dep", modules_dep(order, modules, modules.relpath).encode())
    if (modules.moddir / "modules.builtin").exists():
        tree.file(f"{base}/modules.builtin", (modules.moddir / "modules.builtin").read_bytes())

    overlay = _overlay_entries(recipe.overlay)
    generated = _Tree()
    generated.file("etc/hostname", f"{recipe.hostname}\n".encode())
    generated.file("etc/modules", ("# written by the image builder from the recipe's modules\n"
                                   + "".join(f"{m}\n" for m in wanted
                                             if m not in modules.builtin)).encode())
    generated.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    generated.file("etc/group", b"root:x:0:\n")
    hashed = shadow_hash(busybox, password, recipe.hostname)
    generated.file("etc/shadow", f"root:{hashed}:{epoch // 86400}:0:99999:7:::\n".encode(), 0o600)
    for path, entry in overlay.items():
        if path in generated and not stat.S_ISDIR(entry.mode):
            raise RecipeError(f"{recipe.overlay}/{path}: the builder writes this file; "
                              "remove it from the overlay")
        tree[path] = entry  # the overlay wins over busybox applet links
    tree.update((p, e) for p, e in generated.items() if not stat.S_ISDIR(e.mode) or p not in tree)

    return gzip.compress(cpio_newc(tree, epoch), compresslevel=9, mtime=0)
