"""A libvirt console stream as a socket: what the harness's pexpect console code reads.

``virDomainOpenConsole`` hands a serial port over a *libvirt stream*, not a file descriptor,
and over a remote URI there is no local pty at all. The bridge below copies bytes between the
stream and one end of a ``socket.socketpair()``; the other end is a plain socket with a
fileno(), so pexpect's fdspawn (COM1) and the UART scenario's sendall/recv (COM2) work
unchanged, locally and remotely.

Two threads, one per direction. The stream is non-blocking (VIR_STREAM_NONBLOCK): libvirt's
event-loop thread moves incoming data into the stream's queue, and the threads here poll it,
backing off briefly when it is empty (-2, EAGAIN). Blocking recv and send on one stream from
two threads stalled in practice, leaving part of a line in libvirt's client until more output
came. When either side ends, both are shut down, so pexpect sees EOF when the domain goes away
and libvirt sees the stream finish when the harness closes.
"""
from __future__ import annotations

import socket
import threading
import time

CHUNK = 65536
POLL_INTERVAL = 0.005  # seconds between looks at an empty stream


class StreamBridge:
    def __init__(self, stream, name: str):
        self.name = name
        self._stream = stream
        self.sock, self._inner = socket.socketpair()
        self._lock = threading.Lock()
        self._closed = False
        self._stream_done = False
        self._threads = [
            threading.Thread(target=self._stream_to_socket, name=f"{name}-out", daemon=True),
            threading.Thread(target=self._socket_to_stream, name=f"{name}-in", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _stream_to_socket(self) -> None:
        try:
            while True:
                data = self._stream.recv(CHUNK)
                if isinstance(data, int):  # -2: nothing queued yet (EAGAIN)
                    if self._closed:
                        break  # a silent guest: nothing more will come that anyone reads
                    time.sleep(POLL_INTERVAL)
                    continue
                if not data:
                    break
                self._inner.sendall(data)
        except Exception:  # noqa: BLE001 - libvirtError or OSError: the console ended; the
            pass  # reader sees EOF, and the machine's exit says why
        finally:
            self._shutdown_inner()

    def _socket_to_stream(self) -> None:
        try:
            while True:
                data = self._inner.recv(CHUNK)
                if not data:
                    break
                view = memoryview(data)
                while view:
                    sent = self._stream.send(bytes(view))
                    if sent < 0:  # -2: would block (EAGAIN)
                        if self._closed:
                            return  # a guest taking no input: drop it (finally finishes)
                        time.sleep(POLL_INTERVAL)
                        continue
                    view = view[sent:]
        except Exception:  # noqa: BLE001 - the same: the far end is gone
            pass
        finally:
            self._finish_stream()
            self._shutdown_inner()

    def _shutdown_inner(self) -> None:
        try:
            self._inner.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _finish_stream(self) -> None:
        with self._lock:
            if self._stream_done:
                return
            self._stream_done = True
        try:
            self._stream.finish()
        except Exception:  # noqa: BLE001 - already aborted by the far end
            try:
                self._stream.abort()
            except Exception:  # noqa: BLE001
                pass

    def close(self, timeout: float = 5.0) -> None:
        """Stop both directions and release the stream. Idempotent. Both threads see
        ``_closed`` at their next would-block and stop, so the stream is finished only after
        they are done with it (no stream call races another thread's)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # the writer thread sees EOF and finishes
        except OSError:
            pass
        self._shutdown_inner()
        for thread in self._threads:
            thread.join(timeout)
        self._finish_stream()
        self.sock.close()
        self._inner.close()
