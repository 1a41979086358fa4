"""Hypervisor backends. Each one turns a VmSpec into command lines and runs them.

Backends are looked up by name so the CLI and the pytest plugin need not import each one.
"""
from __future__ import annotations

import platform

from .base import Backend, ExitInfo, Machine  # noqa: F401

BACKENDS = ("qemu", "bhyve", "libvirt")
# The embedded default: bhyve where it lives, QEMU everywhere else.
DEFAULT_BACKEND = "bhyve" if platform.system() == "FreeBSD" else "qemu"
__all__ = ["BACKENDS", "DEFAULT_BACKEND", "Backend", "ExitInfo", "Machine", "backend_class",
           "get_backend"]


def backend_class(name: str) -> type:
    """The class of backend ``name``, not made (nothing probed or connected)."""
    if name == "qemu":
        from .qemu.backend import QemuBackend
        return QemuBackend
    if name == "bhyve":
        from .bhyve.backend import BhyveBackend
        return BhyveBackend
    if name == "libvirt":
        from .libvirt.backend import LibvirtBackend
        return LibvirtBackend
    raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(BACKENDS)}")


def get_backend(name: str, **options) -> Backend:
    return backend_class(name)(**options)
