"""Reaching libvirt: the Python binding, its event loop and connections to a URI.

Kept apart from the backend because three modules need it (the backend, its machines and the
reaper of dead runs' domains), and because the binding is optional: it is imported only when
one of them runs, so a host without python3-libvirt can still use the other backends.
Domain events (and keepalives on remote URIs) only arrive on a connection opened after
libvirt's default event loop is registered, so ``connect`` sees to that first.
"""
from __future__ import annotations

import threading
from urllib.parse import urlparse

from ...errors import InfraError

SETUP_HINT = "run .ci/libvirt-setup (installs libvirt, starts libvirtd and virtlogd)"

_loop_lock = threading.Lock()
_loop_started = False


def load_binding():
    """The ``libvirt`` module; InfraError (with how to install it) if it is missing."""
    try:
        import libvirt
    except ImportError:
        raise InfraError("the libvirt backend needs the libvirt Python binding: "
                         "pip install libvirt-python (needs libvirt-dev, pkg-config and gcc), "
                         "or apt-get install python3-libvirt") from None
    return libvirt


def _ensure_event_loop() -> None:
    """libvirt's default event loop, run by one daemon thread for the whole process.

    It must be registered before a connection is opened for that connection to deliver
    domain events (and keepalives on remote URIs).
    """
    global _loop_started
    libvirt = load_binding()
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised anyway

        def run():
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


def connect(uri: str):
    """Open ``uri`` with events enabled; InfraError (with the fix) if libvirtd is unreachable."""
    _ensure_event_loop()
    libvirt = load_binding()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as err:
        raise InfraError(f"cannot connect to libvirt at {uri}: {err.get_error_message()}; "
                         f"{SETUP_HINT}") from None
    try:
        conn.setKeepAlive(5, 6)
    except libvirt.libvirtError:
        pass  # local drivers without keepalive support
    return conn


def is_local(uri: str) -> bool:
    host = urlparse(uri).hostname
    return host in (None, "", "localhost", "127.0.0.1", "::1")
