"""The matrix: every guest x firmware x scenario, and a reason for each case that cannot run."""
from __future__ import annotations

from dataclasses import replace

from harness.backends.qemu.backend import QemuBackend
from harness.catalog import load_guests, load_scenarios
from harness.matrix import build


def test_ids_are_readable_and_cover_both_firmwares():
    guest, = load_guests(["refguest"])
    cases = build(load_scenarios(), [guest], QemuBackend(accel="tcg"))
    ids = {case.id for case, _reason in cases}
    for scenario in ("boot", "virtio-blk", "nvme", "virtio-net", "uart"):
        assert f"{scenario}[refguest-uefi-qemu]" in ids and f"{scenario}[refguest-csm-qemu]" in ids
    # Only what this machine cannot do (255 vCPUs under TCG), what the scenario does not apply
    # to (UEFI variables under csm) and what the guest lacks (no sshd in the busybox guest) is
    # skipped.
    assert {(case.id, bool(reason)) for case, reason in cases if reason} == {
        ("vcpus-max[refguest-uefi-qemu]", True), ("vcpus-max[refguest-csm-qemu]", True),
        ("nvram-persist[refguest-csm-qemu]", True), ("ssh[refguest-uefi-qemu]", True),
        ("ssh[refguest-csm-qemu]", True)}


def test_device_scenarios_a_guest_does_not_declare_are_skipped_with_the_reason():
    guest, = load_guests(["refguest"])
    guest = replace(guest, devices=("virtio-blk",))
    reasons = {case.scenario.name: reason
               for case, reason in build(load_scenarios(), [guest], QemuBackend(accel="tcg"))}
    assert reasons["boot"] is None and reasons["virtio-blk"] is None
    assert reasons["uart"] == "guest refguest does not declare device(s): uart"
    assert reasons["nvme"] == "guest refguest does not declare device(s): nvme"


def test_firmware_the_backend_lacks_is_skipped_with_the_reason():
    guest, = load_guests(["refguest"])
    guest = replace(guest, family="freebsd", firmware=("bhyveload",))
    (case, reason), *_ = build(load_scenarios(), [guest], QemuBackend(accel="tcg"))
    assert reason == "the qemu backend has no bhyveload firmware"


def test_firmware_filter():
    guest, = load_guests(["refguest"])
    cases = build(load_scenarios(), [guest], QemuBackend(accel="tcg"), firmwares=("csm",))
    assert {case.firmware for case, _ in cases} == {"csm"}
