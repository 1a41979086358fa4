"""The SSH transport (paramiko): a second way to the same guest, beside its serial console.

Why this exists: the serial console is slow (115200 baud) and carries one shell; SSH gives
commands with their own exit status and output, file transfer and bulk data at network speed,
through the backend's network (QEMU: user networking with a host forward on loopback).

Rules that make it a conformance transport rather than a convenience:
- the key pair is made per run (:func:`new_client_key`) and given to the guest by the harness;
- the guest's host key must be the one recorded for its image: paramiko's ``RejectPolicy``
  with only that key known, never ``AutoAddPolicy``;
- not getting a connection (refused, timed out, wrong host key, key not accepted) is an
  infrastructure error with the reason; a connection that dies once made (under a command, an
  upload, a download or SFTP: sshd killed, the guest gone) is a guest failure with the reason;
- the serial console is watched for the whole of every command and transfer (``watch``, the
  guest-OS driver's), and nothing waits without a deadline: a guest that panics mid-transfer
  is a guest failure quoting the panic, one that stops taking data a timeout.
"""
from __future__ import annotations

import base64
import hashlib
import io
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable

import paramiko
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (Encoding, NoEncryption, PrivateFormat,
                                                          PublicFormat)

from ..errors import GuestFailure, InfraError

CHUNK = 1 << 16
WATCH_SECONDS = 0.05  # the console is read this long per turn while a transfer runs
POLL_SECONDS = 0.5  # a transfer thread blocked in paramiko looks this often if it was called off
JOIN_SECONDS = 5.0  # how long a called-off transfer thread is waited for (it is a daemon)
# What paramiko raises when the connection ends under it (socket.timeout is an OSError too).
LOST = (EOFError, OSError, paramiko.SSHException)


def host_chunks(chunks):
    """``chunks`` as they come, with the host's own failures (a file read, a full disk in the
    caller's hashing) as infrastructure errors: OSError is also how paramiko says the
    connection is lost (LOST), which would blame the guest."""
    source = iter(chunks)
    while True:
        try:
            chunk = next(source)
        except StopIteration:
            return
        except OSError as err:
            raise InfraError(f"the host could not produce the data to send: {err}") from err
        yield chunk


class SshRefused(InfraError):
    """The guest answered but is not the one expected (host key) or refused the run's key:
    trying again will not help."""


@dataclass(frozen=True)
class ClientKey:
    pkey: paramiko.PKey
    public_line: str  # "ssh-ed25519 AAAA... refvm-run": base64 and a fixed word only


def new_client_key(comment: str = "refvm-run") -> ClientKey:
    """A fresh Ed25519 key pair for one run (paramiko cannot make Ed25519 keys itself)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()).decode()
    public = key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    return ClientKey(paramiko.Ed25519Key.from_private_key(io.StringIO(pem)),
                     f"{public} {comment}")


def parse_host_key(line: str) -> paramiko.PKey:
    """An OpenSSH public key line ("ssh-ed25519 AAAA... comment") as paramiko's key."""
    try:
        kind, blob = line.split()[:2]
        return paramiko.PKey.from_type_string(kind, base64.b64decode(blob))
    except (ValueError, paramiko.SSHException) as err:
        raise InfraError(f"the recorded SSH host key is not an OpenSSH public key: {err}") \
            from None


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class SshResult:
    status: int
    output: str
    seconds: float


