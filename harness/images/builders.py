"""Image builders by name: a recipe's ``builder:`` field chooses the package that builds it.

Why this exists: the cache (cache.py) keys, builds and records every built image the same way
whatever made it, so it asks here which builder a recipe names, which source files that
builder consists of (a change to them rebuilds), and runs it.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import ConfigError
from ..yamlfile import load_file

BUILDERS = {"debian-busybox-hybrid": "debian_busybox", "debian-rootfs": "debian_rootfs"}


def builder_module(recipe: Path):
    """The builder package a recipe names (an unknown name is a one-line error)."""
    try:
        data = load_file(Path(recipe))
    except ConfigError as err:
        raise BuilderError(str(err.problems[0])) from None
    name = data.get("builder") if isinstance(data, dict) else None
    if name not in BUILDERS:
        raise BuilderError(f"{recipe}: builder: must be one of {', '.join(BUILDERS)}, "
                           f"got {name!r}")
    return importlib.import_module(f"{__package__}.{BUILDERS[name]}")


def builder_sources(module) -> list[Path]:
    return sorted(Path(module.__file__).parent.glob("*.py"))


class BuilderError(Exception):
    """The recipe does not name a builder this harness has."""
