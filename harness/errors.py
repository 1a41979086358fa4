"""Error types, split by who is to blame.

CI must tell a broken host from a broken patch, so every failure the harness raises is either an
*infrastructure* problem (firmware missing, hypervisor would not start, image unverifiable) or a
*guest* problem (panic, login never came, wrong data read back). Bad input files are a third
kind: they are reported as ``file:line: field: message`` and never as a traceback.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

SHOWN_CHARS = 60  # a value quoted in a message is cut here: one alias bomb made a 72 MB line
_FIELD_CHARS = 120
_MESSAGE_CHARS = 600  # a last bound, for messages that quote a value without show()
# Anything a terminal would act on or that would end the line: C0/C1 controls, DEL, and the
# Unicode line and paragraph separators. Shown as \xNN / \uNNNN instead.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]")


def escape(text: str) -> str:
    """``text`` with every control character written visibly (``\\x1b``, ``\\n``): an input
    file's key or value must not forge an output line or clear the screen."""
    def visible(match):
        char = match.group()
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or \
            (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
    return _UNSAFE.sub(visible, text)


def shorten(text: str, limit: int = SHOWN_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def show(value) -> str:
    """A value from an input file, quoted for a message: repr-quoted, escaped, and cut to
    :data:`SHOWN_CHARS` characters with an ellipsis. Containers are named, not dumped."""
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item(s)"
    if isinstance(value, dict):
        return f"a mapping of {len(value)} key(s)"
    if isinstance(value, str):
        return escape(repr(shorten(value)))
    if value is None or isinstance(value, (bool, int, float)):
        return shorten(escape(repr(value)))
    return type(value).__name__


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file, pointing at the line a person has to edit."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        """One line, whatever the file name, key or message holds (escaped, field cut)."""
        return (f"{escape(str(self.file))}:{self.line}: "
                f"{shorten(escape(str(self.field)), _FIELD_CHARS)}: "
                f"{shorten(escape(str(self.message)), _MESSAGE_CHARS)}")


PROBLEMS_PER_FILE = 20  # a file of 5000 unknown keys is one mistake, not 5000 lines to read


def report_lines(problems: list[Problem]) -> list[str]:
    """The lines to print for ``problems``: at most :data:`PROBLEMS_PER_FILE` per file, then
    one line saying how many more that file has."""
    shown: dict[str, int] = {}
    hidden: dict[str, list[Problem]] = {}
    lines = []
    for problem in problems:
        if shown.get(problem.file, 0) < PROBLEMS_PER_FILE:
            shown[problem.file] = shown.get(problem.file, 0) + 1
            lines.append(str(problem))
        else:
            hidden.setdefault(problem.file, []).append(problem)
    for file, rest in hidden.items():
        lines.append(str(Problem(file, rest[0].line, "(file)",
                                 f"{len(rest)} more problem(s) not shown")))
    return lines


class ConfigError(Exception):
    """One or more problems in guest, scenario or hosts files."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(report_lines(self.problems)))


class HarnessError(Exception):
    """Base for errors raised while running a case; carries the result category."""

    category = "infra"


class InfraError(HarnessError):
    """The host, not the guest, is at fault: missing firmware, hypervisor failed to start, ..."""

    category = "infra"


class Unsupported(InfraError):
    """This host or backend cannot express the VM a case needs (no NVMe bus in this libvirt, an
    old bhyve without a device). Not a failure of anything: the case is skipped with this."""


class GuestFailure(HarnessError):
    """The guest misbehaved: panic, no login prompt, wrong data, unexpected exit."""

    category = "guest"


class ConsoleTimeout(GuestFailure):
    """What was waited for on the console did not come in time (the guest is still there)."""


class GuestRebooted(GuestFailure):
    """The guest started again while a command was waited for (a failure, unless the command
    was the reboot itself)."""


class LoginError(GuestFailure):
    """The guest refused the credentials or never offered a shell."""


class CommandFailed(GuestFailure):
    """A command in the guest exited with a status or output the scenario did not expect."""
