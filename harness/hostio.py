"""Host ends of the data channels device checks use: a TCP endpoint and a serial port.

Each endpoint runs in a thread, moves an exact number of bytes and keeps their sha256, so a
step can compare what one side sent with what the other side received. ``corrupt`` exists for
the harness's own tests: it flips one byte on the way, and the check must then fail.
"""
from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from dataclasses import dataclass, field

from .errors import InfraError


@dataclass
class Transfer:
    """The host side's account of one transfer."""

    direction: str  # "to-guest" or "from-guest"
    expected: int
    sha256: str = ""
    nbytes: int = 0
    seconds: float = 0.0
    error: str = ""
    done: threading.Event = field(default_factory=threading.Event)


class TcpEndpoint:
    """Listens on loopback for one connection; sends or receives exactly ``nbytes``."""

    def __init__(self, direction: str, nbytes: int, host: str = "127.0.0.1",
                 timeout: float = 120.0, corrupt: bool = False):
        self.transfer = Transfer(direction, nbytes)
        self.payload = os.urandom(nbytes) if direction == "to-guest" else b""
        self.sent_sha256 = hashlib.sha256(self.payload).hexdigest() if self.payload else ""
        self._corrupt = corrupt
        self._timeout = timeout
        self._server = socket.create_server((host, 0))
        self._server.settimeout(timeout)
        self.port = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True, name="tcp-endpoint")
        self._thread.start()

    def _serve(self) -> None:
        t = self.transfer
        try:
            conn, _ = self._server.accept()
        except OSError as err:
            t.error = f"no connection from the guest: {err}"
            t.done.set()
            return
        started = time.monotonic()
        conn.settimeout(self._timeout)
        try:
            with conn:
                if t.direction == "to-guest":
                    data = bytearray(self.payload)
                    if self._corrupt and data:
                        data[len(data) // 2] ^= 0xFF
                    conn.sendall(data)
                    t.nbytes, t.sha256 = len(data), self.sent_sha256
                else:
                    digest = hashlib.sha256()
                    while t.nbytes < t.expected:
                        chunk = conn.recv(min(1 << 16, t.expected - t.nbytes))
                        if not chunk:
                            break
                        digest.update(chunk)
                        t.nbytes += len(chunk)
                    t.sha256 = digest.hexdigest()
        except OSError as err:
            t.error = f"transfer broke after {t.nbytes} bytes: {err}"
        finally:
            t.seconds = time.monotonic() - started
            self._server.close()
            t.done.set()

    def wait(self, timeout: float) -> Transfer:
        if not self.transfer.done.wait(timeout):
            raise InfraError(f"host TCP endpoint on port {self.port} did not finish in {timeout:.0f}s")
        return self.transfer

    def close(self) -> None:
        self._server.close()


def serial_send(stream, data: bytes, corrupt: bool = False) -> None:
    """Write ``data`` to a host serial channel (socket or fd) completely."""
    if corrupt and data:
        data = bytearray(data)
        data[len(data) // 2] ^= 0xFF
    stream.sendall(bytes(data))


def serial_receive(stream, nbytes: int, timeout: float) -> tuple[bytes, float]:
    """Read exactly ``nbytes`` (or what arrived before ``timeout``); return (data, seconds)."""
    data = bytearray()
    started = time.monotonic()
    deadline = started + timeout
    while len(data) < nbytes:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        stream.settimeout(min(left, 1.0))
        try:
            chunk = stream.recv(min(1 << 16, nbytes - len(data)))
        except socket.timeout:
            continue
        if not chunk:
            break
        data += chunk
    return bytes(data), time.monotonic() - started
