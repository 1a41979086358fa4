"""StreamBridge: a non-blocking libvirt console stream as a socket pexpect can read.

ScriptedNonblockingStream stands in for a ``virStream`` opened with VIR_STREAM_NONBLOCK, with
libvirt-python's return conventions: recv() gives bytes, the int -2 when nothing is queued
(EAGAIN), b"" at end of stream; send() gives how many bytes it took (possibly fewer than
offered) or -2 when libvirt's transmit buffer is full; once finished or aborted the stream
refuses I/O with a libvirtError, as libvirt's client does for a closed stream. No libvirtd.
"""
from __future__ import annotations

import itertools
import socket
import threading
import time

import pytest

from harness.backends.libvirt.console import CHUNK, StreamBridge
from tests.test_libvirt_drivers import RejectedByDriver

WOULD_BLOCK = -2  # virStreamRecv/virStreamSend on a non-blocking stream: try again later
END = b""         # virStreamRecv: end of stream


class ScriptedNonblockingStream:
    """A test double of a non-blocking libvirt stream.

    ``incoming``: what successive recv() calls return (bytes, WOULD_BLOCK or END); when the
    script runs out the console is silent (WOULD_BLOCK for ever), after END it stays at END.
    ``send_script``: what successive send() calls do (any iterable): WOULD_BLOCK, or a count
    to take at most; when it runs out every send takes all it is offered. What was taken is in
    ``sent``."""

    def __init__(self, incoming=(), send_script=(), finish_fails=False):
        self._incoming = list(incoming)
        self._send_script = iter(send_script)
        self._finish_fails = finish_fails
        self._lock = threading.Lock()
        self._at_end = False
        self.sent = bytearray()
        self.send_calls = 0
        self.finished = 0
        self.aborted = 0

    @property
    def closed(self) -> bool:
        return bool(self.finished or self.aborted)

    def recv(self, size):
        with self._lock:
            if self.closed:
                raise RejectedByDriver("stream is closed")
            if self._at_end:
                return END
            if not self._incoming:
                return WOULD_BLOCK
            item = self._incoming.pop(0)
            if item == END:
                self._at_end = True
            elif isinstance(item, bytes) and len(item) > size:
                self._incoming.insert(0, item[size:])
                item = item[:size]
            return item

    def send(self, data):
        with self._lock:
            if self.closed:
                raise RejectedByDriver("stream is closed")
            self.send_calls += 1
            step = next(self._send_script, len(data))
            if step == WOULD_BLOCK:
                return WOULD_BLOCK
            taken = data[:step]
            self.sent += taken
            return len(taken)

    def finish(self):
        with self._lock:
            self.finished += 1
            if self._finish_fails:
                raise RejectedByDriver("stream aborted by the remote end")

    def abort(self):
        with self._lock:
            self.aborted += 1


@pytest.fixture
def bridge_for():
    """Make a StreamBridge; close every one at teardown (close() is idempotent)."""
    made = []

    def make(stream, name="test-console"):
        bridge = StreamBridge(stream, name)
        bridge.sock.settimeout(5)  # a hung bridge fails the test instead of hanging it
        made.append(bridge)
        return bridge

    yield make
    for bridge in made:
        bridge.close()


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def wait_for(condition, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def bridge_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name in (f"{name}-out", f"{name}-in")]


# Guest -> harness -----------------------------------------------------------------------------

