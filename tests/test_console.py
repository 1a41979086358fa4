"""The console transport and the Unix-shell driver on it, against a scripted guest console
(tests.doubles): login, commands with status and output, failures while waiting."""
from __future__ import annotations

import time

import pytest

from harness.console.log import ConsoleLog
from harness.console.serial import SerialConsole
from harness.errors import GuestFailure, LoginError
from harness.families import Family
from harness.guestos import UnixShell
from harness.model import DEFAULT_LOGIN_PROMPT, DEFAULT_SHELL_PROMPT, ConsoleSpec
from tests.doubles import ScriptedGuestConsole

LINUX_FAILURES = (r"Kernel panic - not syncing",)


@pytest.fixture
def make_console(tmp_path):
    made = []

    def make(guest: ScriptedGuestConsole, password="secret", login_prompt=DEFAULT_LOGIN_PROMPT,
             **kwargs):
        log = ConsoleLog(tmp_path / "console.log", secrets=[guest.password])
        console = SerialConsole(guest.harness_side, log, LINUX_FAILURES, **kwargs)
        made.append((guest, console, log))
        spec = ConsoleSpec(login_prompt, "root", password, DEFAULT_SHELL_PROMPT, 300.0,
                           r"Login incorrect")
        return UnixShell(console, FAMILY, spec)

    yield make
    for guest, console, log in made:
        guest.close()
        log.close()


FAMILY = Family(name="test", failure_patterns=LINUX_FAILURES, after_login=(), commands={},
                devices={})


def login(shell, timeout=20, nudge_after=0.5):
    return shell.reach_shell(timeout=timeout, nudge_after=nudge_after)


def test_login_and_run_returns_status_and_output(make_console):
    guest = ScriptedGuestConsole(commands={"uname -s": ("Linux", 0), "false": ("", 1)},
                                 boot_output="[    0.000000] Linux version 6.1\r\n")
    console = make_console(guest)
    login(console)
    result = console.run("uname -s")
    assert (result.status, result.output) == (0, "Linux")
    result = console.run("false")
    assert (result.status, result.output) == (1, "")


def test_output_that_looks_like_a_marker_in_the_echo_is_not_output(make_console):
    # The typed line contains the marker text with quotes; only real output may match.
    guest = ScriptedGuestConsole(commands={"cat f": ("line one\nline two", 0)}, echo=True)
    console = make_console(guest)
    login(console)
    result = console.run("cat f")
    assert result.output == "line one\nline two"


def test_status_of_a_missing_command_is_reported(make_console):
    console = make_console(ScriptedGuestConsole())
    login(console)
    result = console.run("no-such-tool")
    assert result.status == 127 and "not found" in result.output


def test_prompt_that_needs_a_newline_is_nudged(make_console):
    guest = ScriptedGuestConsole(prompt_needs_newline=True)
    console = make_console(guest)
    started = time.monotonic()
    login(console, nudge_after=0.5)
    assert time.monotonic() - started < 10
    assert b"\r" in guest.received.split(b"root")[0]  # a newline was sent before the user


def test_kernel_messages_over_the_prompt_do_not_break_login(make_console):
    guest = ScriptedGuestConsole(
        after_prompt="[   12.345678] virtio_net virtio0 eth0: renamed\r\n")
    console = make_console(guest)
    login(console, nudge_after=0.5)
    assert console.run("echo hi").output == "hi"


def test_a_kernel_message_right_after_the_first_shell_prompt_does_not_break_login(make_console):
    # debian-12 under TCG on a loaded host: "root@debian12:~# [   78.109674] powernow_k8:
    # Power state transitions not supported" (dmesg -n 1 comes only after the login).
    guest = ScriptedGuestConsole(after_first_shell_prompt=(
        "[   78.109674] powernow_k8: Power state transitions not supported\r\n"))
    console = make_console(guest)
    login(console, nudge_after=0.5)
    assert console.run("echo hi").output == "hi"


