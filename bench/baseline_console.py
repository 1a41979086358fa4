"""BASELINE, not used by the harness: today's console reading before issue #10 part 3
(commit 1690041), kept so that bench/console_flood.py and tests/test_console_flood.py run the
old code and the new side by side in one run. Do not fix anything here.

What it reproduces: pexpect's ``fdspawn`` with ``searchwindowsize=16384`` and
``maxread=65536``, every wait matching its patterns *and* the family's failure patterns on
every read, and the log written line by line (``ConsoleLog.write`` as it was). The dialogue
on top (login, run) is the harness's own, unchanged.
"""
from __future__ import annotations

import os
import re

import pexpect
from pexpect import fdpexpect

from harness.console.log import ConsoleLog
from harness.console.serial import AFTER_FAILURE_GRACE, SerialConsole
from harness.errors import GuestFailure

SEARCH_WINDOW = 16384  # bytes pexpect searches back from new data
READ_CHUNK = 65536


class BaselineConsoleLog(ConsoleLog):
    """ConsoleLog.write as it was: split, mask and write each line on its own."""

    def write(self, data) -> None:
        if isinstance(data, bytes):
            data = data.decode("utf-8", "replace")
        if not data:
            return
        self.last_output = self._clock()
        lines = (self._partial + data).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._emit(line)
        if len(self._partial) > 4096:
            self._emit(self._partial, continued=True)
            self._partial = ""


class BaselineSerialConsole(SerialConsole):
    """SerialConsole's waiting as it was: pexpect over the fd, everything searched per read."""

    def __init__(self, stream, log: ConsoleLog, failure_patterns=(), describe_eof=None):
        super().__init__(stream, log, failure_patterns, describe_eof)
        self.reader = None  # not used: pexpect reads
        self.spawn = fdpexpect.fdspawn(stream.fileno() if hasattr(stream, "fileno") else stream,
                                       timeout=30, maxread=READ_CHUNK,
                                       searchwindowsize=SEARCH_WINDOW,
                                       encoding="utf-8", codec_errors="replace")
        self.spawn.logfile_read = log

    @property
    def match(self):
        return self.spawn.match

    @match.setter
    def match(self, value):
        pass

    @property
    def before(self):
        return self.spawn.before

    @before.setter
    def before(self, value):
        pass

    def try_expect(self, patterns, timeout: float, what: str):
        compiled = [re.compile(p) if isinstance(p, str) else p
                    for p in patterns]
        all_patterns = compiled + self.failure_patterns + [pexpect.EOF, pexpect.TIMEOUT]
        index = self.spawn.expect_list(all_patterns, timeout=max(timeout, 0.01))
        if index < len(compiled):
            return index, self.spawn.match
        if index < len(compiled) + len(self.failure_patterns):
            self._raise_failure(self.spawn.match.group(0), what)
        if all_patterns[index] is pexpect.EOF:
            self.log.note(f"console closed while waiting for {what}")
            raise GuestFailure(f"{self._describe_eof()} while waiting for {what}; "
                               f"last console lines:\n{self.log.tail()}")
        return None, None

    def _raise_failure(self, matched: str, what: str):
        self.log.note(f"failure pattern {matched!r} seen while waiting for {what}")
        try:
            self.spawn.expect_list([pexpect.EOF, pexpect.TIMEOUT], timeout=AFTER_FAILURE_GRACE)
        except Exception:  # noqa: BLE001
            pass
        raise GuestFailure(f"guest failure while waiting for {what}: {matched.strip()!r}; "
                           f"console:\n{self.log.tail(60)}")

    def drain(self, seconds: float, what: str) -> bool:
        index = self.spawn.expect_list(self.failure_patterns + [pexpect.EOF, pexpect.TIMEOUT],
                                       timeout=seconds)
        if index < len(self.failure_patterns):
            self._raise_failure(self.spawn.match.group(0), what)
        return index == len(self.failure_patterns)

    def send_line(self, text: str, secret: bool = False) -> None:
        self.log.note("sent " + ("(secret)" if secret else repr(text)))
        if hasattr(self._stream, "write_fileno"):  # a FIFO pair (QEMU's pipe chardev) writes
            os.write(self._stream.write_fileno(), (text + "\r").encode())  # on its other fd
        else:
            self.spawn.send(text + "\r")

    def close(self) -> None:
        self.spawn.logfile_read = None
        self.log.flush()
