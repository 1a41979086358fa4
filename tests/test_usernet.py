"""The SSH forward the libvirt backend adds to a running domain, proven on a real QEMU (paused,
no guest): the NIC's user-network backend found in ``info network`` by its MAC, ``hostfwd_add``
on it, the port read back from ``info usernet`` and listening on loopback."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess

import pytest

from harness.backends.usernet import SSH_FORWARD, forwarded_ssh_port, user_netdev_of

MAC = "52:54:00:5a:00:22"


class Hmp:
    """HMP commands through QMP's human-monitor-command, over QEMU's stdio."""

    def __init__(self, netdev_id: str):
        self.proc = subprocess.Popen(
            ["qemu-system-x86_64", "-S", "-display", "none", "-nodefaults", "-machine", "q35",
             "-netdev", f"user,id={netdev_id}", "-device",
             f"virtio-net-pci,netdev={netdev_id},mac={MAC}", "-qmp", "stdio"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._reply()  # greeting
        self._send({"execute": "qmp_capabilities"})

    def _reply(self) -> dict:
        while True:
            message = json.loads(self.proc.stdout.readline())
            if "event" not in message:
                return message

    def _send(self, command: dict) -> dict:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def __call__(self, line: str) -> str:
        return self._send({"execute": "human-monitor-command",
                           "arguments": {"command-line": line}})["return"]

    def close(self):
        self.proc.kill()
        self.proc.wait(10)


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU not installed")
def test_hostfwd_added_to_a_running_qemu_is_found_and_listens():
    hmp = Hmp("hostnet0")  # libvirt's name for the first NIC's backend
    try:
        assert forwarded_ssh_port(hmp("info usernet")) is None
        netdev = user_netdev_of(hmp("info network"), MAC)
        assert netdev == "hostnet0"
        assert user_netdev_of(hmp("info network"), "52:54:00:00:00:99") is None
        assert hmp(f"hostfwd_add {netdev} {SSH_FORWARD}") == ""
        port = forwarded_ssh_port(hmp("info usernet"))
        assert port and port > 1024
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # QEMU accepts on the host's side (then drops: nothing runs in the guest)
    finally:
        hmp.close()
