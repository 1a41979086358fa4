"""Reading a console byte stream cheaply: coalesced reads, failure patterns scanned once per
line, a bounded buffer of unconsumed text.

Why not pexpect's expect loop (issue #10, part 3): a 16550 emulated under TCG hands its chardev
a few bytes at a time, so pexpect reads tiny chunks and, for each, re-runs every pattern (the
wait's own and the family's failure patterns) over its whole search window (16 KB): a guest
that prints 14 MB before its login prompt cost the harness 92 s of CPU. pexpect also keeps
everything read since the last match (``before``) without bound. Its read, search and buffer
are one loop that cannot be changed piecewise, so this module does the reading and the
:class:`~harness.console.serial.SerialConsole` the searching:

- **coalesce reads**: after a small read, wait ``COALESCE_SECONDS`` and take whatever else has
  arrived in one go (up to ``COALESCE_LIMIT``); a big read (a fast stream) is not delayed. The
  cost is per wake-up, not per byte the UART delivers; a prompt is seen at most that late;
- **failure patterns once per complete line**: each new complete line is scanned exactly once,
  whatever wait is running; an unfinished line is scanned when a wait ends, and a line longer
  than ``LINE_LIMIT`` without a newline is scanned in pieces that overlap;
- **bounded memory**: the text not yet consumed by a match is kept up to ``KEEP_LIMIT``
  characters (older text is dropped; the log has everything).
"""
from __future__ import annotations

import codecs
import errno
import os
import select
import time

READ_CHUNK = 65536
COALESCE_SECONDS = 0.02  # after a small read, wait this long for more before searching
COALESCE_BELOW = 4096  # a read smaller than this means the guest is trickling
COALESCE_LIMIT = 1 << 20  # at most this many bytes are handed over per wake-up
KEEP_LIMIT = 4 << 20  # characters of unconsumed text kept (a command's output keeps its end)
LINE_LIMIT = 4096  # a line without newline longer than this is scanned in pieces
LINE_OVERLAP = 256  # ... that overlap by this much, so a pattern across a cut is still found


class ConsoleStream:
    """One console file descriptor: reads, logs, scans for failures and buffers its text.

    ``failure`` is set to the first failure-pattern match seen (a ``re.Match``); the caller
    decides what to do. ``text`` / ``consume`` give the unconsumed text to the searcher.
    """

    def __init__(self, fd: int, log, failure_patterns=()):
        self.fd = fd
        self.log = log  # anything with write(str); None stops logging (after close)
        self.failure_patterns = list(failure_patterns)
        self.failure = None
        self.eof = False
        self.dropped = 0  # characters of unconsumed text dropped to keep the buffer bounded
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._chunks: list[str] = []
        self._size = 0
        self._unscanned = ""  # text after the last line scanned for failure patterns

    # Reading ---------------------------------------------------------------------------------
    def read(self, timeout: float) -> str:
        """Wait up to ``timeout`` seconds for output; return the new text ('' if none came).

        At end of stream returns what was still read, then '' with ``eof`` set.
        """
        if self.eof:
            return ""
        if not self._ready(max(timeout, 0)):
            return ""
        data = self._read_once()
        if data and len(data) < COALESCE_BELOW:
            time.sleep(COALESCE_SECONDS)
        parts = [data] if data else []
        total = len(data or b"")
        while data and total < COALESCE_LIMIT and self._ready(0):
            data = self._read_once()
            if data:
                parts.append(data)
                total += len(data)
        raw = b"".join(parts)
        text = self._decoder.decode(raw, final=self.eof)
        if text:
            self._take(text)
        return text

    def _ready(self, timeout: float) -> bool:
        try:
            readable, _, _ = select.select([self.fd], [], [], timeout)
        except (OSError, ValueError):  # the fd was closed under us: the stream is over
            self.eof = True
            return False
        return bool(readable)

    def _read_once(self) -> bytes:
        try:
            data = os.read(self.fd, READ_CHUNK)
        except BlockingIOError:
            return b""
        except OSError as err:  # EIO: a tty whose other side closed; ECONNRESET; EBADF
            if err.errno not in (errno.EIO, errno.ECONNRESET, errno.EBADF, errno.EPIPE):
                raise
            data = b""
        if not data:
            self.eof = True
        return data

    def _take(self, text: str) -> None:
        if self.log is not None:
            self.log.write(text)
        self._chunks.append(text)
        self._size += len(text)
        if self._size > 2 * KEEP_LIMIT:  # amortised: one copy per KEEP_LIMIT characters read
            kept = "".join(self._chunks)[-KEEP_LIMIT:]
            self.dropped += self._size - len(kept)
            self._chunks, self._size = [kept], len(kept)
        if self.failure_patterns and self.failure is None:
            self._scan_lines(text)

    # Failure patterns ------------------------------------------------------------------------
    def _scan_lines(self, text: str) -> None:
        pending = self._unscanned + text
        cut = pending.rfind("\n") + 1
        if cut:
            self._scan(pending[:cut])
            self._unscanned = pending[cut:]
        elif len(pending) > LINE_LIMIT:
            self._scan(pending)
            self._unscanned = pending[-LINE_OVERLAP:]
        else:
            self._unscanned = pending

    def scan_unfinished_line(self) -> None:
        """Scan the last, unfinished line too (a wait is ending: nothing else will come for
        it now). It is scanned again once complete; the first match wins anyway."""
        if self.failure_patterns and self.failure is None and self._unscanned:
            self._scan(self._unscanned)

    def _scan(self, block: str) -> None:
        found = None
        for pattern in self.failure_patterns:
            match = pattern.search(block)
            if match and (found is None or match.start() < found.start()):
                found = match
        self.failure = found

    # The unconsumed text -----------------------------------------------------------------------
    def __len__(self) -> int:
        return self._size

    def tail(self, chars: int) -> str:
        """The last ``chars`` characters of unconsumed text (fewer if there are fewer)."""
        picked, need = [], chars
        for chunk in reversed(self._chunks):
            if need <= 0:
                break
            picked.append(chunk[-need:] if len(chunk) > need else chunk)
            need -= len(chunk)
        return "".join(reversed(picked))

    def consume(self, end: int) -> str:
        """Drop the unconsumed text up to position ``end``; return what was dropped."""
        text = "".join(self._chunks)
        self._chunks = [text[end:]] if end < len(text) else []
        self._size = len(text) - min(end, len(text))
        return text[:end]

    # Writing ---------------------------------------------------------------------------------
    def write(self, text: str) -> None:
        data = text.encode("utf-8")
        while data:
            written = os.write(self.fd, data)
            data = data[written:]
