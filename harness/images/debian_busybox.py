"""Build the offline reference Linux guest ("refguest") from pinned Debian packages.

Why this exists: the harness needs a Linux guest that boots the same way everywhere, without
any download but Debian's archive, so that a failure means the hypervisor changed and not the
guest. The recipe (``guests/linux/refguest/recipe.yaml``) pins a kernel, busybox-static and
GRUB as exact ``.deb`` files by version and sha256; this module turns them into one raw disk
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
"""
from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import platform
import re
import shutil
import stat
import struct
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import yaml

BUILDER_NAME = "debian-busybox-hybrid"
RECIPE_FIELDS = ("builder", "hostname", "kernel_cmdline", "modules", "packages")
PACKAGE_FIELDS = ("name", "version", "arch", "sha256")

# Host programs the build runs, with the Debian package to install when one is missing.
HOST_TOOLS = {"dpkg-deb": "dpkg", "xorriso": "xorriso", "mformat": "mtools", "mcopy": "mtools"}
APT_TOOLS = {"apt-get": "apt", "apt-cache": "apt"}
# The pinned grub-mkimage is a dynamically linked host program: name the package of a
# library the host lacks instead of printing the loader's message.
LIBRARY_PACKAGES = {
    "libdevmapper.so.1.02.1": "libdevmapper1.02.1",
    "liblzma.so.5": "liblzma5",
    "libselinux.so.1": "libselinux1",
    "libudev.so.1": "libudev1",
    "libpcre2-8.so.0": "libpcre2-8-0",
}

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_VERSION_RE = re.compile(r"([0-9]+:)?[A-Za-z0-9.+~-]+")
_ARCH_RE = re.compile(r"[a-z0-9-]+")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_HOSTNAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_MODULE_RE = re.compile(r"[A-Za-z0-9_-]+")
# The command line goes into grub.cfg unquoted: allow only characters GRUB's script parser
# leaves alone, so a recipe cannot smuggle in GRUB commands or variables.
_CMDLINE_RE = re.compile(r"[A-Za-z0-9_.,:=/+@%-]+( [A-Za-z0-9_.,:=/+@%-]+)*")
_SALT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.gz", ".ko.zst")
_CHUNK = 1 << 20


class RecipeError(Exception):
    """The image cannot be built: bad recipe, vanished or corrupt package, missing host tool."""


@dataclass(frozen=True)
class Package:
    """One exact .deb: apt is asked for this version and the file must have this sha256."""

    name: str
    version: str
    arch: str
    sha256: str

    @property
    def filename(self) -> str:
        """Name in the downloads dir; apt-get's own naming, with ':' spelled '%3a'."""
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"

    @property
    def apt_spec(self) -> str:
        qualifier = "" if self.arch == "all" else f":{self.arch}"
        return f"{self.name}{qualifier}={self.version}"


@dataclass(frozen=True)
class Recipe:
    path: Path
    hostname: str
    kernel_cmdline: str
    modules: tuple[str, ...]
    packages: tuple[Package, ...]

    @property
    def overlay(self) -> Path:
        """Files copied verbatim into the initramfs root live beside the recipe."""
        return self.path.parent / "overlay"


