"""Host ends of the data channels device checks use: a TCP endpoint and a serial port.

Each endpoint runs in a thread, moves an exact number of bytes and keeps their sha256, so a
step can compare what one side sent with what the other side received. ``corrupt`` exists for
the harness's own tests: it flips one byte on the way, and the check must then fail.
"""
from __future__ import annotations

import errno
import hashlib
import os
import select
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


# How long serial_send waits for a channel that takes no byte at all before giving up: a
# stall, not a total (a slow line, e.g. 9600 baud, may take minutes for a large payload).
SEND_STALL_TIMEOUT = 120.0
_CHUNK = 1 << 16  # at most this much per write


def _fd(stream) -> int:
    """The file descriptor under a serial channel: a socket (QEMU's chardev), an nmdm or pty
    side as io.FileIO (bhyve's open_nmdm), anything with fileno(), or a bare fd."""
    return stream if isinstance(stream, int) else stream.fileno()


def _ready(fd: int, events: int, timeout: float) -> bool:
    """Whether ``fd`` is ready for ``events`` (POLLIN/POLLOUT) within ``timeout`` seconds.
    poll(2), not select(2), so an fd above FD_SETSIZE works too; a hang-up or error counts as
    ready, so the read or write that follows reports it."""
    poller = select.poll()
    poller.register(fd, events)
    return bool(poller.poll(max(0.0, timeout) * 1000))


def serial_send(stream, data: bytes, corrupt: bool = False) -> None:
    """Write ``data`` to a host serial channel (socket or fd) completely.

    Works on the file descriptor (poll + os.write), handling partial writes. A blocking fd is
    made non-blocking for the duration (and restored): a blocking write may wait for more room
    than poll promised, past any deadline. That flag is shared with other holders of the same
    open file, so nothing else should write to the channel meanwhile. TimeoutError when the
    channel takes no byte for SEND_STALL_TIMEOUT seconds; other OSErrors (e.g.
    BrokenPipeError) as os.write raises them."""
    if corrupt and data:
        data = bytearray(data)
        data[len(data) // 2] ^= 0xFF
    fd = _fd(stream)
    view = memoryview(bytes(data))
    was_blocking = os.get_blocking(fd)
    if was_blocking:
        os.set_blocking(fd, False)
    try:
        sent = 0
        deadline = time.monotonic() + SEND_STALL_TIMEOUT
        while sent < len(view):
            left = deadline - time.monotonic()
            if left <= 0 or not _ready(fd, select.POLLOUT, left):
                raise TimeoutError(f"serial channel took no data for {SEND_STALL_TIMEOUT:g}s "
                                   f"after {sent} of {len(view)} bytes")
            try:
                written = os.write(fd, view[sent:sent + _CHUNK])
            except BlockingIOError:  # room went, or was less than poll suggested
                continue
            if written:
                sent += written
                deadline = time.monotonic() + SEND_STALL_TIMEOUT
    finally:
        if was_blocking:
            os.set_blocking(fd, True)


def serial_receive(stream, nbytes: int, timeout: float) -> tuple[bytes, float]:
    """Read exactly ``nbytes`` (or what arrived before ``timeout``); return (data, seconds).

    Works on the file descriptor (poll + os.read), blocking or not. Stops early at end of
    stream: a socket's EOF, or EIO from a pty master whose other side is gone."""
    fd = _fd(stream)
    data = bytearray()
    started = time.monotonic()
    deadline = started + timeout
    while len(data) < nbytes:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if not _ready(fd, select.POLLIN, left):
            continue
        try:
            chunk = os.read(fd, min(1 << 16, nbytes - len(data)))
        except BlockingIOError:  # non-blocking fd: poll said readable, nothing was there
            continue
        except OSError as err:
            if err.errno == errno.EIO:  # Linux pty master after the slave closed: hang-up
                break
            raise
        if not chunk:
            break
        data += chunk
    return bytes(data), time.monotonic() - started
