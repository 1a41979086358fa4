"""UEFI variables kept in the VM's own vars file, apart from the read-only firmware ROM.

The guest writes a variable of its own (refvm's vendor GUID) and sets BootNext to the entry it
booted from; the host reads both out of the vars file after power-off (virt-firmware, the
edk2 varstore reader of the virt-firmware project); after a restart with the same file the
variable is still there and the firmware has acted on BootNext (it boots that entry and
deletes the variable); a restart from a fresh copy of the template has neither. And a vars
file of the wrong size, handed to the hypervisor on purpose, is refused before the guest runs.
"""
from __future__ import annotations

import os
import re

from .. import schema as s
from ..errors import GuestFailure, InfraError
from ..families import families_having
from .guestops import guest_op, last_line
from .registry import register

REFVM_GUID = "4f1f4d2e-8c1b-4a5e-9d0e-7265666d7631"  # refvm's own vendor GUID ("refm1" tail)
GLOBAL_GUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"  # EFI_GLOBAL_VARIABLE
NV_BS_RT = 0x7  # non-volatile, boot-service and runtime access
VALUE = s.Str(r"[A-Za-z0-9_.-]{1,64}", "1-64 letters, digits, '_', '.' or '-'")
NAME = s.Str(r"[A-Za-z][A-Za-z0-9]{0,31}", "a variable name: letters and digits")


def octal(data: bytes) -> str:
    """``data`` as printf's octal escapes: nothing a shell or printf would read otherwise."""
    return "".join(f"\\{byte:03o}" for byte in data)


def read_var(ctx, name: str, guid: str) -> bytes | None:
    """A variable's data (without its attributes), or None when the guest has none. Linux's
    efivarfs gives the attributes first; FreeBSD's efivar(8) the data alone."""
    data_only = "efivar_read_data" in ctx.guest.family.devices
    op = "efivar_read_data" if data_only else "efivar_read"
    text = last_line(guest_op(ctx, op, name=name, guid=guid).output)
    if not text:
        return None
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise GuestFailure(f"{op} {name}: not hex: {text[:80]!r}") from None
    return raw if data_only else raw[4:]


def write_var(ctx, name: str, guid: str, data: bytes) -> None:
    guest_op(ctx, "efivar_write", name=name, guid=guid, data_octal=octal(data),
             octal=octal(NV_BS_RT.to_bytes(4, "little") + data))


def EFI_STEPS(_args) -> set:
    """The families these steps run on: those with commands to read and write variables."""
    return (families_having("efivar_read", "efivar_write")
            | families_having("efivar_read_data", "efivar_write"))


@register("efi_var_set", s.Map({
    "name": s.F(NAME, required=True),
    "value": s.F(VALUE, required=True),
}), families=EFI_STEPS)
def efi_var_set(ctx, args):
    """Write refvm's own variable and set BootNext to the entry this boot came from."""
    current = read_var(ctx, "BootCurrent", GLOBAL_GUID)
    if current is None or len(current) != 2:
        raise GuestFailure("the guest has no BootCurrent variable: not booted by UEFI, or "
                           "its UEFI variables cannot be read (Linux: efivarfs not mounted; "
                           "FreeBSD: no efirt(4))")
    write_var(ctx, args["name"], REFVM_GUID, args["value"].encode())
    if "efi_boot_next" in ctx.guest.family.devices:  # the OS's boot manager (efibootmgr -n)
        guest_op(ctx, "efi_boot_next", bootnum=f"{int.from_bytes(current, 'little'):04X}")
    else:
        write_var(ctx, "BootNext", GLOBAL_GUID, current)
    if read_var(ctx, args["name"], REFVM_GUID) != args["value"].encode():
        raise GuestFailure(f"wrote {args['name']}, but reading it back gave something else")
    boot = int.from_bytes(current, "little")
    ctx.vm.facts["boot_next"] = boot
    ctx.record("efi_var", f"{args['name']}-{REFVM_GUID}")
    ctx.record("boot_next", f"Boot{boot:04X}")


@register("efi_var_check", s.Map({
    "name": s.F(NAME, required=True),
    "value": s.F(VALUE),
    "present": s.F(s.Bool(), default=True),
}), families=EFI_STEPS)
def efi_var_check(ctx, args):
    """After a restart: the variable is (or, from a fresh vars file, is not) there; where it
    is, the firmware has consumed BootNext and booted the entry it named."""
    seen = read_var(ctx, args["name"], REFVM_GUID)
    if not args["present"]:
        if seen is not None:
            raise GuestFailure(f"{args['name']} is in a VM started from a fresh vars file: "
                               f"it holds {seen!r}, so the template was written")
        ctx.record("efi_var_fresh", "absent")
        return
    if seen != (args["value"] or "").encode():
        raise GuestFailure(f"{args['name']} after the restart: {seen!r}, the guest wrote "
                           f"{args['value']!r} before it")
    wanted = ctx.vm.facts.get("boot_next")
    next_now = read_var(ctx, "BootNext", GLOBAL_GUID)
    current = read_var(ctx, "BootCurrent", GLOBAL_GUID)
    current = int.from_bytes(current, "little") if current else None
    ctx.record("efi_var_after_restart", seen.decode())
    ctx.record("boot_current_after_restart", f"Boot{current:04X}" if current is not None
               else "none")
    if wanted is not None and (next_now is not None or current != wanted):
        raise GuestFailure(f"BootNext was Boot{wanted:04X} before the restart; after it "
                           f"BootNext is {next_now!r} and BootCurrent {current}: the firmware "
                           f"did not act on the variable the guest wrote")


