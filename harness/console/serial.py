"""The console transport's dialogue: wait for text on a console, send a line. Nothing here knows
which OS is on the other end (that is the guest-OS driver's: harness/guestos).

Works on any byte stream with a file descriptor (QEMU's pipe or socket chardev, an nmdm(4)
device, a socketpair bridged to a libvirt stream), so every backend shares this code.

Rules that keep it trustworthy on real consoles:
- every wait also watches for the family's failure patterns (a panic ends the wait at once,
  quoting the lines around it) and for the stream closing (the hypervisor died);
- a flood costs little and bounded memory: reads are coalesced, failure patterns are scanned
  once per line, a wait searches only new text (see harness/console/stream.py for why this is
  not pexpect's expect loop);
"""
from __future__ import annotations

import re
import socket
import time
from typing import Callable

from ..errors import ConsoleTimeout, GuestFailure
from .log import ConsoleLog
from .stream import ConsoleStream

SEARCH_WINDOW = 16384  # characters of earlier unconsumed text a new wait searches first
SEARCH_OVERLAP = 1024  # characters before the new text searched with it (a match across reads)
AFTER_FAILURE_GRACE = 2.0  # seconds of extra console read after a panic, for the backtrace



class SerialConsole:
    """The dialogue over one console stream, with the log written from the raw reads.

    A wait searches the last ``SEARCH_WINDOW`` characters not yet consumed when it starts, then
    only each new read plus ``SEARCH_OVERLAP`` characters before it: prompts sit at the end of
    the text and markers within one line, so a match that spans reads is still found, and a
    flood costs each byte one search per pattern, not one per read. Of several patterns the
    one whose match starts first wins (ties: the first listed), as with pexpect.
    """

    def __init__(self, stream, log: ConsoleLog, failure_patterns=(),
                 describe_eof: Callable[[], str] | None = None):
        self.log = log
        self.failure_patterns = [re.compile(p) for p in failure_patterns]
        self._describe_eof = describe_eof or (lambda: "the console stream closed")
        self._stream = stream  # keep a reference: the fd must outlive our use of it
        fd = stream.fileno() if hasattr(stream, "fileno") else stream
        self.reader = ConsoleStream(
            fd, log, self.failure_patterns, stream if isinstance(stream, socket.socket) else None,
            write_fd=stream.write_fileno() if hasattr(stream, "write_fileno") else None)
        self.match = None  # the last match of a wait's own pattern
        self.before = ""  # the text between the previous match and that one

    # Low-level waiting -------------------------------------------------------------------------
    def expect(self, patterns, timeout: float, what: str):
        """Wait for one of ``patterns``; return (index, match).

        Raises GuestFailure on a failure pattern, on timeout and when the stream ends.
        """
        index, match = self.try_expect(patterns, timeout, what)
        if index is None:
            raise ConsoleTimeout(f"timed out after {timeout:.0f}s waiting for {what}; "
                               f"last console lines:\n{self.log.tail()}")
        return index, match

    def try_expect(self, patterns, timeout: float, what: str):
        """Like :meth:`expect` but returns (None, None) on timeout instead of raising."""
        compiled = [re.compile(p) if isinstance(p, str) else p for p in patterns]
        reader = self.reader
        deadline = time.monotonic() + max(timeout, 0.01)
        window = reader.tail(SEARCH_WINDOW)
        while True:
            if reader.failure is not None:
                self._raise_failure(reader.failure.group(0), what)
            found = _search(compiled, window)
            if found is not None:
                index, match = found
                offset = len(reader) - len(window)
                self.before = reader.consume(offset + match.start())
                reader.consume(match.end() - match.start())
                self.match = match
                return index, match
            remaining = deadline - time.monotonic()
            if reader.eof or remaining <= 0:
                reader.scan_unfinished_line()
                if reader.failure is not None:
                    self._raise_failure(reader.failure.group(0), what)
                if reader.eof:
                    self.log.note(f"console closed while waiting for {what}")
                    raise GuestFailure(f"{self._describe_eof()} while waiting for {what}; "
                                       f"last console lines:\n{self.log.tail()}")
                return None, None
            new = reader.read(remaining)
            window = reader.tail(len(new) + SEARCH_OVERLAP) if new else ""

    def _raise_failure(self, matched: str, what: str):
        self.log.note(f"failure pattern {matched!r} seen while waiting for {what}")
        # keep reading briefly so the message can quote the backtrace that follows
        deadline = time.monotonic() + AFTER_FAILURE_GRACE
        try:
            while not self.reader.eof and (left := deadline - time.monotonic()) > 0:
                self.reader.read(left)
        except Exception:  # noqa: BLE001 - best effort; the failure itself is what matters
            pass
        raise GuestFailure(f"guest failure while waiting for {what}: {matched.strip()!r}; "
                           f"console:\n{self.log.tail(60)}")

    def drain(self, seconds: float, what: str) -> bool:
        """Read (and log) console output for up to ``seconds``; True once the stream ended.

        Used while waiting for something other than text, such as the hypervisor's exit:
        failure patterns still end the wait at once.
        """
        reader = self.reader
        deadline = time.monotonic() + seconds
        while not reader.eof and (remaining := deadline - time.monotonic()) > 0:
            reader.read(remaining)
            if reader.failure is not None:
                break
            if len(reader) > SEARCH_WINDOW:  # nothing searches this text: keep little of it
                reader.consume(len(reader) - SEARCH_WINDOW)
        reader.scan_unfinished_line()
        if reader.failure is not None:
            self._raise_failure(reader.failure.group(0), what)
        return reader.eof

    # Sending ---------------------------------------------------------------------------------
    def send_line(self, text: str, secret: bool = False, char_delay: float = 0.0) -> None:
        """Type ``text`` and Enter (a CR: what a terminal sends, and what SAC wants).
        ``char_delay``: seconds between characters, for consoles that drop keys typed fast
        (SAC's VT100 cmd channel on Server 2016/2019 debounces keys)."""
        self.log.note("sent " + ("(secret)" if secret else repr(text)))
        self._type(text + "\r", char_delay)

    def send(self, text: str, char_delay: float = 0.0) -> None:
        """Type ``text`` with no Enter (a key at a loader menu, a terminal's answer)."""
        self.log.note(f"sent {text!r} (no Enter)")
        self._type(text, char_delay)

    def _type(self, text: str, char_delay: float) -> None:
        if char_delay <= 0:
            self.reader.write(text)
            return
        for char in text:
            self.reader.write(char)
            time.sleep(char_delay)

    def close(self) -> None:
        """Stop using the console. The stream belongs to whoever opened it (the Machine), and
        the log to whoever made it: neither is closed here, so nothing is closed twice."""
        self.reader.log = None
        self.log.flush()


def _search(patterns, text: str):
    """(index, match) of the pattern matching earliest in ``text`` (ties: lowest index)."""
    best = None
    if not text:
        return None
    for index, pattern in enumerate(patterns):
        match = pattern.search(text)
        if match and (best is None or match.start() < best[1].start()):
            best = (index, match)
    return best
