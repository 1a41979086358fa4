"""What the SSH channel reports when the guest goes wrong under a transfer (issue 13).

- A guest that stops reading its stdin mid-upload (it panicked) must not hang the harness:
  the serial console is watched between chunks, so the panic ends the step as a guest failure
  quoting it, and a guest that only stalls is a timeout at the step's deadline.
- sshd dying after the connection was made (mid-command, mid-upload, mid-download, mid-SFTP)
  is a guest failure with the reason, never a raw EOFError that reads as an infra problem.

The guest is simulated: its sshd is tests/sshd_double.py (paramiko's server on loopback) and
its serial console a socketpair read by the real SerialConsole with the Linux family's
failure patterns, watched through the same hook the SSH driver gives the channel.
"""
from __future__ import annotations

import hashlib
import os
import random
import socket
import threading
import time

import paramiko
import pytest

from harness.console.log import ConsoleLog
from harness.console.serial import SerialConsole
from harness.errors import GuestFailure, InfraError
from harness.families import family
from harness.guestos.base import GuestDriver
from harness.guestos.ssh import console_watch
from tests.sshd_double import SshdDouble

MB = 1 << 20
DOWNLOAD_TRIES = 20
PANIC = "[   42.123456] Kernel panic - not syncing: Fatal exception in interrupt\r\n"


def outcome_within(seconds: float, call):
    """``call()``'s exception (None if it returned), failing the test if it is still running
    after ``seconds`` (a hang: the thread is left behind, a daemon)."""
    box = {}

    def target():
        try:
            call()
        except BaseException as err:  # noqa: BLE001 - handed to the test to judge
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: the channel hung"
    return box.get("error")


def chunks(count: int):
    return (os.urandom(MB) for _ in range(count))


def assert_guest_failure(error, *words):
    assert isinstance(error, GuestFailure), f"not a guest failure: {error!r}"
    assert error.category == "guest"
    for word in words:
        assert word in str(error), str(error)


@pytest.fixture
def console(tmp_path):
    """(the guest-OS driver's console watch, the guest's end of its serial line)."""
    harness_side, guest = socket.socketpair()
    log = ConsoleLog(tmp_path / "console.log")
    linux = family("linux")
    serial = SerialConsole(harness_side, log, linux.failure_patterns)
    yield console_watch(GuestDriver(serial, linux, None)), guest
    serial.close()
    log.close()
    guest.close()
    harness_side.close()


def never_reads(stop: threading.Event):
    def on_exec(channel, command, transport):
        stop.wait(60)
    return on_exec


def test_a_guest_that_panics_mid_upload_is_a_guest_failure_naming_the_panic(console):
    watch, guest_console = console
    stop = threading.Event()
    with SshdDouble(on_exec=never_reads(stop)) as sshd:
        channel = sshd.connect(watch=watch)
        threading.Timer(1.0, guest_console.sendall, args=(PANIC.encode(),)).start()
        started = time.monotonic()
        error = outcome_within(20, lambda: channel.send("sha256sum", chunks(256), timeout=60))
        stop.set()
        channel.close()
    assert_guest_failure(error, "Kernel panic - not syncing")
    assert time.monotonic() - started < 10  # the panic ended it, not the 60 s deadline


def test_a_guest_that_stops_reading_is_a_timeout_at_the_deadline(console):
    watch, _ = console
    stop = threading.Event()
    with SshdDouble(on_exec=never_reads(stop)) as sshd:
        channel = sshd.connect(watch=watch)
        started = time.monotonic()
        error = outcome_within(15, lambda: channel.send("sha256sum", chunks(64), timeout=3))
        took = time.monotonic() - started
        stop.set()
        channel.close()
    assert_guest_failure(error, "sha256sum", "timed out after 3 s")
    assert 3 <= took < 8