@register("efi_vars_host_check", s.Map({
    "name": s.F(NAME, required=True),
    "value": s.F(VALUE, required=True),
}))
def efi_vars_host_check(ctx, args):
    """After power-off: the host reads the guest's variable (and BootNext) from the vars file
    with virt-firmware's edk2 varstore parser, and agrees with what the guest wrote."""
    if ctx.vm.machine.poll() is None:
        raise GuestFailure("efi_vars_host_check reads the vars file after the VM stopped: "
                           "put it after poweroff in the scenario")
    found = host_vars(ctx.vm.spec.vars_path)
    data = found.get((args["name"], REFVM_GUID))
    ctx.record("vars_file_size", ctx.vm.spec.vars_path.stat().st_size)
    if data != args["value"].encode():
        raise GuestFailure(f"the vars file holds {args['name']}={data!r}; the guest wrote "
                           f"{args['value']!r}")
    boot_next = found.get(("BootNext", GLOBAL_GUID))
    wanted = ctx.vm.facts.get("boot_next")
    if wanted is not None and boot_next != wanted.to_bytes(2, "little"):
        raise GuestFailure(f"the vars file holds BootNext={boot_next!r}, the guest set "
                           f"Boot{wanted:04X}")
    ctx.record("host_read_vars", f"{args['name']}, BootNext")


def host_vars(path) -> dict:
    """{(name, guid): data} of an edk2 vars file. virt-firmware (a well-kept library from
    the edk2/QEMU firmware maintainers) parses the varstore; installs on FreeBSD too."""
    from virt.firmware.varstore.edk2 import Edk2VarStore

    found = {}
    for var in Edk2VarStore(str(path)).get_varlist().values():
        found[(str(var.name), str(var.guid).lower())] = bytes(var.data)
    return found


# How long a hypervisor that started may take to refuse the vars file: bhyve reads it
# (bootrom.c bootrom_loadrom) while it sets the VM up, before any vCPU runs.
REFUSAL_SECONDS = 30.0


@register("vars_size_refused", s.Map({
    "size": s.F(s.Size(minimum=1, maximum=64 << 20), required=True,
                doc="the wrong size given to the hypervisor, bypassing refvm's own check"),
}))
def vars_size_refused(ctx, args):
    """Opt-in: hand the hypervisor a vars file of the wrong size (refvm itself refuses one)
    and start the VM again: the hypervisor must refuse before the guest runs; its words are
    recorded. The step ends the VM's life: put it last.

    QEMU refuses while it starts (the restart raises). bhyve's start only prepares the host
    and resume() spawns bhyve, so its refusal is bhyve exiting with its own error status (4)
    at once: an "error" exit within REFUSAL_SECONDS counts, with what bhyve printed."""
    if ctx.vm.machine.poll() is None:
        raise GuestFailure("vars_size_refused restarts the VM: put it after poweroff")
    path = ctx.vm.spec.vars_path
    with open(path, "r+b") as f:
        f.truncate(args["size"])
    ctx.vm.log.note(f"vars file cut to {args['size']} bytes on purpose")
    try:
        try:
            ctx.vm.runner.restart(ctx.vm)
        except InfraError as err:
            ctx.record("hypervisor_refused", size_refusal(str(err)))
            return
        info = ctx.vm.machine.wait_exit(REFUSAL_SECONDS)
    finally:
        os.truncate(path, 0)  # never a half-right vars file left behind for anything else
    if info is not None and info.kind == "error":
        ctx.record("hypervisor_refused", size_refusal(info.detail))
        return
    raise GuestFailure(f"the hypervisor started the VM with a {args['size']}-byte vars file"
                       + (f" and it ended as {info}" if info else
                          f" and it was still running {REFUSAL_SECONDS:.0f}s later"))


def size_refusal(text: str) -> str:
    """The hypervisor's line about the size (QEMU: "its size must be a non-zero multiple of
    0x1000", or pflash's "device requires N bytes, block backend provides M bytes"; bhyve:
    "Invalid bootrom variable size N"). A failure that names no size or byte count is not the
    refusal asked for (a missing bootrom, a tap that cannot be made): an InfraError."""
    lines = [part.strip() for line in text.splitlines() for part in line.split(" | ")]
    words = [line for line in lines if re.search(r"(?i)\bsize\b|\d+ bytes\b", line)]
    if not words:
        raise InfraError(f"the hypervisor did not start, but not over the vars file's size: "
                         f"{text.strip()[:300]}")
    return words[-1][:300]
