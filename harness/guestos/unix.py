"""The Unix-shell guest-OS driver: Linux and FreeBSD guests on a serial console.

Everything that depends on the guest being a Unix system at a shell prompt lives here, on top
of a console transport (harness.console.serial: wait for text, send a line):

- the way to a shell: an optional stop at the FreeBSD loader (``Autoboot in N seconds`` /
  ``Hit [Enter] to boot immediately``) to ``set console=comconsole`` for images whose loader
  does not use the serial console; the login dialogue; the terminal-size query FreeBSD's
  ``resizewin -z`` (and busybox ash) sends, answered so it costs no time-out;
- the shell flavour, asked from the shell itself (``$0``, its own name: ``$SHELL`` still names
  the login shell after ``exec /bin/sh``): commands are framed with
  ``$?`` in sh, bash and ash, ``${status}`` in csh and tcsh (which reads ``$?x`` as "is x
  set"); a csh login shell is replaced by /bin/sh, since the family command sets are POSIX sh;
- becoming root (su, sudo, doas) when the console user is not;
- commands with output and exit status, cut out between markers the typed line cannot
  contain; the OS family's data (failure patterns, after-login commands, the command set for
  firmware, power-off and devices: harness/families/*.yaml).
"""
from __future__ import annotations

import re
import secrets
import time

from ..errors import GuestFailure, LoginError
from .base import CommandResult, GuestDriver

# At the end of the output, or with a kernel message printed right after it ("Password: [ 90.9]
# kvm: ..."): a systemd guest still loading modules when getty asks, seen on debian-12.
PASSWORD_PROMPT = r"[Pp]assword:[ \t]*(?:$|(?=\[ *\d+\.\d+\]))"
# su, sudo and doas: "Password:", "[sudo] password for rv:", "doas (rv@host) password:"
ROOT_PASSWORD_PROMPT = r"[Pp]assword(?: for [^:\r\n]*)?:\s*$"
# What su, sudo and doas print when they will not: the whole line is quoted.
ROOT_REFUSED = (r"[^\r\n]*(?:Authentication failure|Sorry, try again|incorrect password attempt|"
                r"is not in the sudoers file|not allowed to|Authentication failed|"
                r"Operation not permitted|Permission denied|must be suid|: not found)[^\r\n]*")
CURSOR_QUERY = r"\x1b\[6n"  # "where is the cursor?" (resizewin -z, ash's line editor)
CURSOR_REPLY = "\x1b[24;80R"  # row 24, column 80: a terminal of the usual size
# The FreeBSD loader's countdowns (stand/common/boot.c; the Lua menu's), and its prompt.
LOADER_COUNTDOWN = (r"Autoboot in \d+ seconds?|"
                    r"Hit \[Enter\] to boot immediately, or any other key for command prompt")
LOADER_PROMPT = r"(?:^|\n)OK ?$"
CSH_SHELLS = ("csh", "tcsh")