def test_a_vm_that_exits_mid_upload_fails_at_once_not_at_the_deadline(console):
    """The console ending (the hypervisor gone) while nothing resets the TCP connection, as on
    a bhyve bridge: a guest failure saying so, without spinning until the deadline."""
    watch, guest_console = console
    stop = threading.Event()
    with SshdDouble(on_exec=never_reads(stop)) as sshd:
        channel = sshd.connect(watch=watch)
        threading.Timer(1.0, guest_console.close).start()
        started = time.monotonic()
        cpu = time.process_time()
        error = outcome_within(20, lambda: channel.send("sha256sum", chunks(256), timeout=60))
        took, cpu = time.monotonic() - started, time.process_time() - cpu
        stop.set()
        channel.close()
    assert_guest_failure(error, "the serial console ended", "the VM exited")
    assert took < 10 and cpu < 5


def test_a_host_side_read_error_while_sending_is_infra_not_the_guests():
    def failing_source():
        yield os.urandom(MB)
        raise OSError(5, "Input/output error")
    with SshdDouble(on_exec=hash_stdin()) as sshd:
        channel = sshd.connect()
        error = outcome_within(20, lambda: channel.send("sha256sum", failing_source(),
                                                        timeout=30))
        channel.close()
    assert isinstance(error, InfraError) and error.category == "infra", repr(error)
    assert "Input/output error" in str(error)


def hash_stdin(stop_after: int | None = None, status: int = 0):
    """An exec that hashes its stdin (all of it, or the first ``stop_after`` bytes, as a
    command that exits early) and prints the hash, like sha256sum."""
    def on_exec(channel, command, transport):
        digest, got = hashlib.sha256(), 0
        while stop_after is None or got < stop_after:
            data = channel.recv(65536)
            if not data:
                break
            digest.update(data)
            got += len(data)
        channel.sendall(f"{digest.hexdigest()}  -\n".encode())
        channel.send_exit_status(status)
        channel.close()
    return on_exec


def test_an_upload_arrives_whole_with_the_console_watched():
    data = [os.urandom(MB + 7) for _ in range(24)]
    turns = []
    with SshdDouble(on_exec=hash_stdin()) as sshd:
        channel = sshd.connect(watch=lambda seconds: turns.append(seconds) or time.sleep(seconds))
        result = channel.send("sha256sum", iter(data), timeout=60)
        channel.close()
    assert result.status == 0
    assert result.output.split()[0] == hashlib.sha256(b"".join(data)).hexdigest()
    assert turns  # the console was watched while the data went


def test_a_command_that_stops_reading_and_exits_gives_its_status():
    with SshdDouble(on_exec=hash_stdin(stop_after=MB, status=3)) as sshd:
        channel = sshd.connect()
        result = channel.send("head -c 1M | sha256sum; exit 3", chunks(16), timeout=20)
        channel.close()
    assert result.status == 3


def test_sshd_dying_mid_upload_is_a_guest_failure():
    def on_exec(channel, command, transport):
        got = 0
        while got < MB:
            got += len(channel.recv(65536))
        sshd.die()

    with SshdDouble(on_exec=on_exec) as sshd:
        channel = sshd.connect()
        error = outcome_within(20, lambda: channel.send("sha256sum", chunks(64), timeout=60))
        channel.close()
    assert_guest_failure(error, "sha256sum", "connection")


@pytest.mark.parametrize("seed", range(DOWNLOAD_TRIES))
def test_sshd_dying_mid_download_is_a_guest_failure(seed):
    """sshd dies after a random part of the download: the client may be reading what it
    buffered, or telling sshd it has room for more (a write that can meet the dead link;
    raw EOFError before the fix, in about one try of ten), or waiting."""
    def on_exec(channel, command, transport):
        channel.sendall(os.urandom(random.Random(seed).randrange(2 * MB)))
        sshd.die()

    with SshdDouble(on_exec=on_exec) as sshd:
        channel = sshd.connect()
        error = outcome_within(20, lambda: channel.receive("head -c 64M /dev/urandom",
                                                           lambda data: None, timeout=60))
        channel.close()
    assert_guest_failure(error, "head -c 64M")


def test_sshd_dying_mid_command_is_a_guest_failure():
    def on_exec(channel, command, transport):
        channel.sendall(b"working\n")
        time.sleep(0.3)
        sshd.die()

    with SshdDouble(on_exec=on_exec) as sshd:
        channel = sshd.connect()
        error = outcome_within(20, lambda: channel.run("sleep 100", timeout=60))
        channel.close()
    assert_guest_failure(error, "sleep 100")


