"""Feeder process for tests.doubles.TricklingConsole: writes text to a file descriptor in small
pieces at a set rate, like a UART emulation under TCG hands bytes to its chardev socket.

Runs as its own process so its CPU is never counted as the harness's. Usage (from the double):
    python trickle_feeder.py FD SPEC_JSON
SPEC_JSON: {"rate": bytes per second, "pieces": [min, max] bytes per write, "seed": int,
            "parts": [[text, repeat], ...], "fifo": BASE (optional; FD is then -1)}
The parts are written in order, each ``repeat`` times, then the process waits for its peer to
close the socket (so the harness does not see EOF before it is done). With ``fifo`` it writes
BASE.out, opened read-write as QEMU's pipe chardev opens it (BASE.in too, which it never
reads), and waits to be terminated.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time


def main() -> None:
    fd, spec = int(sys.argv[1]), json.loads(sys.argv[2])
    if spec.get("fifo"):
        os.open(spec["fifo"] + ".in", os.O_RDWR)  # held open (never read), as QEMU does
        fd = os.open(spec["fifo"] + ".out", os.O_RDWR)
    rate = float(spec["rate"])
    low, high = spec.get("pieces", [1, 16])
    rng = random.Random(spec.get("seed", 10))
    sizes = [rng.randint(low, high) for _ in range(4096)]
    started = time.monotonic()
    sent = 0
    turn = 0
    try:
        for text, repeat in spec["parts"]:
            data = text.encode() * int(repeat)
            view = memoryview(data)
            pos = 0
            while pos < len(data):
                size = sizes[turn & 4095]
                turn += 1
                written = os.write(fd, view[pos:pos + size])
                pos += written
                sent += written
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0.002:  # sleep in >= 2 ms steps: the pace, not the syscall count
                    time.sleep(ahead)
        if spec.get("fifo"):
            while True:  # a FIFO's reader sees EOF when the writer goes: wait to be ended
                time.sleep(3600)
        while os.read(fd, 4096):  # wait for the harness to hang up
            pass
    except OSError:
        pass


if __name__ == "__main__":
    main()
