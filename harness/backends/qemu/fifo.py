"""A console over a pair of FIFOs: QEMU's ``-chardev pipe`` (``PATH.in`` to the guest,
``PATH.out`` from it), the transport the QEMU backend gives COM1.

Why not QEMU's socket chardev for the console: QEMU hands every byte the guest's UART sends to
its chardev with a write of its own. On a socket each write is a buffer of its own (the send
buffer holds only ~278 of them), so a reader must wake every few milliseconds or stall the
guest, and pays the kernel for each tiny buffer: about 1 s of CPU per console MB whatever the
reader does (bench/console_flood.py). A pipe merges small writes into its pages (64 KiB), so
the reader can wait tens of milliseconds between reads and read kilobytes at once.
"""
from __future__ import annotations

import os
from pathlib import Path


def make_fifos(base: Path) -> None:
    """The two FIFOs QEMU opens for ``-chardev pipe,path=BASE`` (it does not create them).
    A VM started again gets new ones: the old ones' last bytes belong to the last run."""
    for suffix in (".in", ".out"):
        path = Path(f"{base}{suffix}")
        if path.is_fifo():
            path.unlink()
        os.mkfifo(path, 0o600)


class FifoConsole:
    """The harness's ends: reads ``BASE.out``, writes ``BASE.in``.

    Open them once QEMU holds its ends (it opens both read-write, so neither open blocks, and
    the read end sees end-of-file when QEMU exits: it was the only writer)."""

    def __init__(self, base: Path):
        self.base = Path(base)
        self._read = os.open(f"{base}.out", os.O_RDONLY | os.O_NONBLOCK)
        try:
            os.set_blocking(self._read, True)
            self._write = os.open(f"{base}.in", os.O_WRONLY)
        except BaseException:
            os.close(self._read)
            raise

    def fileno(self) -> int:
        return self._read

    def write_fileno(self) -> int:
        return self._write

    def close(self) -> None:
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass
        self._read = self._write = -1
