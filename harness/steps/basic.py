"""The steps of the boot scenario: log in, run commands, check the firmware, power off."""
from __future__ import annotations

import re
import time

from .. import schema as s
from ..errors import CommandFailed, ConsoleTimeout, GuestFailure
from ..families import NAMES as FAMILY_NAMES
from .registry import register

EXPECTED_FIRMWARE = {"uefi": "UEFI", "csm": "BIOS", "bhyveload": "BIOS"}


@register("login", doc="Wait for the login prompt and log in with the guest's credentials "
                       "(then become root, when the guest file says how).")
def login(ctx, args):
    seconds = ctx.guest.reach_shell(timeout=ctx.remaining(ctx.case.guest.console.boot_timeout))
    ctx.record("login_seconds", round(seconds, 2))


def _families_with_command(args) -> set:
    return {f for f, cmd in args["command"].items() if cmd}


@register("run", s.Map({
    "command": s.F(s.FamilyMap(FAMILY_NAMES), required=True),
    "status": s.F(s.Int(0, 255), default=0),
    "output": s.F(s.Regex(), doc="regex searched (multi-line) in the output"),
    "timeout": s.F(s.Seconds(), default=60.0),
}), families=_families_with_command)
def run(ctx, args):
    """Run a command; check its exit status and, if given, that its output matches a regex."""
    command = args["command"][ctx.case.guest.family]
    result = ctx.guest.run(command, timeout=ctx.remaining(args["timeout"]))
    if result.status != args["status"]:
        raise CommandFailed(f"{command!r} exited {result.status}, expected {args['status']}; "
                            f"output:\n{result.output}")
    if args["output"] and not re.search(args["output"], result.output, re.MULTILINE):
        raise CommandFailed(f"{command!r} output does not match {args['output']!r}; "
                            f"output:\n{result.output}")


@register("firmware")
def firmware(ctx, args):
    """Ask the guest which firmware booted it and compare with the case's firmware."""
    command = ctx.guest.command("firmware")
    result = ctx.guest.run(command, timeout=ctx.remaining(60))
    seen = result.output.strip().splitlines()[-1:] or [""]
    want = EXPECTED_FIRMWARE[ctx.case.firmware]
    ctx.record("guest_firmware", seen[0])
    if result.status != 0 or seen[0] != want:
        raise GuestFailure(f"booted with {ctx.case.firmware} firmware, so the guest should "
                           f"report {want}, but {command!r} printed {result.output!r} "
                           f"(exit {result.status})")


POWEROFF_RETURNS = 30.0  # seconds a poweroff command gets to fail before we just wait


@register("poweroff", s.Map({
    "timeout": s.F(s.Seconds(), default=120.0),
    "settle": s.F(s.Seconds(), default=30.0,
                  doc="after a poweroff that exited 0, seconds before asking whether the "
                      "guest's shell still answers (then it ignored the request)"),
}), vm_after="stopped")
def poweroff(ctx, args):
    """Power off from inside the guest; the hypervisor must exit reporting a power-off.

    The command runs framed like any other, so a guest that refuses (not root: "Operation not
    permitted") fails at once with its own words. One that says yes (status 0) and then stays
    up, its init ignoring the request, is found by asking its shell after ``settle`` seconds:
    a shell that still answers is a guest that will not go down."""
    started = time.monotonic()
    timeout = ctx.remaining(args["timeout"])
    command = ctx.guest.command("poweroff")
    returned = _start_poweroff(ctx, command, min(timeout, POWEROFF_RETURNS))
    probe_at = started + args["settle"] if returned else None
    info = None
    while info is None:
        ended = ctx.guest.watch(1.0, "the guest to power off")
        info = ctx.vm.machine.wait_exit(10) if ended else ctx.vm.machine.poll()
        now = time.monotonic()
        if info is None and probe_at is not None and now >= probe_at:
            probe_at = None
            if _shell_answers(ctx):
                raise GuestFailure(
                    f"{command!r} exited 0, but {now - started:.0f}s later the guest is still "
                    f"up and its shell answers: its init ignored the request; last console "
                    f"lines:\n{ctx.vm.log.tail(15)}")
        if info is None and now - started > timeout:
            raise GuestFailure(f"the guest did not power off within {timeout:.0f}s; "
                               f"last console lines:\n{ctx.vm.log.tail()}")
    ctx.record("exit", info.kind)
    ctx.record("poweroff_seconds", round(time.monotonic() - started, 2))
    if info.kind != "poweroff":
        raise GuestFailure(f"expected the guest to power off, but the hypervisor reported "
                           f"{info}; last console lines:\n{ctx.vm.log.tail()}")


def _start_poweroff(ctx, command: str, wait: float) -> bool:
    """Run the poweroff command; True when it returned with status 0 (the guest should now go
    down), False when it did not return (the shell went first). A non-zero status is a
    failure, quoted; so is a failure pattern (a panic on the way down)."""
    try:
        result = ctx.guest.run(command, timeout=wait)
    except ConsoleTimeout:
        return False
    except GuestFailure:
        if ctx.vm.machine.wait_exit(10) is None:
            raise  # not the VM leaving: a panic or the like
        return False  # the console closed because the VM exited before the command returned
    if result.status != 0:
        raise GuestFailure(f"{command!r} failed (exit {result.status}) and the guest stays up; "
                           f"it said: {result.output.strip()[-300:]!r}")
    return True


def _shell_answers(ctx) -> bool:
    """Whether the guest's shell still runs a command (a guest on its way down does not)."""
    try:
        return ctx.guest.answers(timeout=5)
    except GuestFailure:
        if ctx.vm.machine.wait_exit(10) is None:
            raise
        return False
