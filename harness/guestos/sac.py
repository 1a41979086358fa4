"""The Windows guest-OS driver: Emergency Management Services' Special Administration Console
(SAC) on COM1, and a cmd.exe channel opened from it.

Windows prints nothing on a serial line unless EMS is on, and then it speaks SAC, not a shell.
The way to a command line, with SAC's own strings (sacmsg.mc; the order propolis' PHD and
vagrant-zones drive it in; shared/guest-facts.md 2.3):

1. ``Computer is booting, SAC started and initialized.`` (twice on a freshly installed system:
   it reboots after the specialize pass), then ``EVENT: The CMD command is now available.``;
   a ``cmd`` typed before that event fails with "... has not yet registered" (retried, as is
   SAC's "Timeout: Unable to launch a Command Prompt");
2. ``cmd`` -> ``Channel: Cmd0001`` -> ``ch -sn Cmd0001`` -> ``Use any other key to view this
   channel.`` -> a key -> ``Username:``, ``Domain  :``, ``Password:`` -> ``C:\\Windows\\system32>``.

Quirks handled: lines end with CR; the first line typed after the login may be swallowed (a
probe is repeated until it is answered); optional slow typing (``console.type_delay``);
``%ERRORLEVEL%`` is expanded when cmd.exe parses the whole line, before the command on it has
run, so a command's exit status is read by a second line typed after it returned; a reboot
(SAC starting again) while a command runs is a failure, not a hang.

Commands are framed by markers cmd.exe prints without the caret the typed line holds
(``echo __RV^B<tok>__`` prints ``__RVB<tok>__``), so the channel's echo of the typed line never
matches; each command's end is the unique prompt set after login (``prompt __RVP<tok>__$G``).
"""
from __future__ import annotations

import re
import secrets
import time

from ..errors import GuestFailure, GuestRebooted, LoginError
from .base import CommandResult, GuestDriver

SAC_STARTED = r"Computer is booting, SAC started and initialized\."
CMD_AVAILABLE = r"EVENT: The CMD command is now available\."
SAC_PROMPT = r"SAC>$"  # printed without a newline
CMD_NOT_YET = r"has not yet registered|Timeout: Unable to launch a Command Prompt"
CMD_REFUSED = (r"Launching of Command Prompt channels is disabled\.|"
               r"The maximum number of channels has been reached\.|"
               r"Error: The SAC Command Console session failed to be created\.")
CHANNEL_CREATED = r"Channel: (Cmd\d{4})"
VIEW_CHANNEL = r"Use any other key to view this channel\."
USERNAME = r"Username:\s*$"
DOMAIN = r"Domain\s*:\s*$"
PASSWORD = r"Password:\s*$"
AUTH_FAILED = r"(?i)unable to authenticate[^\r\n]*"
CMD_PROMPT = r"[A-Za-z]:\\[^\r\n>]*>\s*$"  # C:\Windows\system32>
ESC_TAB_SAC = "\x1b\t0"  # <esc><tab>0: back to the SAC channel
CMD_RETRIES = 10
CMD_RETRY_PAUSE = 3.0  # vagrant-zones waits 3 s after the event before typing cmd
PROBE_TRIES = 4
PROBE_WAIT = 5.0


