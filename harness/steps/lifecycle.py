"""The machine's life beyond one boot: guest reboots (the firmware runs again, the login comes
back, the boot id is new each time) and restarts of the same VM by the harness (same vars file
and disks; or a fresh vars file, to show what the first run left is not in the template)."""
from __future__ import annotations

import time

from .. import schema as s
from ..errors import ConsoleTimeout, GuestFailure, GuestRebooted
from ..families import families_having
from .guestops import guest_op, last_line
from .nvram import EFI_STEPS, REFVM_GUID, read_var, write_var
from .registry import register

REBOOT_VAR = "RefvmReboot"


def boot_id(ctx) -> str:
    value = last_line(guest_op(ctx, "boot_id").output)
    if not value:
        raise GuestFailure("the guest printed no boot id")
    return value


@register("reboot", s.Map({
    "times": s.F(s.Int(1, 20), default=3),
    "timeout": s.F(s.Seconds(), default=600.0, doc="per reboot: back at a shell"),
}), families=lambda _args: families_having("boot_id", "reboot"))
def reboot(ctx, args):
    """Reboot from inside the guest ``times`` times. Each time the hypervisor must see the
    machine reset (QEMU's RESET event, bhyve's exit 0 relaunched: the firmware runs again),
    keep running, and the guest must come back to a login with a boot id it never had. A
    reset that was a triple fault fails, named as such (bhyve: its exit 3 ends the VM). Under
    UEFI a variable written before the first reboot must still be there after each one."""
    machine = ctx.vm.machine
    seen = [boot_id(ctx)]
    seconds, resets_seen = [], []
    marker = uefi_marker(ctx, seen[0])
    for number in range(1, args["times"] + 1):
        resets, faults = machine.resets(), machine.triple_faults()
        started = time.monotonic()
        command = ctx.guest.device_command("reboot")
        try:
            result = ctx.guest.run(command, timeout=30)
            if result.status != 0:
                raise GuestFailure(f"reboot {number}: {command!r} failed (exit {result.status}):"
                                   f" {result.output.strip()[-300:]!r}")
        except (ConsoleTimeout, GuestRebooted):
            pass  # the shell went (or the guest started again) before the command reported
        except GuestFailure:
            if machine.poll() is None:
                raise
        try:  # a triple fault is named as such, whether or not the login came back
            ctx.guest.reach_shell(timeout=ctx.remaining(args["timeout"]))
        except (ConsoleTimeout, GuestFailure):
            no_triple_fault(ctx, number, faults)
            raise
        no_triple_fault(ctx, number, faults)
        info = machine.poll()
        if info is not None:
            raise GuestFailure(f"reboot {number}: the hypervisor exited ({info}) instead of "
                               f"resetting the machine")
        # One reset, or more: SeaBIOS resets the machine once more after a warm reset.
        if machine.resets() <= resets:
            raise GuestFailure(f"reboot {number}: the login came back, but the hypervisor saw "
                               f"no reset: the firmware did not run again; last console "
                               f"lines:\n{ctx.vm.log.tail()}")
        resets_seen.append(machine.resets() - resets)
        new = boot_id(ctx)
        if new in seen:
            raise GuestFailure(f"reboot {number}: the guest came back with boot id {new}, one "
                               f"it had before: it did not boot again")
        seen.append(new)
        if marker is not None and read_var(ctx, REBOOT_VAR, REFVM_GUID) != marker:
            raise GuestFailure(f"reboot {number}: the UEFI variable {REBOOT_VAR} the guest "
                               f"wrote before the reboots is gone or changed: the vars file "
                               f"did not keep it")
        seconds.append(round(time.monotonic() - started, 1))
    if marker is not None:
        ctx.record("efi_var_across_reboots", f"{REBOOT_VAR} kept")
    ctx.record("reboots", args["times"])
    ctx.record("reboot_seconds", " ".join(map(str, seconds)))
    ctx.record("machine_resets", " ".join(map(str, resets_seen)))
    ctx.record("boot_ids", " ".join(seen))


