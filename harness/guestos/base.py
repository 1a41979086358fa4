"""What every guest-OS driver shares: the result of one command, and the parts of the driver
interface that do not depend on how commands are typed (watching the console while the
hypervisor winds down, asking whether the guest still answers, the family's command set)."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConsoleTimeout


@dataclass(frozen=True)
class CommandResult:
    command: str
    status: int
    output: str
    seconds: float


class GuestDriver:
    """One guest's command line on one console; made per booted VM (harness.guestos.driver_for).

    ``console`` is the transport (SerialConsole), ``family`` the OS family's data, ``spec``
    the guest file's console section. Subclasses implement ``reach_shell`` and ``run``."""

    def __init__(self, console, family, spec):
        self.console, self.family, self.spec = console, family, spec

    def reach_shell(self, timeout: float, nudge_after: float = 10.0) -> float:
        raise NotImplementedError

    def run(self, command: str, timeout: float = 60.0) -> CommandResult:
        raise NotImplementedError

    def watch(self, seconds: float, what: str) -> bool:
        """Read the console for up to ``seconds`` while waiting for something other than text
        (the hypervisor's exit); a failure pattern still ends it. True once the console ended."""
        return self.console.drain(seconds, what)

    def answers(self, timeout: float = 5.0) -> bool:
        """Whether the shell still runs a command (a guest on its way down does not)."""
        try:
            return self.run("echo up", timeout=timeout).output.strip().endswith("up")
        except ConsoleTimeout:
            return False

    # The family's commands ---------------------------------------------------------------------
    def command(self, name: str) -> str:
        """One of the family's plain commands (firmware, poweroff)."""
        return self.family.commands[name]

    def device_command(self, op: str, **values) -> str:
        return self.family.device_command(op, **values)
