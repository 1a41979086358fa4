"""The QMP client's start-up: a QEMU that binds its socket and then refuses to start (a vars
file of the wrong size, a disk it cannot lock) is an InfraError naming what happened, never a
stray ConnectionResetError (seen in CI: the nvram-persist scenario's wrong-size start)."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from harness.backends.qemu.qmp import QmpClient
from harness.errors import InfraError


def _listener(path) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    return server


def test_a_connection_reset_before_the_greeting_is_an_infra_error(tmp_path):
    """The connection lands in the backlog, then the listener closes without accepting it
    (QEMU exiting): the client's read is reset."""
    path = tmp_path / "qmp.sock"
    server = _listener(path)

    def exit_without_accepting():
        time.sleep(0.3)  # the client has connected and is reading by now
        server.close()

    threading.Thread(target=exit_without_accepting, daemon=True).start()
    with pytest.raises(InfraError, match="closed its QMP socket before greeting"):
        QmpClient(path, connect_timeout=5.0)


def test_a_garbled_greeting_is_an_infra_error_and_not_echoed_whole(tmp_path):
    path = tmp_path / "qmp.sock"
    server = _listener(path)

    def answer_garbage():
        conn, _ = server.accept()
        conn.sendall(b"\x1b[31m" + b"x" * 5000 + b"\n")
        time.sleep(0.5)
        conn.close()

    threading.Thread(target=answer_garbage, daemon=True).start()
    with pytest.raises(InfraError, match="did not greet") as caught:
        QmpClient(path, connect_timeout=5.0)
    assert len(str(caught.value)) < 400
    server.close()


def test_a_qemu_that_exits_before_binding_fails_at_once_not_at_the_timeout(tmp_path):
    started = time.monotonic()
    with pytest.raises(InfraError, match="exited before it opened"):
        QmpClient(tmp_path / "qmp.sock", connect_timeout=30.0, alive=lambda: False)
    assert time.monotonic() - started < 5
