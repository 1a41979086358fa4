"""Hypervisor backends. Each one turns a VmSpec into command lines and runs them.

Backends are looked up by name so the CLI and the pytest plugin need not import each one.
"""
from __future__ import annotations

import platform

from .base import Backend, ExitInfo, Machine  # noqa: F401

BACKENDS = ("qemu", "bhyve", "libvirt")
# The embedded default: bhyve where it lives, QEMU everywhere else.
DEFAULT_BACKEND = "bhyve" if platform.system() == "FreeBSD" else "qemu"
__all__ = ["BACKENDS", "DEFAULT_BACKEND", "Backend", "ExitInfo", "Machine", "get_backend"]


def get_backend(name: str, **options) -> Backend:
    if name == "qemu":
        from .qemu.backend import QemuBackend
        return QemuBackend(**options)
    if name == "bhyve":
        from .bhyve.backend import BhyveBackend
        return BhyveBackend(**options)
    if name == "libvirt":
        from .libvirt.backend import LibvirtBackend
        return LibvirtBackend(**options)
    raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(BACKENDS)}")
