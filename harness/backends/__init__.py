"""Hypervisor backends. Each one turns a VmSpec into command lines and runs them.

Backends are looked up by name so the CLI and the pytest plugin need not import each one.
"""
from __future__ import annotations

from .base import Backend, ExitInfo, Machine  # noqa: F401

BACKENDS = ("qemu", "bhyve")
__all__ = ["BACKENDS", "Backend", "ExitInfo", "Machine", "get_backend"]


def get_backend(name: str, **options) -> Backend:
    if name == "qemu":
        from .qemu import QemuBackend
        return QemuBackend(**options)
    if name == "bhyve":
        from .bhyve import BhyveBackend
        return BhyveBackend(**options)
    raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(BACKENDS)}")