def test_stream_bytes_arrive_whole_and_in_order_across_would_block(bridge_for):
    """pexpect matches on what it reads: a chunk lost, doubled or reordered around an
    EAGAIN (-2) would cut a prompt short; a chunk bigger than CHUNK must come across whole."""
    big = bytes(range(256)) * (CHUNK * 3 // 256 + 1)
    incoming = [b"login: ", WOULD_BLOCK, WOULD_BLOCK, b"root\r\n", WOULD_BLOCK, big,
                WOULD_BLOCK, b"# "]
    bridge = bridge_for(ScriptedNonblockingStream(incoming))
    expected = b"login: root\r\n" + big + b"# "
    assert read_exactly(bridge.sock, len(expected)) == expected


def test_end_of_stream_is_eof_on_the_socket_and_finishes_the_stream(bridge_for):
    """When the domain goes away pexpect must see EOF (not wait for its timeout), and libvirt
    asks for virStreamFinish once recv has returned end of stream."""
    stream = ScriptedNonblockingStream([b"Powering off.\r\n", WOULD_BLOCK, END])
    bridge = bridge_for(stream, "ended-console")
    assert read_exactly(bridge.sock, 64) == b"Powering off.\r\n"  # short read: EOF came
    assert bridge.sock.recv(64) == b""
    assert wait_for(lambda: not bridge_threads("ended-console"))
    assert (stream.finished, stream.aborted) == (1, 0)
    bridge.close()
    assert (stream.finished, stream.aborted) == (1, 0)  # not finished a second time


# Harness -> guest -----------------------------------------------------------------------------

def test_socket_bytes_reach_the_stream_whole_despite_partial_and_refused_sends(bridge_for):
    """virStreamSend on a non-blocking stream may take part of a buffer or none (-2): the
    rest must be offered again, neither dropped nor sent twice."""
    payload = b"echo ready\n" + b"x" * (CHUNK + 1000)
    stream = ScriptedNonblockingStream(send_script=[WOULD_BLOCK, WOULD_BLOCK, 3, WOULD_BLOCK,
                                                    1, 0, 4])
    bridge = bridge_for(stream)
    bridge.sock.sendall(payload)
    assert wait_for(lambda: len(stream.sent) >= len(payload))
    assert bytes(stream.sent) == payload
    assert stream.send_calls > 7  # the whole script was used: the partial sends happened


# close() --------------------------------------------------------------------------------------

def test_close_finishes_the_stream_once_ends_both_threads_and_closes_the_socket(bridge_for):
    """The machine's destroy() closes every console: it must not hang on a silent console,
    leak its threads or socket, or release the libvirt stream twice (close() is called again
    by later clean-up)."""
    stream = ScriptedNonblockingStream()  # a live console with nothing to say
    bridge = bridge_for(stream, "live-console")
    assert len(bridge_threads("live-console")) == 2
    started = time.monotonic()
    bridge.close()
    assert time.monotonic() - started < 1.0  # well inside close()'s 5 s join timeout
    assert bridge_threads("live-console") == []
    assert (stream.finished, stream.aborted) == (1, 0)
    assert bridge.sock.fileno() == -1
    bridge.close()
    assert (stream.finished, stream.aborted) == (1, 0)


def test_a_stream_that_cannot_finish_is_aborted_instead(bridge_for):
    """virStreamFinish fails on a stream the far end has aborted; the stream must still be
    released (virStreamAbort), or it stays registered with the connection."""
    stream = ScriptedNonblockingStream(finish_fails=True)
    bridge_for(stream).close()
    assert (stream.finished, stream.aborted) == (1, 1)


def test_close_is_prompt_even_when_the_stream_takes_no_input(bridge_for):
    """virStreamSend may keep saying -2 while the far end takes nothing (the guest is not
    reading its serial port); closing the console must still stop both threads within the
    timeout it was given, not leave them running past close()."""
    stream = ScriptedNonblockingStream(send_script=itertools.repeat(WOULD_BLOCK))
    bridge = bridge_for(stream, "backed-up-console")
    bridge.sock.sendall(b"typed while the guest is not reading\n")
    assert wait_for(lambda: stream.send_calls > 0)
    started = time.monotonic()
    bridge.close(timeout=0.5)
    took, running = time.monotonic() - started, bridge_threads("backed-up-console")
    assert (took < 0.75, running) == (True, []), f"close() took {took:.2f} s"
    assert (stream.finished, stream.aborted) == (1, 0)
