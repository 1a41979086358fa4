"""hostio's serial channel over every kind of stream a backend's open_console() returns.

QEMU hands over a Unix socket; bhyve (and libvirt's bhyve driver) an nmdm(4) side opened by
open_nmdm, an io.FileIO without sendall/recv/settimeout. A pty pair stands in for nmdm here:
its slave made raw like open_nmdm makes the B side, both ends wrapped in io.FileIO.
"""
from __future__ import annotations

import io
import os
import socket
import threading
import time
import tty

import pytest

from harness import hostio
from harness.hostio import serial_receive, serial_send

BIG = 256 << 10  # far more than a pty's or a socket's buffer: the writer must wait for room


def socket_pair():
    a, b = socket.socketpair()
    return a, b, (a.close, b.close)


def pty_pair():
    """(harness end, other end): the raw slave (an nmdm B side's stand-in) and the master."""
    master, slave = os.openpty()
    tty.setraw(slave)
    near, far = io.FileIO(slave, "r+b"), io.FileIO(master, "r+b")
    assert not hasattr(near, "sendall") and not hasattr(near, "recv")
    return near, far, (near.close, far.close)


def nonblocking_socket_pair():
    a, b, closers = socket_pair()
    a.setblocking(False)
    b.settimeout(0.3)  # a Python timeout makes the fd non-blocking underneath
    return a, b, closers


PAIRS = {"socketpair": socket_pair, "pty": pty_pair, "nonblocking-socket": nonblocking_socket_pair}


@pytest.fixture(params=sorted(PAIRS))
def pair(request):
    near, far, closers = PAIRS[request.param]()
    yield near, far
    for close in closers:
        close()


def send_in_thread(stream, data: bytes, **options) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run():
        try:
            serial_send(stream, data, **options)
        except BaseException as err:  # reported by the test, not lost in the thread
            outcome["error"] = err
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("direction", ["near-to-far", "far-to-near"])
def test_a_payload_larger_than_the_buffer_arrives_whole(pair, direction):
    sender, receiver = pair if direction == "near-to-far" else pair[::-1]
    payload = os.urandom(BIG)
    thread, outcome = send_in_thread(sender, payload)
    data, seconds = serial_receive(receiver, BIG, timeout=30)
    thread.join(10)
    assert not thread.is_alive() and "error" not in outcome, outcome
    assert len(data) == BIG and data == payload
    assert 0 <= seconds < 30


def test_a_small_payload_both_ways(pair):
    near, far = pair
    serial_send(near, b"ping\x00\xff\r\n")
    assert serial_receive(far, 8, timeout=5)[0] == b"ping\x00\xff\r\n"
    serial_send(far, b"pong")
    assert serial_receive(near, 4, timeout=5)[0] == b"pong"


def test_too_few_bytes_returns_what_came_at_the_timeout(pair):
    near, far = pair
    serial_send(near, b"x" * 100)
    started = time.monotonic()
    data, seconds = serial_receive(far, 200, timeout=0.5)
    assert data == b"x" * 100
    assert 0.5 <= seconds < 3 and time.monotonic() - started >= 0.5


def test_nothing_at_all_is_an_empty_read_after_the_timeout(pair):
    data, seconds = serial_receive(pair[1], 10, timeout=0.3)
    assert data == b"" and seconds >= 0.3


def test_corrupt_flips_the_middle_byte(pair):
    near, far = pair
    serial_send(near, bytes(9), corrupt=True)
    assert serial_receive(far, 9, timeout=5)[0] == bytes(4) + b"\xff" + bytes(4)


def test_end_of_stream_ends_the_read_early():
    a, b = socket.socketpair()
    with a, b:
        serial_send(a, b"last words")
        a.close()
        data, seconds = serial_receive(b, 100, timeout=10)
    assert data == b"last words" and seconds < 5


def test_a_pty_whose_other_side_closed_ends_the_read_early():
    near, far, _ = pty_pair()
    serial_send(near, b"bye")
    time.sleep(0.1)
    near.close()
    with far:
        data, seconds = serial_receive(far, 100, timeout=10)
    assert data == b"bye" and seconds < 5


def test_a_send_nobody_reads_stops_at_the_stall_timeout(monkeypatch):
    monkeypatch.setattr(hostio, "SEND_STALL_TIMEOUT", 0.5)
    near, far, closers = pty_pair()
    try:
        thread, outcome = send_in_thread(near, os.urandom(BIG))
        thread.join(10)
        assert not thread.is_alive()
        assert isinstance(outcome.get("error"), TimeoutError)
        assert "took no data for 0.5s after" in str(outcome["error"])
    finally:
        for close in closers:
            close()


def test_a_bare_file_descriptor_works_too():
    a, b = socket.socketpair()
    with a, b:
        serial_send(a.fileno(), b"fd")
        assert serial_receive(b.fileno(), 2, timeout=5)[0] == b"fd"


def test_the_fds_blocking_mode_is_left_as_it_was(pair):
    near, far = pair
    before = os.get_blocking(near.fileno())
    serial_send(near, b"mode")
    assert os.get_blocking(near.fileno()) == before
    assert serial_receive(far, 4, timeout=5)[0] == b"mode"
