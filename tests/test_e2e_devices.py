"""Device scenarios must fail, saying what differed, when the data is corrupted.

Real boots of the reference guest under QEMU. Corruption is injected between two steps (a byte
flipped in the scratch image after the guest wrote it) or in flight by the host endpoint
(Run(faults=...)): the scenario that passes in the suite must then fail.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.backends import get_backend
from harness.catalog import load_guests, load_scenarios
from harness.errors import GuestFailure
from harness.images.cache import ImageCache
from harness.matrix import Case
from harness.paths import cache_dir
from harness.runner import Run

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU not installed"),
]


@pytest.fixture(scope="module")
def refguest():
    guest, = load_guests(["refguest"])
    return guest, ImageCache(cache_dir(), log=lambda _t: None).prepare(guest)


def run_scenario(tmp_path: Path, refguest, name: str, faults=frozenset(), before_step=None):
    guest, image = refguest
    scenario, = [s for s in load_scenarios() if s.name == name]
    run = Run(get_backend("qemu", accel="tcg"), tmp_path / "artifacts", faults=frozenset(faults))
    case = Case(scenario, guest, "csm", "qemu")
    recorded = {}
    try:
        vm = run.boot(case, image)
        run.run_steps(case, vm, recorded.__setitem__, before_step)
    finally:
        run.close()
    return recorded


def flip_byte_before_verify(disk_id: str, region_index: int):
    """A before_step hook: corrupt one byte of a region just before the host verifies it."""
    flipped = []

    def hook(step, vm):
        if step.kind == "disk_verify" and step.args["disk"] == disk_id and not flipped:
            facts = vm.facts[f"disk:{disk_id}"]
            region = list(facts["guest_sha"])[region_index]
            at = region.offset + region.length // 3
            with open(facts["path"], "r+b") as f:
                f.seek(at)
                byte = f.read(1)
                f.seek(at)
                f.write(bytes([byte[0] ^ 0x01]))
            flipped.append(at)

    return hook


def test_virtio_blk_flipped_byte_in_the_image_fails_verify(tmp_path, refguest):
    with pytest.raises(GuestFailure) as err:
        run_scenario(tmp_path, refguest, "virtio-blk",
                     before_step=flip_byte_before_verify("scratch", 1))
    message = str(err.value)
    assert "disk scratch: 3076K at offset 20484K in 4K blocks: the guest wrote sha256" in message
    assert "the image file holds" in message


def test_nvme_flipped_byte_in_the_image_fails_verify(tmp_path, refguest):
    with pytest.raises(GuestFailure, match="disk ns4k: 8M at offset 4M in 1M blocks: the guest "
                                           "wrote sha256 [0-9a-f]{64}, the image file holds"):
        run_scenario(tmp_path, refguest, "nvme", before_step=flip_byte_before_verify("ns4k", 0))


def test_virtio_net_corrupted_in_flight_fails(tmp_path, refguest):
    with pytest.raises(GuestFailure, match=r"nic net0: host sent 8388608 bytes with sha256 "
                                           r"[0-9a-f]{64}; the guest received 8388608 bytes"):
        run_scenario(tmp_path, refguest, "virtio-net", faults={"net-to-guest"})


def test_uart_corrupted_in_flight_fails(tmp_path, refguest):
    with pytest.raises(GuestFailure, match=r"uart com2: host sent 65536 bytes with sha256 "
                                           r"[0-9a-f]{64}; the guest read 65536 bytes"):
        run_scenario(tmp_path, refguest, "uart", faults={"uart-to-guest"})
