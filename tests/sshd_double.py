"""SshdDouble: a stand-in for a guest's sshd, for unit tests of the SSH channel (never used by
the harness itself).

It is paramiko's server side on a loopback socket, in a thread: it accepts the one client key
it is given, and runs what a test asks of it for every exec (``on_exec(channel, command,
transport)``, in a thread of its own) and for the SFTP subsystem (``sftp``, a paramiko
``SFTPServerInterface`` class). A test makes sshd "die" by closing the transport
(:meth:`SshdDouble.die`): the client sees the TCP connection end, as when sshd is killed.
"""
from __future__ import annotations

import io
import socket
import threading

import paramiko

from harness.console.ssh import ClientKey, SshChannel, new_client_key
from harness.images.debian_rootfs.sshkey import host_key_files

PRIVATE, PUBLIC = host_key_files(b"sshd double", "sshd-double")
HOST_KEY = paramiko.Ed25519Key.from_private_key(io.StringIO(PRIVATE.decode()))


class _Server(paramiko.ServerInterface):
    def __init__(self, double: "SshdDouble"):
        self.double = double

    def check_auth_publickey(self, username, key):
        return paramiko.AUTH_SUCCESSFUL if key == self.double.client.pkey else \
            paramiko.AUTH_FAILED

    def get_allowed_auths(self, username):
        return "publickey"

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED if kind == "session" else \
            paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel, command):
        if self.double.on_exec is None:
            return False
        threading.Thread(target=self.double.on_exec,
                         args=(channel, command.decode(), self.double.transport),
                         daemon=True).start()
        return True


class SshdDouble:
    """A stand-in sshd on 127.0.0.1 (see the module docstring); a context manager."""

    def __init__(self, on_exec=None, sftp=None):
        self.on_exec, self.sftp = on_exec, sftp
        self.client: ClientKey = new_client_key()
        self.transport: paramiko.Transport | None = None
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        sock, _ = self._listener.accept()
        transport = paramiko.Transport(sock)
        transport.add_server_key(HOST_KEY)
        if self.sftp is not None:
            transport.set_subsystem_handler("sftp", paramiko.SFTPServer, self.sftp)
        self.transport = transport
        transport.start_server(server=_Server(self))

    def connect(self, watch=None, timeout: float = 10.0) -> SshChannel:
        return SshChannel("127.0.0.1", self.port, "root", self.client, PUBLIC.decode().strip(),
                          timeout=timeout, watch=watch)

    def die(self) -> None:
        """sshd is gone: its connection ends with no goodbye."""
        if self.transport is not None:
            self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.die()
        self._listener.close()
        self._thread.join(10)