def uefi_marker(ctx, boot: str) -> bytes | None:
    """Where the VM keeps UEFI variables in a vars file: write a variable of refvm's own
    before the reboots (read back after each: bhyve relaunches on the same vars file, QEMU
    and libvirt reset in place) and return its value; None where there is no vars file (CSM;
    bhyve before 13.1 boots one ROM without one) or no command to reach it, said in the
    results."""
    why = ctx.vm.backend.lacks("vars-file", ctx.vm.spec.firmware)
    if why is None and ctx.guest.family.name not in EFI_STEPS(None):
        why = f"no UEFI variable commands for {ctx.guest.family.name} guests"
    if why is not None:
        ctx.record("efi_var_across_reboots", f"not asked: {why}")
        return None
    value = f"reboot-{boot[:24]}".encode()
    write_var(ctx, REBOOT_VAR, REFVM_GUID, value)
    if read_var(ctx, REBOOT_VAR, REFVM_GUID) != value:
        raise GuestFailure(f"wrote the UEFI variable {REBOOT_VAR}, but reading it back gave "
                           f"something else (before any reboot)")
    return value


def no_triple_fault(ctx, number: int, faults_before: int | None) -> None:
    """Raise if the machine triple-faulted since ``faults_before`` (None: cannot tell)."""
    faults = ctx.vm.machine.triple_faults()
    if faults_before is not None and faults is not None and faults > faults_before:
        raise GuestFailure(f"reboot {number}: the machine reset after a triple fault, not a "
                           f"reboot the guest asked for; last console lines:\n"
                           f"{ctx.vm.log.tail()}")


@register("restart", s.Map({
    "fresh_vars": s.F(s.Bool(), default=False,
                      doc="start from a new copy of the UEFI vars template instead"),
}), vm_after="running")
def restart(ctx, args):
    """After the guest powered off: start the same VM again (same disks and vars file, or a
    fresh vars file) and attach to its console. Log in with the ``login`` step next."""
    if ctx.vm.machine.poll() is None:
        raise GuestFailure("restart starts the VM again after it stopped: put it after "
                           "poweroff in the scenario")
    ctx.vm.runner.restart(ctx.vm, fresh_vars=args["fresh_vars"])
    ctx.record("restarts", ctx.vm.restarts)


@register("save_restore", s.Map({
    "settle": s.F(s.Int(1, 60), default=3, doc="seconds the counter runs before the save"),
}), families=lambda _args: families_having("counter_start", "counter_read", "keep_write",
                                           "keep_sha"))
def save_restore(ctx, args):
    """Suspend the running guest to a file and restore it into a new hypervisor process: a
    counter started before keeps counting from where it was (not from 0), a file written
    before is intact, and the console answers. Steps after it check disks and network."""
    guest_op(ctx, "counter_start")
    time.sleep(args["settle"])
    before = counter(ctx)
    kept = guest_op(ctx, "keep_write").output
    figures = ctx.vm.runner.save_restore(ctx.vm)
    restored = time.monotonic()
    after = counter(ctx)
    # Resumed means answering again: bhyve's restore starts the process and returns, QEMU's
    # waits for the state to load; either way the first answer on the new console ends it.
    figures["resume_seconds"] = round(figures["resume_seconds"] + time.monotonic() - restored, 2)
    for name, value in figures.items():
        ctx.record(name, value)
    time.sleep(2)
    later = counter(ctx)
    ctx.record("counter_before_save", before)
    ctx.record("counter_after_restore", after)
    if after < before or after > before + args["settle"] + 30:
        raise GuestFailure(f"the counter was {before} when the guest was saved and {after} "
                           f"after the restore: it did not go on from where it was")
    if later <= after:
        raise GuestFailure(f"the counter stopped after the restore ({after}, then {later})")
    if guest_op(ctx, "keep_sha").output.split()[:1] != kept.split()[:1]:
        raise GuestFailure("the file the guest wrote before the save changed in the restore")


def counter(ctx) -> int:
    value = last_line(guest_op(ctx, "counter_read").output)
    if not value.isdigit():
        raise GuestFailure(f"the guest's counter reads {value!r}")
    return int(value)