def test_kernel_messages_right_after_the_password_prompt_do_not_break_login(make_console):
    # debian-12 under TCG, udev still loading modules (the real transcript's lines).
    guest = ScriptedGuestConsole(after_password_prompt=(
        "[   90.905176] kvm: Nested Virtualization enabled\r\n"
        "[   90.905401] SVM: kvm: Nested Paging enabled\r\n"))
    console = make_console(guest)
    login(console, timeout=30)
    assert console.run("echo hi").output == "hi"


def test_wrong_password_fails_at_once_with_the_guests_words(make_console):
    console = make_console(ScriptedGuestConsole(password="secret"), password="wrong")
    started = time.monotonic()
    with pytest.raises(LoginError, match="Login incorrect"):
        login(console, timeout=60)
    assert time.monotonic() - started < 10  # not the boot timeout


def test_password_never_reaches_the_log(make_console, tmp_path):
    guest = ScriptedGuestConsole(password="hunter2-secret", on_login_text="hunter2-secret\r\n")
    console = make_console(guest, password="hunter2-secret")
    login(console)
    console.run("echo done")
    console.console.log.close()
    text = (tmp_path / "console.log").read_text()
    assert "hunter2-secret" not in text
    assert "********" in text  # the guest printed it back: masked, not dropped


def test_panic_while_waiting_ends_the_wait_quoting_the_console(make_console):
    guest = ScriptedGuestConsole(prompt_needs_newline=True)
    console = make_console(guest)
    guest.say("[    3.1] Kernel panic - not syncing: VFS: Unable to mount root fs\r\n"
              "[    3.2] CPU: 0 PID: 1 Comm: swapper\r\n")
    started = time.monotonic()
    with pytest.raises(GuestFailure) as err:
        login(console, timeout=120, nudge_after=60)
    assert time.monotonic() - started < 10
    assert "Kernel panic - not syncing" in str(err.value)
    assert "Unable to mount root fs" in str(err.value)


def test_stream_closing_is_reported_with_the_cause(make_console):
    guest = ScriptedGuestConsole(prompt_needs_newline=True)
    console = make_console(guest, describe_eof=lambda: "the hypervisor exited: error (boom)")
    guest.hang_up()
    with pytest.raises(GuestFailure, match="hypervisor exited: error \\(boom\\)"):
        login(console, timeout=30, nudge_after=60)


def test_silent_guest_times_out_with_the_last_lines(make_console):
    guest = ScriptedGuestConsole(prompt_needs_newline=True, boot_output="GRUB loading\r\n")
    console = make_console(guest, login_prompt=r"never-matches")
    # Nudges are swallowed: the guest prints the prompt only once... so eat them all.
    guest.prompt_needs_newline = True
    with pytest.raises(GuestFailure, match="no login prompt within 2s(.|\n)*GRUB loading"):
        login(console, timeout=2, nudge_after=60)


def test_flood_of_25mb_before_the_prompt_is_handled_and_logged_completely(make_console,
                                                                         tmp_path):
    line = "[   12.345678] virtio_blk virtio2: [vdc] 131072 512-byte logical blocks\r\n"
    count = (25 << 20) // len(line)
    guest = ScriptedGuestConsole(boot_output=line * count, echo=False)
    console = make_console(guest)
    login(console, timeout=300, nudge_after=300)
    assert console.run("echo after-flood").output == "after-flood"
    console.console.log.close()
    with open(tmp_path / "console.log", encoding="utf-8") as log:
        logged = sum(1 for entry in log if "512-byte logical blocks" in entry)
    assert logged == count


def test_boot_text_ending_like_a_shell_prompt_is_not_taken_for_one(make_console):
    # A read can end right after the '#' of "#1 SMP": that is not a shell prompt. The guest
    # stops right there (no login prompt until the harness nudges it with a newline), so
    # the '#' is the last thing the console reads.
    guest = ScriptedGuestConsole(boot_output="[    0.0] Linux version 6.1.0 #",
                                 prompt_needs_newline=True, echo=False)
    console = make_console(guest)
    login(console)
    assert b"root" in guest.received  # the login really happened
    assert b"echo" not in guest.received.split(b"root")[0]  # nothing typed before the login
    assert console.run("echo ok").output == "ok"