class UnixShell(GuestDriver):
    """One guest's shell on one console; made per booted VM (see harness.guestos.driver_for).

    ``console`` is the transport (SerialConsole), ``family`` the OS family's data, ``spec``
    the guest file's console section (prompts, user, password, become_root, stop_loader)."""

    def __init__(self, console, family, spec):
        super().__init__(console, family, spec)
        self.flavour = "sh"  # until asked: sh | csh

    # Reaching a shell --------------------------------------------------------------------------
    def reach_shell(self, timeout: float, nudge_after: float = 10.0) -> float:
        """Boot loader, login, root, a POSIX shell, the family's set-up; the seconds it took
        to log in (from this call to the first shell prompt)."""
        started = time.monotonic()
        self._wait_for_login_prompt(started + timeout, timeout, nudge_after)
        self._log_in()
        seconds = time.monotonic() - started
        self._settle_shell()
        if self.spec.become_root:
            self._become_root()
            self._settle_shell()
        for command in self.family.after_login:
            self.run(command, timeout=30)
        return seconds

    def _wait_for_login_prompt(self, deadline: float, timeout: float, nudge_after: float):
        """Only the login prompt ends this wait (a shell-prompt pattern such as '#$' also
        matches a boot message a read cut after a '#'). Survives a prompt that appears only
        after a newline (nudged after ``nudge_after`` s of silence) and messages over it."""
        console = self.console
        waits = [self.spec.login_prompt]
        if self.spec.stop_loader:
            waits += [LOADER_COUNTDOWN]
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise GuestFailure(f"no login prompt within {timeout:.0f}s; "
                                   f"last console lines:\n{console.log.tail()}")
            index, match = console.try_expect(waits, min(1.0, remaining), "the login prompt")
            if index == 0:
                return
            if index == 1:
                self._stop_loader(match.group(0), deadline)
                waits = waits[:1]  # once
                continue
            if time.monotonic() - console.log.last_output >= nudge_after:
                console.send_line("")
                console.log.last_output = time.monotonic()  # nudge again after more silence

    def _stop_loader(self, countdown: str, deadline: float) -> None:
        """At the loader's countdown: to its prompt (the Lua menu's "3", or any key for the C
        loader), put the console on the serial port, boot."""
        console = self.console
        console.log.note("stopping the loader to use the serial console")
        console.send(("3" if countdown.startswith("Autoboot") else " "))
        console.expect([LOADER_PROMPT], max(deadline - time.monotonic(), 1), "the loader's OK")
        console.send_line("set console=comconsole")
        console.expect([LOADER_PROMPT], 30, "the loader's OK after set console")
        console.send_line("boot")

    def _log_in(self) -> None:
        console, spec = self.console, self.spec
        console.send_line(spec.user)
        replies = [PASSWORD_PROMPT, spec.login_incorrect, spec.shell_prompt, spec.login_prompt,
                   CURSOR_QUERY]
        asked = False
        while True:
            index, match = console.expect(replies, 60, "a password prompt or shell after user "
                                                       f"{spec.user!r}")
            if index == 0 and not asked:
                console.send_line(spec.password, secret=True)
                asked = True
            elif index == 0:
                raise LoginError(f"the guest asked for the password of {spec.user!r} again")
            elif index == 1:
                raise LoginError(f"the guest rejected the login of {spec.user!r}: it said "
                                 f"{match.group(0)!r}")
            elif index == 2:
                return
            elif index == 3:
                raise LoginError(f"the guest asked for the login again after {spec.user!r}; "
                                 f"last console lines:\n{console.log.tail(10)}")
            else:
                console.send(CURSOR_REPLY)  # resizewin -z waits for it (2 s unanswered)

    def _settle_shell(self) -> None:
        """Ask the shell which it is; replace a csh with /bin/sh (the family command sets are
        POSIX sh, and the uart check keeps a descriptor open in the shell between commands)."""
        self.flavour = self._ask_flavour()
        if self.flavour == "csh":
            self.console.log.note("the login shell is a csh: switching to /bin/sh")
            self.console.send_line("exec /bin/sh")
            self.console.expect([self.spec.shell_prompt], 30, "the prompt of /bin/sh")
            self.flavour = self._ask_flavour()
            if self.flavour != "sh":
                raise GuestFailure("`exec /bin/sh` left a csh at the console")

    def _ask_flavour(self) -> str:
        """sh or csh, from the running shell's own name ``$0`` ("-csh", "-sh", "/bin/sh",
        "-bash"...): not ``$SHELL``, which login(1) set and ``exec /bin/sh`` leaves alone.
        ``$0`` and ``''`` read the same in sh and csh."""
        token = secrets.token_hex(6)
        self.console.send_line(f"echo __RVS''{token}=$0=__")
        _, match = self.console.expect([rf"__RVS{token}=([^=\r\n]*)=__"], 30,
                                       "the shell's name ($0)")
        name = match.group(1).rsplit("/", 1)[-1].lstrip("-")
        # The prompt after it too: a dialogue that waits for a prompt next (su) must not take
        # this one for its own.
        self.console.expect([self.spec.shell_prompt], 30, "the prompt after $0")
        return "csh" if name in CSH_SHELLS else "sh"

    def _become_root(self) -> None:
        """``su -``, ``sudo -i`` or ``doas -s``, answering a password prompt with the guest
        file's password (masked in the log); a refusal is quoted."""
        console, spec, how = self.console, self.spec, self.spec.become_root
        console.send_line(how.command)
        replies = [ROOT_PASSWORD_PROMPT, ROOT_REFUSED, spec.shell_prompt]
        index, match = console.expect(replies, 60, f"{how.command!r} to ask for a password or "
                                                   f"give a shell")
        if index == 0:
            console.send_line(how.password, secret=True)
            index, match = console.expect(replies[1:], 60, f"a root shell after {how.command!r}")
            index += 1
        if index == 1:
            raise LoginError(f"{spec.user!r} could not become root with {how.command!r}: the "
                             f"guest said {match.group(0).strip()[:200]!r}")
        self._settle_shell()
        result = self.run("id -u", timeout=30)
        if result.output.strip().splitlines()[-1:] != ["0"]:
            raise LoginError(f"{how.command!r} gave a shell, but not root's: `id -u` printed "
                             f"{result.output.strip()[:100]!r}")

    # Commands ----------------------------------------------------------------------------------
    def run(self, command: str, timeout: float = 60.0) -> CommandResult:
        """Run one shell command; return its exit status and output (CRs removed).

        The typed line is ``echo <B>''<tok>; CMD; echo <E>''<tok>:STATUS``: the shell prints
        the markers without the quotes, so only real output can match them, never the echo.
        STATUS is ``$?`` in sh, ``${status}`` in csh."""
        if "\n" in command or "\r" in command:
            raise ValueError(f"one line per command, got {command!r}")
        console = self.console
        token = secrets.token_hex(6)
        begin, end = f"__RVB{token}__", f"__RVE{token}:"
        status_word = "${status}" if self.flavour == "csh" else "$?"
        started = time.monotonic()
        console.send_line(f"echo __RVB''{token}__; {command}; echo __RVE''{token}:"
                          f"{status_word}__")
        what = f"the output of {command!r}"
        console.expect([re.escape(begin) + r"\r?\n"], timeout, what)
        remaining = max(timeout - (time.monotonic() - started), 0.01)
        console.expect([re.escape(end) + r"(\d+)__"], remaining, what)
        status = int(console.match.group(1))
        output = console.before.replace("\r", "")
        if output.endswith("\n"):
            output = output[:-1]
        seconds = time.monotonic() - started
        console.log.note(f"command {command!r} exited {status} after {seconds:.2f}s")
        return CommandResult(command, status, output, seconds)