# Recipe --------------------------------------------------------------------------------------
def load_recipe(path: Path) -> Recipe:
    """Read and check a recipe; every problem names the file and the field to edit."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or err
        raise RecipeError(f"{path}: cannot read recipe: {reason}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RecipeError(f"{path}: not valid YAML{where}: {problem}") from None

    def fail(field: str, message: str) -> RecipeError:
        return RecipeError(f"{path}: {field}: {message}")

    if not isinstance(data, dict):
        raise fail("(top level)", "must be a mapping of recipe fields")
    for key in data:
        if key not in RECIPE_FIELDS:
            raise fail(str(key), f"unknown field (expected {', '.join(RECIPE_FIELDS)})")
    for key in RECIPE_FIELDS:
        if key not in data:
            raise fail(key, "missing")

    if data["builder"] != BUILDER_NAME:
        raise fail("builder", f"must be {BUILDER_NAME!r}, got {data['builder']!r}")
    hostname = data["hostname"]
    if not isinstance(hostname, str) or not _HOSTNAME_RE.fullmatch(hostname):
        raise fail("hostname", f"must be a lowercase host name, got {hostname!r}")
    cmdline = data["kernel_cmdline"]
    if not isinstance(cmdline, str) or not _CMDLINE_RE.fullmatch(cmdline):
        raise fail("kernel_cmdline", "must be words of [A-Za-z0-9_.,:=/+@%-] separated by "
                   f"single spaces, got {cmdline!r}")

    modules = data["modules"]
    if not isinstance(modules, list) or not modules:
        raise fail("modules", "must be a non-empty list of kernel module names")
    seen: set[str] = set()
    for i, module in enumerate(modules):
        if not isinstance(module, str) or not _MODULE_RE.fullmatch(module):
            raise fail(f"modules[{i}]", f"not a kernel module name: {module!r}")
        if normalize_module(module) in seen:
            raise fail(f"modules[{i}]", f"{module!r} is listed twice")
        seen.add(normalize_module(module))

    packages = data["packages"]
    if not isinstance(packages, list) or not packages:
        raise fail("packages", "must be a non-empty list of {name, version, arch, sha256}")
    parsed: list[Package] = []
    for i, entry in enumerate(packages):
        where = f"packages[{i}]"
        if not isinstance(entry, dict):
            raise fail(where, "must be a mapping with name, version, arch, sha256")
        for key in entry:
            if key not in PACKAGE_FIELDS:
                raise fail(f"{where}.{key}",
                           f"unknown field (expected {', '.join(PACKAGE_FIELDS)})")
        for key in PACKAGE_FIELDS:
            if key not in entry:
                raise fail(f"{where}.{key}", "missing")
            if not isinstance(entry[key], str):
                raise fail(f"{where}.{key}",
                           f"must be a string (quote it in YAML), got {entry[key]!r}")
        package = Package(**{key: entry[key] for key in PACKAGE_FIELDS})
        checks = ((_NAME_RE, "name", "a Debian package name"),
                  (_VERSION_RE, "version", "a Debian version such as 1:1.35.0-4"),
                  (_ARCH_RE, "arch", "a Debian architecture such as amd64 or all"),
                  (_SHA256_RE, "sha256", "64 lowercase hex digits"))
        for regex, key, what in checks:
            if not regex.fullmatch(getattr(package, key)):
                raise fail(f"{where}.{key}", f"must be {what}, got {getattr(package, key)!r}")
        if any(p.name == package.name for p in parsed):
            raise fail(f"{where}.name", f"package {package.name} is listed twice")
        parsed.append(package)

    return Recipe(path=path, hostname=hostname, kernel_cmdline=cmdline,
                  modules=tuple(modules), packages=tuple(parsed))


# Running host programs -----------------------------------------------------------------------
def _require_tools(tools: Mapping[str, str]) -> None:
    """Fail before any work when a host program is missing, naming what to apt-get install."""
    missing = [(tool, package) for tool, package in tools.items() if shutil.which(tool) is None]
    if missing:
        names = ", ".join(f"{tool} (Debian package {package})" for tool, package in missing)
        packages = " ".join(sorted({package for _, package in missing}))
        raise RecipeError(f"missing host tools: {names}; install with: apt-get install {packages}")


def _last_line(output: bytes) -> str:
    lines = [line.strip() for line in output.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _run(argv: Sequence[object], *, what: str | None = None, check: bool = True,
         cwd: Path | None = None, env: Mapping[str, str] | None = None,
         input: bytes | None = None) -> subprocess.CompletedProcess:
    """Run an argv list (never a shell string), capturing output; failures become one line."""
    args = [str(a) for a in argv]
    try:
        proc = subprocess.run(args, cwd=cwd, env=env, input=input, capture_output=True,
                              check=False)
    except OSError as err:
        raise RecipeError(f"cannot run {args[0]}: {err.strerror or err}") from None
    if check and proc.returncode != 0:
        raise RecipeError(f"{what or args[0]} failed (exit {proc.returncode}): "
                          f"{_last_line(proc.stderr or proc.stdout)}")
    return proc


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Packages ------------------------------------------------------------------------------------
def verify_deb(path: Path, package: Package) -> None:
    """Delete ``path`` and fail unless it is exactly the pinned file."""
    actual = sha256_file(path)
    if actual != package.sha256:
        path.unlink()
        raise RecipeError(f"sha256 mismatch for package {package.name} {package.version}: "
                          f"expected {package.sha256}, got {actual}; the file was deleted")


def apt_download(package: Package, directory: Path, recipe_path: Path) -> Path:
    """Have apt fetch one exact version into ``directory`` (an empty temp dir) and return it.

    apt uses the host's configured Debian sources, so no mirror is named in this project.
    """
    _require_tools(APT_TOOLS)
    proc = _run(["apt-get", "download", "-q", package.apt_spec], cwd=directory, check=False)
    if proc.returncode != 0:
        offered = _run(["apt-cache", "show", "--no-all-versions", package.apt_spec], check=False)
        if offered.returncode != 0 or b"Package:" not in offered.stdout:
            raise RecipeError(f"pinned version {package.version} of package {package.name} is no "
                              f"longer offered by the archive; update {recipe_path} (if apt-get "
                              "update never ran on this host, run it first)")
        raise RecipeError(f"apt-get download {package.apt_spec} failed: {_last_line(proc.stderr)}")
    debs = sorted(directory.glob("*.deb"))
    if len(debs) != 1:
        raise RecipeError(f"apt-get download {package.apt_spec} left {len(debs)} .deb files, "
                          "expected 1")
    return debs[0]


def fetch_package(package: Package, downloads: Path, log: Callable[[str], None],
                  recipe_path: Path = Path("recipe.yaml"),
                  download: Callable[[Package, Path, Path], Path] = apt_download) -> Path:
    """Return the verified .deb in ``downloads``, downloading it if needed.

    A cached file is re-hashed before every use (a corrupt one is deleted and fetched again).
    A new download lands in a temp dir inside ``downloads`` and is renamed into place only
    after its hash matched, so other builds never see a partial or wrong file.
    """
    downloads.mkdir(parents=True, exist_ok=True)
    final = downloads / package.filename
    if final.exists():
        actual = sha256_file(final)
        if actual == package.sha256:
            log(f"using cached {final.name}")
            return final
        log(f"cached {final.name} has sha256 {actual}, expected {package.sha256}: fetching again")
        final.unlink()
    log(f"downloading {package.apt_spec}")
    tmpdir = Path(tempfile.mkdtemp(prefix=".download-", dir=downloads))
    try:
        fetched = download(package, tmpdir, recipe_path)
        verify_deb(fetched, package)
        os.replace(fetched, final)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return final


# Kernel modules ------------------------------------------------------------------------------
def normalize_module(name: str) -> str:
    """The kernel treats '-' and '_' in module names alike; file names use either."""
    return name.replace("-", "_")


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


# Initramfs -----------------------------------------------------------------------------------
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


# Boot media ----------------------------------------------------------------------------------
def grub_cfg(recipe: Recipe, kernel_version: str) -> str:
    """Serial console on COM1 for GRUB itself, no menu, boot the recipe's kernel at once."""
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


# Build ---------------------------------------------------------------------------------------
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
