"""A triple fault is a failure named as such, not a reboot (issue: "A triple fault (bhyve exit
3, QEMU's reset reason) is a failure named as such").

QEMU gives a triple fault the reset reason of a reboot (guest-reset); under TCG it also writes
"Triple fault" to its cpu_reset log, which the QEMU backend asks for (-d cpu_reset -D) and
reads. The guest here is real and tiny: a 512-byte boot sector SeaBIOS loads, which loads an
empty IDT (limit 0) and runs ud2. In real mode #UD's vector lies beyond the IDT limit, so its
delivery raises #GP, whose delivery raises #GP again (two contributory faults: #DF), whose
delivery faults once more: the CPU shuts down (target/i386/tcg/excp_helper.c check_exception).
A guest that reboots normally (refguest's reboot scenario, test_machine_scenarios) must not be
counted: its resets write no such line.
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from harness.backends.qemu.backend import QemuBackend
from harness.vmspec import Disk, VmSpec

pytestmark = [pytest.mark.vm]

# cli; lidt cs:[0x7c0a]; ud2; hlt; then the 6-byte IDT descriptor at 0x7c0a: limit 0, base 0.
TRIPLE_FAULT_SECTOR = bytes([0xFA, 0x2E, 0x0F, 0x01, 0x1E, 0x0A, 0x7C, 0x0F, 0x0B, 0xF4]) \
    + bytes(6)


def boot_sector(path: Path) -> Path:
    sector = TRIPLE_FAULT_SECTOR + bytes(510 - len(TRIPLE_FAULT_SECTOR)) + b"\x55\xaa"
    path.write_bytes(sector + bytes((1 << 20) - 512))
    return path


def faulting_vm(tmp_path: Path, survive_reboot: bool) -> VmSpec:
    image = boot_sector(tmp_path / "triple-fault.raw")
    return VmSpec(name=f"refvm-tf-{uuid.uuid4().hex[:6]}", memory_mib=64, cpus=1,
                  firmware="csm", uuid=str(uuid.uuid4()), utc_clock=True,
                  workdir=tmp_path / "w", logdir=tmp_path / "logs",
                  disks=(Disk(image, bus="virtio-blk", boot=True),), serials=(),
                  survive_reboot=survive_reboot)


def test_a_triple_fault_ends_the_vm_as_a_triple_fault_not_a_reboot(tmp_path):
    machine = QemuBackend(accel="tcg").start(faulting_vm(tmp_path, survive_reboot=False))
    try:
        machine.resume()
        info = machine.wait_exit(60)
    finally:
        machine.destroy()
    assert info is not None and info.kind == "triple-fault", info
    assert "guest-reset after a triple fault" in info.detail
    assert machine.triple_faults() == 1


def test_a_machine_that_resets_in_place_counts_its_triple_faults(tmp_path):
    """Without -no-reboot (the reboot scenario's machine) QEMU resets and SeaBIOS loads the
    sector again, which faults again: each of those resets is a triple fault."""
    machine = QemuBackend(accel="tcg").start(faulting_vm(tmp_path, survive_reboot=True))
    try:
        machine.resume()
        deadline = time.monotonic() + 60
        while machine.triple_faults() < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert machine.poll() is None  # it keeps running: only the log tells
        assert machine.triple_faults() >= 2 and machine.resets() >= 2
    finally:
        machine.destroy()