class SshChannel:
    """One SSH connection to a guest; ``watch(seconds)`` is called while commands run, so the
    serial console is still read for panics (the guest-OS driver's ``watch``)."""

    def __init__(self, host: str, port: int, user: str, key: ClientKey, host_key: str,
                 timeout: float = 30.0, watch: Callable[[float], object] | None = None):
        self.host, self.port, self.user = host, port, user
        self.watch = watch or (lambda seconds: time.sleep(seconds))
        expected = parse_host_key(host_key)
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        name = host if port == 22 else f"[{host}]:{port}"
        client.get_host_keys().add(name, expected.get_name(), expected)
        where = f"{user}@{host}:{port}"
        try:
            client.connect(host, port=port, username=user, pkey=key.pkey, timeout=timeout,
                           banner_timeout=timeout, auth_timeout=timeout, allow_agent=False,
                           look_for_keys=False)
        except paramiko.BadHostKeyException as err:
            client.close()
            raise SshRefused(f"SSH {where}: the host key is {fingerprint(err.key)}, not the "
                             f"{fingerprint(expected)} recorded for this image: refused")
        except paramiko.AuthenticationException as err:
            client.close()
            raise SshRefused(f"SSH {where}: the guest did not accept the run's key: {err}")
        except (paramiko.SSHException, OSError) as err:
            client.close()
            raise InfraError(f"SSH {where}: cannot connect: {err or type(err).__name__}")
        self.client = client
        self.where = where

    def _transport(self) -> paramiko.Transport:
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise GuestFailure(f"SSH {self.where}: the connection is gone (sshd died or the "
                               "guest went down)")
        return transport

    def _lost(self, err: BaseException, what: str) -> GuestFailure:
        """paramiko's error under ``what`` as a guest failure: the connection was made, so
        the guest (its sshd, its SFTP server, its kernel) is what failed."""
        reason = str(err) or type(err).__name__
        transport = self.client.get_transport()
        if transport is not None and transport.is_active():  # e.g. SFTP: no such file
            return GuestFailure(f"SSH {self.where}: {what} failed: {reason}")
        return GuestFailure(f"SSH {self.where}: the connection was lost during {what}: "
                            f"{reason} (sshd died or the guest went down)")

    def _exec(self, command: str) -> paramiko.Channel:
        transport = self._transport()
        try:
            channel = transport.open_session()
            channel.exec_command(command)
        except LOST as err:  # EOFError: the transport's saved reason it ended
            raise GuestFailure(f"SSH {self.where}: cannot start {command!r}: "
                               f"{err or type(err).__name__}") from None
        return channel

    def _watched(self, work: Callable[[threading.Event], None], what: str, timeout: float,
                 deadline: float, progress: Callable[[], str] = str) -> None:
        """Run ``work(stop)``, a transfer that may block inside paramiko, in a thread while
        this one watches the console (``self.watch``), until it ends or ``deadline``.

        Why a thread: paramiko blocks without bound where a dead guest leaves it (a full
        send window, a TCP buffer the guest stopped reading, an SFTP reply that never comes),
        and a blocked caller reads no console. A failure pattern on the console (raised by
        ``watch``) or the deadline calls the transfer off: the connection is closed, which
        ends every wait in paramiko, and ``stop`` is set for a thread between calls. A
        transfer that ends with a lost connection is a guest failure with paramiko's reason."""
        stop = threading.Event()
        outcome: dict = {}

        def target() -> None:
            try:
                work(stop)
            except BaseException as err:  # noqa: BLE001 - judged below, in the caller
                outcome["error"] = err

        worker = threading.Thread(target=target, name=f"refvm ssh: {what}", daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise GuestFailure(f"SSH {self.where}: {what} timed out after "
                                       f"{timeout:.0f} s{progress()} (the guest stopped "
                                       "taking or giving data)")
                self._watch_console(min(WATCH_SECONDS, left), what)
        except BaseException:
            stop.set()
            self.client.close()
            worker.join(JOIN_SECONDS)
            raise
        error = outcome.get("error")
        if isinstance(error, LOST):
            raise self._lost(error, what) from None
        if error is not None:
            raise error  # a HarnessError as it is; anything else is a bug, with its traceback

    def _watch_console(self, seconds: float, what: str) -> None:
        """The console's watch (a failure pattern there raises); the console ending means the
        VM is gone: a guest failure now, not a wait for SSH to notice (on a bridge no one
        resets the TCP connection of a VM that vanished)."""
        if self.watch(seconds):
            raise GuestFailure(f"SSH {self.where}: the serial console ended during {what}: the "
                               "VM exited")

    def _finish(self, channel: paramiko.Channel, command: str, deadline: float,
                sink: Callable[[bytes], None],
                err_sink: Callable[[bytes], None] | None = None) -> int:
        """Read stdout into ``sink`` (stderr into ``err_sink``, default ``sink``) until the
        command exits and its output has all come; the console is watched meanwhile.

        The exit status alone does not end the output: sshd sends it as soon as the command
        exits, outside the channel's flow control, while output the client's window did not
        take yet is still on its way (seen: 4 KiB of 8 MiB lost through libvirt). EOF comes
        after the last byte, so the loop ends on exit status *and* EOF with nothing buffered,
        or when the connection is gone."""
        channel.settimeout(0.0)
        while True:
            got = False
            for receive, into in ((channel.recv, sink), (channel.recv_stderr, err_sink or sink)):
                try:
                    data = receive(CHUNK)
                except socket.timeout:
                    continue
                except LOST as err:  # paramiko's window adjust after a read hit a dead link
                    raise self._lost(err, repr(command)) from None
                if data:
                    into(data)
                    got = True
            done = channel.exit_status_ready() and channel.eof_received
            gone = channel.closed or (channel.eof_received and
                                      not self.client.get_transport().is_active())
            if (done or gone) and not got and not channel.recv_ready() and \
                    not channel.recv_stderr_ready():
                break
            if time.monotonic() > deadline:
                channel.close()
                raise GuestFailure(f"SSH {self.where}: {command!r} did not finish in time")
            if not got:
                self._watch_console(0.05, repr(command))
        if not channel.exit_status_ready():
            raise GuestFailure(f"SSH {self.where}: the connection closed under {command!r} "
                               "without an exit status (sshd died or the guest went down)")
        status = channel.recv_exit_status()
        channel.close()
        if status == -1:
            raise GuestFailure(f"SSH {self.where}: {command!r} ended without an exit status "
                               "(killed with its sshd?)")
        return status

    def run(self, command: str, timeout: float = 60.0) -> SshResult:
        """Run one command (stdout and stderr together); its exit status and output."""
        started = time.monotonic()
        channel = self._exec(command)
        out = bytearray()
        status = self._finish(channel, command, started + timeout, out.extend)
        return SshResult(status, out.decode(errors="replace").replace("\r", ""),
                         time.monotonic() - started)

    def send(self, command: str, data_chunks, timeout: float = 600.0) -> SshResult:
        """Stream ``data_chunks`` (bytes) into ``command``'s stdin, then close it; ``timeout``
        covers the whole command. Sent in pieces of at most CHUNK bytes as the guest's send
        window lets them through, with the console watched meanwhile (:meth:`_watched`)."""
        started = time.monotonic()
        deadline = started + timeout
        channel = self._exec(command)
        transport = self._transport()
        sent = [0]

        def push(stop: threading.Event) -> None:
            channel.settimeout(POLL_SECONDS)  # a full window is waited for in short turns
            for chunk in host_chunks(data_chunks):
                for start in range(0, len(chunk), CHUNK):
                    piece = chunk[start:start + CHUNK]
                    while piece:
                        if stop.is_set():
                            return
                        try:
                            n = channel.send(piece)
                            if n == 0:
                                raise EOFError("the channel closed")
                        except socket.timeout:
                            continue
                        except LOST:
                            if channel.exit_status_ready() and transport.is_active():
                                return  # the command ended first: _finish gives its status
                            raise
                        piece = piece[n:]
                        sent[0] += n
            channel.shutdown_write()

        self._watched(push, f"the upload to {command!r}", timeout, deadline,
                      lambda: f" with {sent[0]} bytes taken")
        out = bytearray()
        status = self._finish(channel, command, deadline, out.extend)
        return SshResult(status, out.decode(errors="replace"), time.monotonic() - started)

    def receive(self, command: str, sink: Callable[[bytes], None],
                timeout: float = 600.0) -> int:
        """Run ``command`` and hand its stdout to ``sink`` as it comes; the exit status."""
        channel = self._exec(command)
        errors = bytearray()
        status = self._finish(channel, command, time.monotonic() + timeout, sink, errors.extend)
        if errors:
            self.last_errors = errors.decode(errors="replace")[-500:]
        return status

    def put(self, local, remote: str, timeout: float = 600.0) -> None:
        """Copy a host file to the guest (SFTP), the console watched meanwhile."""
        with _HostFile(local, "rb") as source:
            self._sftp(lambda sftp: sftp.putfo(source, remote),
                       f"SFTP put of {local} to {remote!r}", timeout)

    def get(self, remote: str, local, timeout: float = 600.0) -> None:
        """Copy a guest file to the host (SFTP), the console watched meanwhile."""
        with _HostFile(local, "wb") as target:
            # no prefetch: its paramiko thread dies with a traceback of its own when sshd does
            self._sftp(lambda sftp: sftp.getfo(remote, target, prefetch=False),
                       f"SFTP get of {remote!r} to {local}", timeout)

    def _sftp(self, transfer, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        transport = self._transport()

        def work(stop: threading.Event) -> None:
            sftp = transport.open_sftp_client()
            try:
                transfer(sftp)
            finally:
                sftp.close()

        self._watched(work, what, timeout, deadline)

    def close(self) -> None:
        self.client.close()


class _HostFile:
    """A host file an SFTP transfer reads or writes. Its own I/O errors are the host's
    (InfraError): inside paramiko an OSError would read as the connection lost."""

    def __init__(self, path, mode: str):
        self.path = path
        try:
            self.file = open(path, mode)
        except OSError as err:
            raise InfraError(f"host: cannot open {path}: {err.strerror or err}") from None

    def read(self, size: int = -1) -> bytes:
        try:
            return self.file.read(size)
        except OSError as err:
            raise InfraError(f"host: cannot read {self.path}: {err.strerror or err}") from None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as err:
            raise InfraError(f"host: cannot write {self.path}: {err.strerror or err}") \
                from None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.file.close()  # a write-back error (a full disk) can come only now
        except OSError as err:
            if exc[0] is not None:
                return  # the transfer's own error says more
            raise InfraError(f"host: cannot write {self.path}: {err.strerror or err}") \
                from None
