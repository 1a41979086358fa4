"""A guest whose console user is not root: the login step becomes root the way the guest file
says (su, sudo, doas), the password is masked, and the boot scenario's power-off then works.

The guest here is a test double (a scripted console over a socketpair: a user shell with a `$`
prompt that `su -`, `sudo -i` or `doas -s` turns into a `#` root shell), driven through the real
login and poweroff steps and the real SerialConsole.
"""
from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.console.log import ConsoleLog
from harness.console.serial import SerialConsole
from harness.errors import GuestFailure, LoginError
from harness.families import family
from harness.guestos import UnixShell
from harness.model import BecomeRoot, ConsoleSpec, DEFAULT_LOGIN_PROMPT, DEFAULT_SHELL_PROMPT, \
    load_guest
from harness.steps.basic import login, poweroff
from tests.doubles import ScriptedGuestConsole

ROOT_PASSWORD = "r00t-only-9"
PROMPTS = {"su -": "Password: ", "sudo -i": "[sudo] password for rv: ",
           "doas -s": "doas (rv@guest) password: "}


class UserShellGuest(ScriptedGuestConsole):
    """Test double: logs ``rv`` in to a user shell; becoming root asks for ROOT_PASSWORD;
    ``poweroff`` as rv says "Operation not permitted", as root it ends the 'VM'."""

    def __init__(self, **kwargs):
        super().__init__(user="rv", password="user-pw", **kwargs)
        self.root = False
        self.powered_off = threading.Event()

    def _shell(self) -> None:
        while not self._stop:
            self._send("~ # " if self.root else "~ $ ")
            line = self._readline()
            if line is None:
                return
            if line.strip() in PROMPTS:
                self._send(PROMPTS[line.strip()])
                if self._readline(echo=False) == ROOT_PASSWORD:
                    self.root = True
                else:
                    self._send("\r\nsu: Authentication failure\r\n")
                continue
            self._run_line(line)

    def _run_line(self, line: str) -> None:
        status = 0
        for command in [c.strip() for c in line.split(";") if c.strip()]:
            if command.startswith("echo "):
                self._send(command[5:].replace("''", "").replace("$?", str(status)) + "\r\n")
            elif command == "id -u":
                self._send(("0" if self.root else "1000") + "\r\n")
                status = 0
            elif command == "poweroff" and not self.root:
                self._send("poweroff: Operation not permitted\r\n")
                status = 1
            elif command == "poweroff":
                self.powered_off.set()
                self.hang_up()
                return
            else:
                status = 0


class PoweredOffMachine:
    """Test double for a Machine: 'exits' (a power-off) once the guest double powered off."""

    def __init__(self, guest: UserShellGuest):
        self.guest = guest

    def poll(self):
        return SimpleNamespace(kind="poweroff") if self.guest.powered_off.is_set() else None

    def wait_exit(self, timeout):
        return SimpleNamespace(kind="poweroff") if self.guest.powered_off.wait(timeout) else None


def context(tmp_path: Path, guest: UserShellGuest, become: BecomeRoot | None):
    spec = ConsoleSpec(DEFAULT_LOGIN_PROMPT, "rv", "user-pw", DEFAULT_SHELL_PROMPT, 30.0,
                       "Login incorrect", become)
    log = ConsoleLog(tmp_path / "console.log", secrets=spec.secrets)
    console = SerialConsole(guest.harness_side, log, family("linux").failure_patterns)
    recorded = {}
    ctx = SimpleNamespace(case=SimpleNamespace(guest=SimpleNamespace(console=spec)),
                          guest=UnixShell(console, family("linux"), spec),
                          remaining=lambda t: t,
                          record=recorded.__setitem__,
                          vm=SimpleNamespace(machine=PoweredOffMachine(guest), log=log))
    return ctx, log, recorded


@pytest.mark.parametrize("method", ["su", "sudo", "doas"])
def test_a_non_root_console_user_becomes_root_and_powers_off(tmp_path, method):
    guest = UserShellGuest()
    ctx, log, recorded = context(tmp_path, guest, BecomeRoot(method, ROOT_PASSWORD))
    try:
        login(ctx, {})
        assert guest.root
        poweroff(ctx, {"timeout": 30.0, "settle": 10.0})
        assert recorded["exit"] == "poweroff"
    finally:
        log.close()
        guest.close()
    text = (tmp_path / "console.log").read_text()
    assert ROOT_PASSWORD not in text and "user-pw" not in text
    assert "sent (secret)" in text


def test_without_become_root_the_refused_poweroff_is_quoted(tmp_path):
    guest = UserShellGuest()
    ctx, log, _ = context(tmp_path, guest, None)
    try:
        login(ctx, {})
        with pytest.raises(GuestFailure, match="'poweroff' failed \\(exit 1\\) and the guest "
                                               "stays up; it said: 'poweroff: Operation not "
                                               "permitted'"):
            poweroff(ctx, {"timeout": 120.0, "settle": 30.0})
    finally:
        log.close()
        guest.close()


def test_a_wrong_root_password_is_a_login_error_in_the_guests_words(tmp_path):
    guest = UserShellGuest()
    ctx, log, _ = context(tmp_path, guest, BecomeRoot("su", "not-it"))
    try:
        with pytest.raises(LoginError, match="'rv' could not become root with 'su -': the guest "
                                             "said 'su: Authentication failure'"):
            login(ctx, {})
    finally:
        log.close()
        guest.close()
    assert "not-it" not in (tmp_path / "console.log").read_text()


def test_guest_files_say_how_to_become_root(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("name: g\nfamily: linux\nimage: {path: g.raw, sha256: '" + "0" * 64 + "'}\n"
                    "firmware: [uefi]\nconsole:\n  user: rv\n  password: pw\n"
                    "  become_root: {method: sudo, password: pw2}\n")
    console = load_guest(path).console
    assert console.become_root == BecomeRoot("sudo", "pw2")
    assert console.become_root.command == "sudo -i"
    assert console.secrets == ["pw", "pw2"]
