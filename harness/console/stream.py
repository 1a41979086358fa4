"""Reading a console byte stream cheaply: coalesced reads, failure patterns scanned once per
line, a bounded buffer of unconsumed text.

Why not pexpect's expect loop (issue #10, part 3): a 16550 emulated under TCG hands its chardev
a few bytes at a time, so pexpect reads tiny chunks and, for each, re-runs every pattern (the
wait's own and the family's failure patterns) over its whole search window (16 KB): a guest
that prints 14 MB before its login prompt cost the harness 92 s of CPU. pexpect also keeps
everything read since the last match (``before``) without bound. Its read, search and buffer
are one loop that cannot be changed piecewise, so this module does the reading and the
:class:`~harness.console.serial.SerialConsole` the searching:

- **coalesce reads**: once output arrives, read again while more comes, and hand the text
  over (to the log, the failure scan and the search) when nothing came for ``QUIET_SECONDS``,
  after the pacing's ``hand_over``, or at once when a pass reads a lot (a fast stream is not held
  back). The search, scan and log cost per hand-over, not per byte the UART delivers. The
  passes themselves cannot be far apart: QEMU writes each UART byte to its socket with a write
  of its own and the socket holds only ~278 such writes (its send buffer counts each one's
  overhead), so a reader that sleeps 20 ms stalls the guest's UART (measured: 32 KB/s instead
  of 100-300 KB/s). The interval between passes (within the pacing's ``interval``) follows the
  rate seen so that a pass finds about ``pass_target`` bytes, fewer than the socket holds: short
  while a fast stream flows, longer for a slow one, since every wake-up costs CPU too. What
  stays is the kernel's cost of one socket buffer per QEMU write, which the reader pays and no
  reader avoids (bench/console_flood.py's "floor"); sockets are read with MSG_DONTWAIT, so a
  pass is one system call;
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
import re
import select
import socket
import stat
import time
from dataclasses import dataclass

from ..errors import GuestFailure

try:  # Python 3.11+
    from re import _constants as _sre_constants, _parser as _sre_parse
except ImportError:  # 3.9, 3.10
    import sre_constants as _sre_constants
    import sre_parse as _sre_parse

READ_CHUNK = 65536
QUIET_SECONDS = 0.005  # no new output for this long: hand over what was read (a prompt)
WRITE_STALL = 30.0  # seconds a console write may wait for room before the guest is at fault


@dataclass(frozen=True)
class Pacing:
    """How often to read while output flows, and when to hand it over."""

    interval: tuple  # (min, max) seconds between passes, adapted to the rate seen ...
    pass_target: int  # ... so that a pass finds about this many bytes
    hand_over: float  # hand over at least this often during a flood (seconds)
    big_pass: int  # a pass that reads this much is handed over at once (a fast stream)


# A socket keeps each of QEMU's one-byte writes as a buffer of its own and holds ~278 of them:
# read every few ms (see the module docstring).
SOCKET_PACING = Pacing(interval=(0.0005, 0.01), pass_target=160, hand_over=0.02, big_pass=4096)
# A pipe (QEMU's pipe chardev) or a tty (nmdm, pty) merges writes into its 4-64 KiB buffer: a
# pass every 50 ms still leaves room at 250 KB/s, and a hand-over every 250 ms makes the log,
# the failure scan and the search cost per 20 KB at a TCG guest's 80 KB/s. A prompt still
# ends a read after one empty pass (QUIET_SECONDS), so it is seen within one interval; a
# failure pattern in a flood, within a hand-over.
BUFFERED_PACING = Pacing(interval=(0.002, 0.05), pass_target=16384, hand_over=0.25,
                         big_pass=32768)


def required_literal(pattern: re.Pattern) -> str | None:
    """The longest run of plain characters every match of ``pattern`` contains (``"BUG: "``
    for ``\\bBUG: (?:unable|...)``), or None. ``literal in text`` is a memchr-speed test,
    while a pattern that starts with ``\\b`` makes the regex engine try every position:
    380 us per 20 KB block here, against 10 us for one that starts with a literal. Read from
    the pattern's parse tree (Python's own parser: no public API offers it)."""
    if pattern.flags & re.IGNORECASE or not isinstance(pattern.pattern, str):
        return None
    try:
        parsed = _sre_parse.parse(pattern.pattern, pattern.flags)
    except Exception:  # noqa: BLE001 - an optimisation only: without it the search still runs
        return None
    if parsed.state.flags & re.IGNORECASE:
        return None
    best = run = ""
    for opcode, argument in parsed:
        if opcode is _sre_constants.LITERAL:
            run += chr(argument)
        else:
            best, run = max(best, run, key=len), ""
    best = max(best, run, key=len)
    return best if len(best) >= 3 else None


def _merges_writes(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)
COALESCE_LIMIT = 1 << 20  # at most this many bytes are handed over at once
KEEP_LIMIT = 4 << 20  # characters of unconsumed text kept (a command's output keeps its end)
LINE_LIMIT = 4096  # a line without newline longer than this is scanned in pieces
LINE_OVERLAP = 256  # ... that overlap by this much, so a pattern across a cut is still found


class ConsoleStream:
    """One console file descriptor: reads, logs, scans for failures and buffers its text.

    ``failure`` is set to the first failure-pattern match seen (a ``re.Match``); the caller
    decides what to do. ``tail`` / ``consume`` give the unconsumed text to the searcher.
    """

    def __init__(self, fd: int, log, failure_patterns=(), sock: socket.socket | None = None,
                 write_fd: int | None = None):
        self.fd = fd
        self.write_fd = fd if write_fd is None else write_fd  # a FIFO pair writes elsewhere
        self._sock = sock  # a socket is read without a select(2) before each pass
        # A pipe or tty merges the UART's tiny writes in the kernel (a socket cannot): read it
        # less often and hand over more at once (BUFFERED_PACING), and, like a socket,
        # without a select(2) before each read: its descriptor is made non-blocking (nothing
        # else reads a console).
        self._buffered = sock is None and _merges_writes(fd)
        if self._buffered:
            os.set_blocking(fd, False)
        self._pacing = BUFFERED_PACING if self._buffered else SOCKET_PACING
        self.log = log  # anything with write(str); None stops logging (after close)
        self.failure_patterns = list(failure_patterns)
        self._failure_scan = [(required_literal(p), p) for p in self.failure_patterns]
        self.failure = None
        self.eof = False
        self.dropped = 0  # characters of unconsumed text dropped to keep the buffer bounded
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._chunks: list[str] = []
        self._size = 0
        self._unscanned = ""  # text after the last line scanned for failure patterns
        self._interval = self._pacing.interval[0]

    # Reading ---------------------------------------------------------------------------------
    def read(self, timeout: float) -> str:
        """Wait up to ``timeout`` seconds for output; return the new text ('' if none came).

        Once output arrives, keeps reading while more comes, for up to the pacing's ``hand_over``;
        returns early when nothing new came for ``QUIET_SECONDS`` (the burst is over: a prompt
        is seen that late) or a single pass found a lot (a fast stream is not held back).
        At end of stream returns what was still read, with ``eof`` set.
        """
        if self.eof or not self._ready(max(timeout, 0)):
            return ""
        pace = self._pacing
        parts: list[bytes] = []
        started = time.monotonic()
        got = total = self._read_available(parts)
        quiet = 0.0
        while not (self.eof or got >= pace.big_pass or quiet >= QUIET_SECONDS
                   or total >= COALESCE_LIMIT or time.monotonic() - started >= pace.hand_over):
            time.sleep(self._interval)
            got = self._read_available(parts)
            total += got
            quiet = 0.0 if got else quiet + self._interval
            rate = total / (time.monotonic() - started)  # bytes/s, over this whole read
            self._interval = min(max(pace.pass_target / max(rate, 1.0), pace.interval[0]),
                                 pace.interval[1])
        text = self._decoder.decode(b"".join(parts), final=self.eof)
        if text:
            self._take(text)
        return text

    def _read_available(self, parts: list[bytes]) -> int:
        """Read what is there now (one read takes all of it, up to READ_CHUNK); bytes read."""
        got = 0
        while self._sock is not None or self._buffered or self._ready(0):
            data = self._read_once()
            if not data:
                break
            parts.append(data)
            got += len(data)
            if len(data) < READ_CHUNK:
                break
        return got

    def _ready(self, timeout: float) -> bool:
        try:
            readable, _, _ = select.select([self.fd], [], [], timeout)
        except (OSError, ValueError):  # the fd was closed under us: the stream is over
            self.eof = True
            return False
        return bool(readable)

    def _read_once(self) -> bytes:
        """One read; b'' if nothing is there (a socket: no select(2) first) or at the end."""
        try:
            if self._sock is not None:
                data = self._sock.recv(READ_CHUNK, socket.MSG_DONTWAIT)
            else:
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
        for literal, pattern in self._failure_scan:
            if literal and literal not in block:  # cheap: most blocks hold no failure at all
                continue
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
        """Write all of ``text``. A pipe or tty console is read non-blocking, and on an nmdm
        device that is the descriptor written too: when its buffer is full (the guest is not
        reading), wait for room, up to ``WRITE_STALL`` seconds without progress."""
        data = text.encode("utf-8")
        while data:
            try:
                written = os.write(self.write_fd, data)
            except BlockingIOError:
                if not select.select([], [self.write_fd], [], WRITE_STALL)[1]:
                    raise GuestFailure(f"the guest took no console input for {WRITE_STALL:.0f}s "
                                       f"({len(data)} bytes not sent)") from None
                continue
            data = data[written:]
