"""The refguest recipe: the YAML file that pins what goes into the image, read and checked.

Why this exists: every later step (download, module resolution, grub.cfg) trusts the recipe's
values, and some end up unquoted in grub.cfg or on the kernel command line. Checking them once
here, with a one-line message naming the file and the field to edit, keeps the other modules
free of validation. :class:`RecipeError` lives here too because this is the one module all the
others import; they raise it for every failure they anticipate.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ...errors import ConfigError
from ...yamlfile import load_file


BUILDER_NAME = "debian-busybox-hybrid"
RECIPE_FIELDS = ("builder", "hostname", "kernel_cmdline", "modules", "packages")
PACKAGE_FIELDS = ("name", "version", "arch", "sha256")

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_VERSION_RE = re.compile(r"([0-9]+:)?[A-Za-z0-9.+~-]+")
_ARCH_RE = re.compile(r"[a-z0-9-]+")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_HOSTNAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_MODULE_RE = re.compile(r"[A-Za-z0-9_-]+")
# The command line goes into grub.cfg unquoted: allow only characters GRUB's script parser
# leaves alone, so a recipe cannot smuggle in GRUB commands or variables.
_CMDLINE_RE = re.compile(r"[A-Za-z0-9_.,:=/+@%-]+( [A-Za-z0-9_.,:=/+@%-]+)*")


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


def normalize_module(name: str) -> str:
    """The kernel treats '-' and '_' in module names alike; file names use either.

    Here rather than in kmod.py because the recipe check needs it (``nvme-core`` and
    ``nvme_core`` are the same module listed twice), and kmod.py already imports this module.
    """
    return name.replace("-", "_")


def read_fields(path: Path, fields: tuple[str, ...], builder: str | None = None):
    """(the YAML mapping at ``path``, a ``fail(field, message)`` naming the file), once the
    file passed the hostile-input guards of guest files (regular file, bounded YAML) and has
    exactly ``fields`` (and, given ``builder``, names that builder). Shared with the Debian
    root-file-system recipe and lock files."""
    try:
        data = load_file(path)
    except ConfigError as err:
        raise RecipeError(str(err.problems[0])) from None

    def fail(field: str, message: str) -> RecipeError:
        return RecipeError(f"{path}: {field}: {message}")

    if not isinstance(data, dict):
        raise fail("(top level)", "must be a mapping of recipe fields")
    for key in data:
        if key not in fields:
            raise fail(str(key), f"unknown field (expected {', '.join(fields)})")
    for key in fields:
        if key not in data:
            raise fail(key, "missing")
    if builder is not None and data["builder"] != builder:
        raise fail("builder", f"must be {builder!r}, got {data['builder']!r}")
    return data, fail


def host_and_cmdline(data: dict, fail) -> tuple[str, str]:
    """The ``hostname`` and ``kernel_cmdline`` fields, checked (both end up in the image)."""
    hostname = data["hostname"]
    if not isinstance(hostname, str) or not _HOSTNAME_RE.fullmatch(hostname):
        raise fail("hostname", f"must be a lowercase host name, got {hostname!r}")
    cmdline = data["kernel_cmdline"]
    if not isinstance(cmdline, str) or not _CMDLINE_RE.fullmatch(cmdline):
        raise fail("kernel_cmdline", "must be words of [A-Za-z0-9_.,:=/+@%-] separated by "
                   f"single spaces, got {cmdline!r}")
    return hostname, cmdline


def load_recipe(path: Path) -> Recipe:
    """Read and check a recipe; every problem names the file and the field to edit."""
    path = Path(path)
    data, fail = read_fields(path, RECIPE_FIELDS, builder=BUILDER_NAME)
    hostname, cmdline = host_and_cmdline(data, fail)

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

    parsed = parse_packages(data["packages"], fail)

    return Recipe(path=path, hostname=hostname, kernel_cmdline=cmdline,
                  modules=tuple(modules), packages=parsed)


def parse_packages(packages, fail) -> tuple[Package, ...]:
    """The ``packages`` list of a recipe or lock file: exact .debs, each checked field by field.

    ``fail(field, message)`` makes the error naming the file and field (shared by the
    refguest recipe and the Debian lock files, which pin packages the same way)."""
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
    return tuple(parsed)
