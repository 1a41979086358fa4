"""Triple faults in QEMU's cpu_reset log (``-d cpu_reset -D FILE``, TCG only).

QEMU gives a triple fault the reset reason of a reboot (guest-reset); under TCG it writes
"Triple fault" first (target/i386/tcg/excp_helper.c check_exception), then, at the reset it
asked for, "CPU Reset (CPU n)" and that CPU's registers *before* the reset: where the fault
happened. KVM writes no such line (KVM_EXIT_SHUTDOWN is a plain reset request).

Not every triple fault is the guest's failure: SeaBIOS, entered by a guest's own reboot (a soft
reset lands in its resume path), ends its hard-reboot attempt with one on purpose (src/resume.c
tryReboot: ACPI reset, keyboard controller, port 0xcf9, then "Try triple fault": int3 with no
IDT). Under TCG the vCPU reaches it before the main loop serves the reset already asked for.
That fault runs in the BIOS area below 1 MiB (0xe0000-0xfffff) without paging; a guest OS's
fault does not, so only the others count.
"""
from __future__ import annotations

import re

TRIPLE_FAULT_LINE = "Triple fault"
BIOS_AREA = range(0xE0000, 0x100000)  # the legacy BIOS ROM shadow, where SeaBIOS runs

_IP = re.compile(r"^(?:EIP|RIP)=([0-9a-f]+)", re.M)
_CS_BASE = re.compile(r"^CS =[0-9a-f]{4} ([0-9a-f]+)", re.M)
_CR0 = re.compile(r"^CR0=([0-9a-f]+)", re.M)


def guest_triple_faults(log: str) -> int:
    """How many triple faults in ``log`` were not the firmware's own reset (see above). A
    fault with no register dump after it (QEMU quit at it: -no-reboot) counts."""
    chunks = log.split(TRIPLE_FAULT_LINE + "\n")[1:]
    return sum(1 for chunk in chunks if not firmware_reset(chunk))


def firmware_reset(after: str) -> bool:
    """Whether the first CPU's registers dumped in ``after`` (the log after a "Triple
    fault" line) place the fault in the BIOS area with paging off."""
    dump = after.split("CPU Reset (CPU ", 2)
    if not after.startswith("CPU Reset (CPU ") or len(dump) < 2:
        return False
    registers = dump[1]
    ip, base, cr0 = (m.search(registers) for m in (_IP, _CS_BASE, _CR0))
    if not (ip and base and cr0):
        return False
    paging = int(cr0.group(1), 16) & 0x8000_0000
    return not paging and int(base.group(1), 16) + int(ip.group(1), 16) in BIOS_AREA