class SacConsole(GuestDriver):
    """A Windows guest's cmd.exe, reached through SAC on its serial console."""

    def __init__(self, console, family, spec):
        super().__init__(console, family, spec)
        self.channel = None
        self.prompt = None  # the unique prompt set after login (a regex)
        self.boots = 0  # how often SAC said it started

    # Typing ------------------------------------------------------------------------------------
    def _line(self, text: str, secret: bool = False) -> None:
        self.console.send_line(text, secret=secret, char_delay=self.spec.type_delay)

    # Reaching cmd.exe --------------------------------------------------------------------------
    def reach_shell(self, timeout: float, nudge_after: float = 10.0) -> float:
        """SAC, a cmd channel, the login, a prompt of our own; the seconds it took. A reboot
        on the way (SAC starting again) starts the dialogue over, within ``timeout``."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            self._wait_for_cmd_event(deadline, timeout)
            try:
                self.channel = self._open_channel(deadline)
                self._log_in(deadline)
                break
            except _Rebooted:
                self.console.log.note("SAC started again: the guest rebooted; starting over")
        seconds = time.monotonic() - started
        self._settle()
        for command in self.family.after_login:
            self.run(command, timeout=30)
        return seconds

    def _remaining(self, deadline: float, what: str) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise GuestFailure(f"timed out waiting for {what}; last console lines:\n"
                               f"{self.console.log.tail()}")
        return left

    def _wait_for_cmd_event(self, deadline: float, timeout: float) -> None:
        """Until SAC says cmd can be launched; counts SAC's starts on the way."""
        console = self.console
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                hint = ("SAC never started: is EMS on (bcdedit /ems {default} on, "
                        "/emssettings EMSPORT:1 EMSBAUDRATE:115200, /bootems yes)?"
                        if not self.boots else f"SAC started {self.boots} time(s)")
                raise GuestFailure(f"no 'EVENT: The CMD command is now available.' within "
                                   f"{timeout:.0f}s; {hint}; last console lines:\n"
                                   f"{console.log.tail()}")
            index, _ = console.try_expect([SAC_STARTED, CMD_AVAILABLE], min(left, 5.0),
                                          "SAC and its CMD event")
            if index == 0:
                self.boots += 1
                console.log.note(f"SAC started (boot {self.boots})")
            elif index == 1:
                return

    def _expect(self, patterns, deadline: float, what: str):
        """Wait for one of ``patterns``; SAC starting again raises _Rebooted."""
        index, match = self.console.expect([SAC_STARTED] + list(patterns),
                                           self._remaining(deadline, what), what)
        if index == 0:
            self.boots += 1
            raise _Rebooted()
        return index - 1, match

    def _open_channel(self, deadline: float) -> str:
        """``cmd`` until SAC makes a channel; its name (Cmd0001)."""
        for attempt in range(1, CMD_RETRIES + 1):
            self._line("cmd")
            index, match = self._expect([CHANNEL_CREATED, CMD_NOT_YET, CMD_REFUSED], deadline,
                                        "SAC to create a cmd channel")
            if index == 0:
                return match.group(1)
            if index == 2:
                raise LoginError(f"SAC will not launch a Command Prompt: it said "
                                 f"{match.group(0)!r}")
            self.console.log.note(f"cmd not available yet (attempt {attempt}); retrying")
            self._expect([SAC_PROMPT], deadline, "the SAC> prompt")
            time.sleep(CMD_RETRY_PAUSE)
        raise GuestFailure(f"SAC could not launch a Command Prompt after {CMD_RETRIES} tries; "
                           f"last console lines:\n{self.console.log.tail()}")

    def _log_in(self, deadline: float) -> None:
        spec, name = self.spec, self.channel
        self._expect([SAC_PROMPT], deadline, "the SAC> prompt after the new channel")
        self._line(f"ch -sn {name}")
        self._expect([VIEW_CHANNEL], deadline, f"SAC to show channel {name}")
        self._line("")  # "any other key"
        self._expect([USERNAME], deadline, f"the Username: prompt of {name}")
        self._line(spec.user)
        self._expect([DOMAIN], deadline, "the Domain prompt")
        self._line(spec.domain)
        self._expect([PASSWORD], deadline, "the Password: prompt")
        self._line(spec.password, secret=True)
        index, match = self._expect([CMD_PROMPT, AUTH_FAILED, USERNAME], deadline,
                                    f"the cmd.exe prompt after logging in as {spec.user!r}")
        if index == 1:
            raise LoginError(f"the guest rejected the login of {spec.user!r}: it said "
                             f"{match.group(0).strip()!r}")
        if index == 2:
            raise LoginError(f"the guest asked for the user name again after {spec.user!r}")

    def _settle(self) -> None:
        """The first line after the login may be swallowed: repeat a probe until cmd.exe
        answers it, then set a prompt no output can contain by accident."""
        console = self.console
        for _ in range(PROBE_TRIES):
            token = secrets.token_hex(6)
            self._line(f"echo __RV^R{token}__")
            index, _ = console.try_expect([rf"__RVR{token}__"], PROBE_WAIT, "cmd.exe to answer")
            if index == 0:
                break
            console.log.note("cmd.exe did not answer the probe (a swallowed line); again")
        else:
            raise GuestFailure(f"cmd.exe did not answer {PROBE_TRIES} probes after the login; "
                               f"last console lines:\n{console.log.tail()}")
        token = secrets.token_hex(6)
        self.prompt = rf"__RVP{token}__>"
        self._line(f"prompt __RVP{token}__$G")
        console.expect([self.prompt], 30, "cmd.exe's new prompt")

    def back_to_sac(self) -> None:
        """<esc><tab>0: leave the channel for the SAC> prompt (its own commands: restart,
        shutdown, crashdump)."""
        self.console.send(ESC_TAB_SAC)
        self.console.expect([SAC_PROMPT], 30, "the SAC> prompt")

    # Commands ----------------------------------------------------------------------------------
    def run(self, command: str, timeout: float = 60.0) -> CommandResult:
        """Run one cmd.exe command line; its exit status (``%ERRORLEVEL%``, read on a second
        line) and output (CRs removed, the blank line cmd.exe prints before a prompt too)."""
        if "\n" in command or "\r" in command:
            raise ValueError(f"one line per command, got {command!r}")
        if self.prompt is None:
            raise GuestFailure("no cmd.exe prompt yet (reach_shell first)")
        started = time.monotonic()
        token = secrets.token_hex(6)
        what = f"the output of {command!r}"
        self._line(f"echo __RV^B{token}__& {command}")
        self._wait(rf"__RVB{token}__\r?\n", started, timeout, what)
        self._wait(self.prompt, started, timeout, what)
        output = self.console.before.replace("\r", "").strip("\n")
        self._line(f"echo __RV^E{token}:%ERRORLEVEL%__")
        match = self._wait(rf"__RVE{token}:(-?\d+)__", started, timeout,
                           f"the exit status of {command!r}")
        status = int(match.group(1))
        self._wait(self.prompt, started, timeout, f"the prompt after {command!r}")
        seconds = time.monotonic() - started
        self.console.log.note(f"command {command!r} exited {status} after {seconds:.2f}s")
        return CommandResult(command, status, output, seconds)

    def _wait(self, pattern: str, started: float, timeout: float, what: str):
        """The match of ``pattern``; SAC starting again (a reboot) fails at once."""
        left = max(timeout - (time.monotonic() - started), 0.01)
        index, match = self.console.expect([pattern, SAC_STARTED], left, what)
        if index == 1:
            raise GuestRebooted(f"the guest rebooted (SAC started again) while waiting for "
                               f"{what}; last console lines:\n{self.console.log.tail()}")
        return match


class _Rebooted(Exception):
    """SAC started again during the login dialogue."""
