"""A minimal QMP (QEMU Machine Protocol) client.

Why QMP and not just the exit code: QEMU exits 0 both when the guest powers off and when it
resets under -no-reboot. Its SHUTDOWN event says which ("guest-shutdown" vs "guest-reset"), so a
scenario can check that the guest *powered off*. QMP also lets the harness start the VM paused
and resume it once the console is attached, so no early firmware output is lost. And
migration to a file for save/restore (the file handed over as a descriptor: no shell).
"""
from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Callable

from ...errors import InfraError


class QmpClient:
    def __init__(self, path: Path, connect_timeout: float = 10.0,
                 alive: Callable[[], bool] = lambda: True):
        """``alive``: whether QEMU still runs; a QEMU that exits while this waits for its
        socket (a refused vars file, a disk it cannot lock) fails at once, not at the timeout.
        QEMU binds the socket before it checks its devices, so a connection can also be taken
        into its backlog and then reset as it exits: that is the same failure, not a crash."""
        self.events: list[dict] = []
        self._replies: list[dict] = []
        self._cond = threading.Condition()
        self._closed = False
        self._sock = _connect_unix(path, connect_timeout, alive)
        try:  # from here on, any failure closes the socket (and the reader, once started)
            self._file = self._sock.makefile("rb")
            self._greet(path)
            self._reader = threading.Thread(target=self._read_loop, name="qmp-reader",
                                            daemon=True)
            self._reader.start()
            self.execute("qmp_capabilities")
        except BaseException:
            self.close()
            raise

    def _greet(self, path: Path) -> None:
        try:
            line = self._file.readline()
        except OSError as err:
            raise InfraError(f"QEMU closed its QMP socket before greeting: {err}") from None
        try:
            greeting = json.loads(line or b"{}")
        except ValueError:
            greeting = {}
        if "QMP" not in greeting:
            raise InfraError(f"QEMU's QMP socket {path} did not greet: {line[:200]!r}")

    def execute(self, command: str, timeout: float = 10.0, fds: tuple = (), **arguments) -> dict:
        """Run a QMP command; ``fds`` go along as SCM_RIGHTS (``getfd``)."""
        message = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        with self._cond:
            data = json.dumps(message).encode() + b"\n"
            try:
                if fds:
                    socket.send_fds(self._sock, [data], list(fds))
                else:
                    self._sock.sendall(data)
            except OSError as err:  # QEMU exited between its greeting and this command
                raise InfraError(f"QEMU closed QMP before {command!r}: {err}") from None
            deadline = time.monotonic() + timeout
            while not self._replies:
                if self._closed:
                    raise InfraError(f"QEMU closed QMP during {command!r}")
                if not self._cond.wait(max(deadline - time.monotonic(), 0)) and not self._replies:
                    raise InfraError(f"QEMU did not answer QMP {command!r} in {timeout:.0f}s")
            reply = self._replies.pop(0)
        if "error" in reply:
            raise InfraError(f"QMP {command!r} failed: {reply['error'].get('desc', reply)}")
        return reply.get("return", {})

    def last_event(self, name: str) -> dict | None:
        with self._cond:
            return next((e for e in reversed(self.events) if e.get("event") == name), None)

    def wait_closed(self, timeout: float) -> None:
        """Until QEMU's end of the socket is read (every event it wrote before exiting is in
        ``events`` then), or ``timeout`` passes."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    def _read_loop(self) -> None:
        try:
            for line in self._file:
                message = json.loads(line)
                with self._cond:
                    (self.events if "event" in message else self._replies).append(message)
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()


def _connect_unix(path: Path, timeout: float,
                  alive: Callable[[], bool] = lambda: True) -> socket.socket:
    """Connect to a socket QEMU is about to create (it appears a few ms after exec)."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if not alive():
                raise InfraError(f"QEMU exited before it opened {path}") from None
            if time.monotonic() > deadline:
                raise InfraError(f"QEMU did not open {path} within {timeout:.0f}s") from None
            time.sleep(0.02)


connect_unix = _connect_unix
