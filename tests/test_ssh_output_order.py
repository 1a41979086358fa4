"""The SSH channel reads a command's whole output even when the exit status comes first.

sshd sends ``exit-status`` when the command exits, outside the channel's flow control, so it
can reach the client while output is still on its way (seen through libvirt: 4 KiB of 8 MiB
missing, with exit 0). A test double of sshd (paramiko's server side, on loopback) sends the
status before the last part of the output, then that part, then EOF.
"""
from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

import paramiko

from harness.console.ssh import SshChannel, new_client_key
from harness.images.debian_rootfs.sshkey import host_key_files

PAYLOAD = os.urandom(3 << 20)


class SshdDouble(paramiko.ServerInterface):
    """Accepts the one client key; every exec writes PAYLOAD's first part, sends exit status
    0, waits, then writes the rest and EOF."""

    def __init__(self, client_key):
        self.client_key = client_key
        self.command = threading.Event()

    def check_auth_publickey(self, username, key):
        return paramiko.AUTH_SUCCESSFUL if key == self.client_key else paramiko.AUTH_FAILED

    def get_allowed_auths(self, username):
        return "publickey"

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED if kind == "session" else \
            paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel, command):
        self.command.set()
        return True


def serve(listener: socket.socket, host_key: paramiko.PKey, server: SshdDouble) -> None:
    sock, _ = listener.accept()
    transport = paramiko.Transport(sock)
    transport.add_server_key(host_key)
    transport.start_server(server=server)
    channel = transport.accept(20)
    server.command.wait(20)
    split = len(PAYLOAD) - 4096
    channel.sendall(PAYLOAD[:split])
    channel.send_exit_status(0)  # before the last 4 KiB, as sshd may
    time.sleep(0.5)
    channel.sendall(PAYLOAD[split:])
    channel.shutdown_write()  # EOF
    time.sleep(0.5)
    channel.close()
    time.sleep(0.5)
    transport.close()


def test_the_output_after_an_early_exit_status_is_not_lost(tmp_path):
    private, public = host_key_files(b"double", "sshd-double")
    (tmp_path / "host").write_bytes(private)
    host_key = paramiko.Ed25519Key.from_private_key_file(str(tmp_path / "host"))
    client = new_client_key()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    server = SshdDouble(client.pkey)
    thread = threading.Thread(target=serve, args=(listener, host_key, server), daemon=True)
    thread.start()
    try:
        channel = SshChannel("127.0.0.1", listener.getsockname()[1], "root", client,
                             public.decode().strip(), timeout=20)
        got = bytearray()
        status = channel.receive("cat big", got.extend, timeout=30)
        channel.close()
    finally:
        listener.close()
        thread.join(10)
    assert status == 0
    assert len(got) == len(PAYLOAD) and hashlib.sha256(got).digest() == \
        hashlib.sha256(PAYLOAD).digest()
