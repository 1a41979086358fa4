"""The console log: every byte the guest printed, written as it arrives, with timestamps.

pexpect hands each chunk it reads to ``logfile_read``; this class is that file. Writing the log
from the raw stream (not from pexpect's match buffers) keeps it complete however the dialogue
went, and keeps the cost linear in the output even when a guest floods the console.
Secrets (passwords) are masked line by line before anything reaches the disk.
"""
from __future__ import annotations

import re
import time
from collections import deque
from pathlib import Path

MASK = "********"
CONTINUED = " \\"  # marks a line split by the log, not by the guest
_TRAILING_CR = re.compile(r"\r+$", re.MULTILINE)


class ConsoleLog:
    def __init__(self, path: Path, secrets=(), tail_lines: int = 200, clock=time.monotonic):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", encoding="utf-8", errors="replace")
        self._secrets = [x for x in secrets if x]
        self._clock = clock
        self._start = clock()
        self._partial = ""
        self._tail = deque(maxlen=tail_lines)
        self.last_output = self._start

    # The file-like interface pexpect uses -------------------------------------------------
    def write(self, data) -> None:
        if isinstance(data, bytes):
            data = data.decode("utf-8", "replace")
        if not data:
            return
        self.last_output = self._clock()
        text = self._partial + data
        cut = text.rfind("\n")
        if cut >= 0:  # the complete lines, as one block: a flood costs per read, not per line
            self._partial = text[cut + 1:]
            self._emit_block(text[:cut])
        else:
            self._partial = text
        # A line with no newline can be any length (a flood): do not buffer it without bound.
        if len(self._partial) > 4096:
            self._emit(self._partial, continued=True)
            self._partial = ""

    def flush(self) -> None:
        self._file.flush()

    # Harness annotations --------------------------------------------------------------------
    def note(self, text: str) -> None:
        """Write a harness event (what was sent, what was waited for) as its own line."""
        if self._partial:
            self._emit(self._partial, continued=True)
            self._partial = ""
        self._file.write(f"[{self._stamp()}] --- {self._mask(text)}\n")
        self._file.flush()

    def tail(self, lines: int = 40) -> str:
        """The last guest lines (masked), for failure messages."""
        recent = list(self._tail)[-lines:]
        if self._partial:
            recent.append(self._mask(self._partial))
        return "\n".join(recent)

    def close(self) -> None:
        if self._file.closed:
            return
        if self._partial:
            self._emit(self._partial)
            self._partial = ""
        self._file.close()

    # ----------------------------------------------------------------------------------------
    def _stamp(self) -> str:
        return f"{self._clock() - self._start:9.3f}"

    def _mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def _emit_block(self, block: str) -> None:
        """Write complete lines (``block`` without its last newline) with one time stamp."""
        block = self._mask(block)
        if "\r" in block:
            block = _TRAILING_CR.sub("", block)
        lines = block.split("\n")
        self._tail.extend(lines[-self._tail.maxlen:])
        prefix = f"[{self._stamp()}] "
        self._file.write(prefix + ("\n" + prefix).join(lines) + "\n")

    def _emit(self, line: str, continued: bool = False) -> None:
        line = self._mask(line.rstrip("\r"))
        self._tail.append(line)
        suffix = CONTINUED if continued else ""
        self._file.write(f"[{self._stamp()}] {line}{suffix}\n")
