"""Bulk data and file transfer over the SSH channel, hashed on both ends.

The host streams random bytes into the guest's ``sha256sum`` and the guest streams random
bytes back, hashed on their way out (``tee`` into a FIFO that ``sha256sum`` reads: nothing is
stored, so 256 MiB need no room on the guest's disk); then one file goes each way by SFTP.
Every transfer is hashed where it starts and where it ends, and the step compares. The serial
console is read for panics the whole time, and every transfer has a deadline
(harness/console/ssh.py watches the console between reads and while data is sent); sshd dying
under any of them is a guest failure.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

from .. import schema as s
from ..errors import GuestFailure, InfraError
from .guestops import first_sha256
from .registry import register

CHUNK = 1 << 20
SCRATCH = "/tmp/rv.ssh"


def _random_chunks(nbytes: int, digest):
    left = nbytes
    while left:
        chunk = os.urandom(min(CHUNK, left))
        digest.update(chunk)
        left -= len(chunk)
        yield chunk


@register("ssh_transfer", s.Map({
    "bytes": s.F(s.Size(minimum=1), default=32 << 20, doc="streamed each way"),
    "file_bytes": s.F(s.Size(minimum=1, maximum=1 << 30), default=1 << 20,
                      doc="sent each way by SFTP"),
}))
def ssh_transfer(ctx, args):
    """``bytes`` each way over an SSH channel and a file each way by SFTP, hashes compared."""
    if ctx.channel != "ssh":
        raise InfraError("ssh_transfer moves data over SSH: give it channel: ssh")
    ssh = ctx.guest.channel
    nbytes = args["bytes"]

    sent = hashlib.sha256()
    started = time.monotonic()
    result = ssh.send("sha256sum", _random_chunks(nbytes, sent), timeout=ctx.remaining(900))
    seen = first_sha256(result.output, "sha256sum of the host's stream")
    ctx.record("ssh_host_to_guest_seconds", round(time.monotonic() - started, 2))
    ctx.record("ssh_host_to_guest_sha256", sent.hexdigest())
    if result.status != 0 or seen != sent.hexdigest():
        raise GuestFailure(f"SSH: the host sent {nbytes} bytes with sha256 {sent.hexdigest()}; "
                           f"the guest hashed {seen} (exit {result.status})")

    got, count = hashlib.sha256(), [0]

    def sink(data: bytes) -> None:
        got.update(data)
        count[0] += len(data)

    started = time.monotonic()
    status = ssh.receive(f"rm -f {SCRATCH}.fifo && mkfifo {SCRATCH}.fifo && "
                         f"{{ sha256sum < {SCRATCH}.fifo > {SCRATCH}.sum & "
                         f"head -c {nbytes} /dev/urandom | tee {SCRATCH}.fifo; wait; }}",
                         sink, timeout=ctx.remaining(900))
    ctx.record("ssh_guest_to_host_seconds", round(time.monotonic() - started, 2))
    wrote = first_sha256(ctx.guest.run(f"cat {SCRATCH}.sum; rm -f {SCRATCH}.fifo {SCRATCH}.sum",
                                       timeout=ctx.remaining(60)).output,
                         "sha256sum of what the guest sent")
    ctx.record("ssh_guest_to_host_sha256", wrote)
    if status != 0 or count[0] != nbytes or got.hexdigest() != wrote:
        raise GuestFailure(f"SSH: the guest sent {nbytes} bytes with sha256 {wrote}; the host "
                           f"received {count[0]} with sha256 {got.hexdigest()} (exit {status})")
    ctx.record("ssh_bytes_each_way", nbytes)

    with tempfile.TemporaryDirectory(prefix="refvm-sftp-") as tmp:
        local, back = Path(tmp) / "up", Path(tmp) / "down"
        local.write_bytes(os.urandom(args["file_bytes"]))
        up_sha = hashlib.sha256(local.read_bytes()).hexdigest()
        ssh.put(local, f"{SCRATCH}.file", timeout=ctx.remaining(300))
        there = first_sha256(ctx.guest.run(f"sha256sum < {SCRATCH}.file").output, "sftp put")
        ssh.get(f"{SCRATCH}.file", back, timeout=ctx.remaining(300))
        ctx.guest.run(f"rm -f {SCRATCH}.file")
        down_sha = hashlib.sha256(back.read_bytes()).hexdigest()
    ctx.record("sftp_sha256", up_sha)
    if not up_sha == there == down_sha:
        raise GuestFailure(f"SFTP: the host put sha256 {up_sha}, the guest hashed {there}, "
                           f"the host got back {down_sha}")
