"""Which triple faults in QEMU's cpu_reset log are the guest's (harness/backends/qemu/cpulog).
The excerpts are from real runs on this host (QEMU 7.2, TCG), trimmed to the lines read; the
boots themselves are in test_triple_fault.py and the reboot scenario's CI case."""
from __future__ import annotations

from harness.backends.qemu.cpulog import guest_triple_faults

# refguest (Linux, CSM) rebooting: Linux resets through port 0xcf9 from long mode, SeaBIOS
# runs its resume path and ends its hard reboot with "int3" (src/resume.c tryReboot).
SEABIOS_REBOOT = """\
CPU Reset (CPU 0)
RIP=ffffffff88ff25bf RFL=00000046 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0
CS =0010 0000000000000000 ffffffff 00af9b00 DPL=0 CS64 [-RA]
CR0=80050033 CR2=00007fff8597fec0 CR3=0000000001070000 CR4=00751ef0
Triple fault
CPU Reset (CPU 0)
EAX=00000006 EBX=000f3e32 ECX=00000000 EDX=00000cf9
EIP=000efaad EFL=00000046 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0
CS =0008 00000000 ffffffff 00cf9b00 DPL=0 CS32 [-RA]
CR0=00000011 CR2=00000000 CR3=00000000 CR4=00000000
"""

# The boot sector of test_triple_fault, reset in place: real mode at 0000:7c07.
BOOT_SECTOR_FAULT = """\
Triple fault
CPU Reset (CPU 0)
EIP=00007c07 EFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0
CS =0000 00000000 0000ffff 00009b00
CR0=00000010 CR2=00000000 CR3=00000000 CR4=00000000
"""

# A fault from long mode with paging on: the Linux registers above, as if it had faulted there
# (synthetic: refguest does not triple-fault).
KERNEL_FAULT = SEABIOS_REBOOT.split("Triple fault\n")[0].replace(
    "CPU Reset (CPU 0)\n", "Triple fault\nCPU Reset (CPU 1)\n", 1)


def test_seabios_resetting_by_triple_fault_after_a_reboot_is_not_the_guests():
    assert guest_triple_faults(SEABIOS_REBOOT) == 0


def test_a_fault_outside_the_bios_or_with_paging_on_is_the_guests():
    assert guest_triple_faults(BOOT_SECTOR_FAULT) == 1
    assert guest_triple_faults(KERNEL_FAULT) == 1
    assert guest_triple_faults(BOOT_SECTOR_FAULT + SEABIOS_REBOOT + KERNEL_FAULT) == 2


def test_a_fault_qemu_quit_at_has_no_dump_and_counts():
    assert guest_triple_faults("CPU Reset (CPU 0)\nTriple fault\n") == 1
    assert guest_triple_faults("") == 0