# SFTP ------------------------------------------------------------------------------------------
FILE_BYTES = 4 * MB
DIES_AFTER = MB


class MemoryFile(paramiko.SFTPHandle):
    """A file of the double's SFTP server, kept in ``files``; with ``dies_after``, sshd dies
    once that many bytes went either way."""

    def __init__(self, files: dict, path: str, sshd: SshdDouble, dies_after: int | None):
        super().__init__()
        self.files, self.path, self.sshd, self.dies_after = files, path, sshd, dies_after
        self.moved = 0
        files.setdefault(path, bytearray())

    def _count(self, nbytes: int) -> None:
        self.moved += nbytes
        if self.dies_after is not None and self.moved > self.dies_after:
            self.sshd.die()

    def write(self, offset, data):
        self._count(len(data))
        content = self.files[self.path]
        content[offset:offset + len(data)] = data
        return paramiko.SFTP_OK

    def read(self, offset, length):
        data = bytes(self.files[self.path][offset:offset + length])
        self._count(len(data))
        return data

    def stat(self):
        return attributes_of(self.files[self.path])


def attributes_of(content) -> paramiko.SFTPAttributes:
    attributes = paramiko.SFTPAttributes()
    attributes.st_size, attributes.st_mode = len(content), 0o100644
    return attributes


class MemorySftp(paramiko.SFTPServerInterface):
    """The SFTP subsystem of the double: files in memory (``FILES``, per test), sshd dying
    after ``DIES_AFTER`` bytes of a transfer when that is set."""

    FILES: dict = {}
    DIES_AFTER: int | None = None

    def __init__(self, server, *args, **kwargs):
        super().__init__(server, *args, **kwargs)
        self.sshd = server.double

    def open(self, path, flags, attr):
        if path not in self.FILES and not flags & os.O_CREAT:
            return paramiko.SFTP_NO_SUCH_FILE
        return MemoryFile(self.FILES, path, self.sshd, self.DIES_AFTER)

    def stat(self, path):
        if path not in self.FILES:
            return paramiko.SFTP_NO_SUCH_FILE
        return attributes_of(self.FILES[path])

    lstat = stat


def sftp_double(files: dict, dies_after: int | None = None):
    return type("TestSftp", (MemorySftp,), {"FILES": files, "DIES_AFTER": dies_after})


def test_sftp_put_and_get_copy_a_file_whole(tmp_path):
    local, back = tmp_path / "up", tmp_path / "down"
    local.write_bytes(os.urandom(FILE_BYTES + 5))
    files: dict = {}
    with SshdDouble(sftp=sftp_double(files)) as sshd:
        channel = sshd.connect()
        channel.put(local, "/tmp/rv.file", timeout=20)
        channel.get("/tmp/rv.file", back, timeout=20)
        channel.close()
    assert bytes(files["/tmp/rv.file"]) == local.read_bytes() == back.read_bytes()


def test_a_missing_guest_file_is_a_guest_failure_not_a_lost_connection(tmp_path):
    with SshdDouble(sftp=sftp_double({})) as sshd:
        channel = sshd.connect()
        error = outcome_within(20, lambda: channel.get("/tmp/none", tmp_path / "f", timeout=20))
        channel.close()
    assert_guest_failure(error, "SFTP get of '/tmp/none'", "failed")
    assert "connection" not in str(error)


@pytest.mark.parametrize("direction", ["put", "get"])
def test_sshd_dying_mid_sftp_is_a_guest_failure(tmp_path, direction):
    local = tmp_path / "file"
    files = {"/tmp/rv.file": bytearray(os.urandom(FILE_BYTES))} if direction == "get" else {}
    if direction == "put":
        local.write_bytes(os.urandom(FILE_BYTES))
    with SshdDouble(sftp=sftp_double(files, dies_after=DIES_AFTER)) as sshd:
        channel = sshd.connect()
        copy = channel.put if direction == "put" else channel.get
        ends = (local, "/tmp/rv.file") if direction == "put" else ("/tmp/rv.file", local)
        error = outcome_within(20, lambda: copy(*ends, timeout=60))
        channel.close()
    assert_guest_failure(error, "SFTP", "/tmp/rv.file", "connection")
