"""The SSH channel reads a command's whole output even when the exit status comes first.

sshd sends ``exit-status`` when the command exits, outside the channel's flow control, so it
can reach the client while output is still on its way (seen through libvirt: 4 KiB of 8 MiB
missing, with exit 0). A test double of sshd (tests/sshd_double.py: paramiko's server side, on
loopback) sends the status before the last part of the output, then that part, then EOF.
"""
from __future__ import annotations

import hashlib
import os
import time

from tests.sshd_double import SshdDouble

PAYLOAD = os.urandom(3 << 20)


def early_status(channel, command, transport) -> None:
    """Every exec writes PAYLOAD's first part, sends exit status 0, waits, then writes the
    rest and EOF."""
    split = len(PAYLOAD) - 4096
    channel.sendall(PAYLOAD[:split])
    channel.send_exit_status(0)  # before the last 4 KiB, as sshd may
    time.sleep(0.5)
    channel.sendall(PAYLOAD[split:])
    channel.shutdown_write()  # EOF
    time.sleep(0.5)
    channel.close()


def test_the_output_after_an_early_exit_status_is_not_lost():
    with SshdDouble(on_exec=early_status) as sshd:
        channel = sshd.connect(timeout=20)
        got = bytearray()
        status = channel.receive("cat big", got.extend, timeout=30)
        channel.close()
    assert status == 0
    assert len(got) == len(PAYLOAD) and hashlib.sha256(got).digest() == \
        hashlib.sha256(PAYLOAD).digest()
