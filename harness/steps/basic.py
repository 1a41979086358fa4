"""The steps of the boot scenario: log in, run commands, check the firmware, power off."""
from __future__ import annotations

import re
import time

from .. import schema as s
from ..errors import CommandFailed, GuestFailure
from . import register

EXPECTED_FIRMWARE = {"uefi": "UEFI", "csm": "BIOS", "bhyveload": "BIOS"}


@register("login", doc="Wait for the login prompt and log in with the guest's credentials.")
def login(ctx, args):
    spec = ctx.case.guest.console
    seconds = ctx.console.login(
        spec.user, spec.password, spec.login_prompt, spec.shell_prompt, spec.login_incorrect,
        timeout=ctx.remaining(spec.boot_timeout), after_login=ctx.family.after_login)
    ctx.record("login_seconds", round(seconds, 2))


def _families_with_command(args) -> set:
    return {f for f, cmd in args["command"].items() if cmd}


@register("run", s.Map({
    "command": s.F(s.FamilyMap(), required=True),
    "status": s.F(s.Int(0, 255), default=0),
    "output": s.F(s.Regex(), doc="regex searched (multi-line) in the output"),
    "timeout": s.F(s.Seconds(), default=60.0),
}), families=_families_with_command)
def run(ctx, args):
    """Run a command; check its exit status and, if given, that its output matches a regex."""
    command = args["command"][ctx.case.guest.family]
    result = ctx.console.run(command, timeout=ctx.remaining(args["timeout"]))
    if result.status != args["status"]:
        raise CommandFailed(f"{command!r} exited {result.status}, expected {args['status']}; "
                            f"output:\n{result.output}")
    if args["output"] and not re.search(args["output"], result.output, re.MULTILINE):
        raise CommandFailed(f"{command!r} output does not match {args['output']!r}; "
                            f"output:\n{result.output}")


@register("firmware")
def firmware(ctx, args):
    """Ask the guest which firmware booted it and compare with the case's firmware."""
    command = ctx.family.commands["firmware"]
    result = ctx.console.run(command, timeout=ctx.remaining(60))
    seen = result.output.strip().splitlines()[-1:] or [""]
    want = EXPECTED_FIRMWARE[ctx.case.firmware]
    ctx.record("guest_firmware", seen[0])
    if result.status != 0 or seen[0] != want:
        raise GuestFailure(f"booted with {ctx.case.firmware} firmware, so the guest should "
                           f"report {want}, but {command!r} printed {result.output!r} "
                           f"(exit {result.status})")


@register("poweroff", s.Map({"timeout": s.F(s.Seconds(), default=120.0)}))
def poweroff(ctx, args):
    """Power off from inside the guest; the hypervisor must exit reporting a power-off."""
    ctx.console.send_line(ctx.family.commands["poweroff"])
    started = time.monotonic()
    timeout = ctx.remaining(args["timeout"])
    info = None
    while info is None:
        ended = ctx.console.drain(1.0, "the guest to power off")
        info = ctx.vm.machine.wait_exit(10) if ended else ctx.vm.machine.poll()
        if info is None and time.monotonic() - started > timeout:
            raise GuestFailure(f"the guest did not power off within {timeout:.0f}s; "
                               f"last console lines:\n{ctx.vm.log.tail()}")
    ctx.record("exit", info.kind)
    ctx.record("poweroff_seconds", round(time.monotonic() - started, 2))
    if info.kind != "poweroff":
        raise GuestFailure(f"expected the guest to power off, but the hypervisor reported "
                           f"{info}; last console lines:\n{ctx.vm.log.tail()}")
