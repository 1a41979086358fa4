"""Error types, split by who is to blame.

CI must tell a broken host from a broken patch, so every failure the harness raises is either an
*infrastructure* problem (firmware missing, hypervisor would not start, image unverifiable) or a
*guest* problem (panic, login never came, wrong data read back). Bad input files are a third
kind: they are reported as ``file:line: field: message`` and never as a traceback.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file, pointing at the line a person has to edit."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


class ConfigError(Exception):
    """One or more problems in guest, scenario or hosts files."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


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


class LoginError(GuestFailure):
    """The guest refused the credentials or never offered a shell."""


class CommandFailed(GuestFailure):
    """A command in the guest exited with a status or output the scenario did not expect."""
