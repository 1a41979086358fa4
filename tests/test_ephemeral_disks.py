"""Boot disks are ephemeral: the guest writes them, the cached image never changes.

Per backend: QEMU runs a qcow2 overlay in the VM's workdir whose backing file is the image;
bhyve and libvirt run a sparse private copy in the VM's workdir, which the plan shows as ``cp``
(by copy_file_range: a clone where the file system clones blocks).
The end-to-end test boots the reference guest, has it write its own boot disk, and checks the
cached image's sha256 afterwards.
"""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from harness.backends import get_backend
from harness.backends.libvirt import domain_xml as lx
from harness.backends.libvirt.backend import LibvirtBackend
from harness.hostdata import file_sha256, sparse_copy
from harness.vmspec import Disk, SerialPort, VmSpec, private_copies

IMAGE = Path("/cache/images/guest.raw")


def spec(workdir=Path("/tmp/refvm-0123abcd/1")) -> VmSpec:
    return VmSpec(name="refvm-0123abcd-1", memory_mib=256, cpus=1, firmware="csm",
                  uuid="00000000-0000-4000-8000-000000000001", utc_clock=True,
                  workdir=workdir, logdir=Path("/logs/1"),
                  disks=(Disk(IMAGE, ephemeral=True, boot=True),
                         Disk(workdir / "scratch.raw", serial="RV1")),
                  serials=(SerialPort("com1"),))


@pytest.mark.parametrize("kernel_copy", ["copy_file_range", "read and write"])
def test_sparse_copy_keeps_data_and_holes(tmp_path, monkeypatch, kernel_copy):
    if kernel_copy != "copy_file_range":  # an OS or file system without it
        def refused(*_args):
            raise OSError(errno.ENOSYS, "not here")
        monkeypatch.setattr(os, "copy_file_range", refused, raising=False)
    elif not hasattr(os, "copy_file_range"):
        pytest.skip("this Python has no os.copy_file_range")
    source = tmp_path / "image.raw"
    with open(source, "wb") as f:
        f.truncate(64 << 20)
        f.seek(5 << 20)
        f.write(os.urandom(3 << 20))
        f.seek(60 << 20)
        f.write(b"end of the disk")
    sparse_copy(source, tmp_path / "copy.raw")
    copy = tmp_path / "copy.raw"
    assert file_sha256(copy) == file_sha256(source)
    assert os.path.getsize(copy) == 64 << 20
    assert os.stat(copy).st_blocks * 512 < 8 << 20  # the 61 MB of holes stayed holes


def test_private_copies_point_ephemeral_disks_into_the_workdir():
    view, copies = private_copies(spec())
    boot, scratch = view.disks
    assert copies == [(IMAGE, spec().workdir / "private-0-guest.raw")]
    assert boot.path == spec().workdir / "private-0-guest.raw" and not boot.ephemeral
    assert scratch == spec().disks[1]
    assert private_copies(view) == (view, [])  # nothing left to copy


def test_qemu_drives_an_ephemeral_disk_through_a_qcow2_overlay_backed_by_the_image():
    backend = get_backend("qemu", accel="tcg")
    overlay = spec().workdir / "overlay-0.qcow2"
    make_overlay, qemu = backend.command_lines(spec())
    assert make_overlay == ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                            str(IMAGE), str(overlay)]
    drives = [qemu[i + 1] for i, a in enumerate(qemu) if a == "-drive"]
    assert f"file={overlay},format=qcow2,if=none,id=disk0,readonly=off" in drives
    assert not any(str(IMAGE) in d for d in drives)  # the image is only the backing file
    assert backend.command_lines(spec(), again=True) == [qemu]  # a restart keeps the overlay


def test_qemu_overlay_keeps_the_image_unwritten(tmp_path):
    """Real qemu-img: the overlay names the image as its backing file, read-only."""
    import json
    import shutil
    import subprocess
    from harness.backends.qemu.backend import make_overlay
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img not installed")
    image = tmp_path / "image.raw"
    image.write_bytes(b"\1" * 65536)
    overlay = tmp_path / "overlay-0.qcow2"
    make_overlay(image, overlay, "raw")
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(overlay)],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["format"] == "qcow2" and info["backing-filename"] == str(image)
    assert info["backing-filename-format"] == "raw" and image.read_bytes() == b"\1" * 65536


def test_bhyve_plan_copies_the_image_and_boots_the_copy():
    backend = get_backend("bhyve", planning=True, csm_firmware=Path("/fw/BHYVE_UEFI_CSM.fd"))
    lines = backend.command_lines(spec())
    copy = spec().workdir / "private-0-guest.raw"
    assert ["cp", str(IMAGE), str(copy)] in lines
    bhyve = lines[-1]
    assert f"2,virtio-blk,{copy}" in bhyve and not any(str(IMAGE) in a for a in bhyve)


def test_libvirt_domain_names_the_private_copy_never_the_image():
    domain = lx.build_domain(LibvirtBackend.view_of(spec()), "qemu", lx.FirmwareFiles())
    sources = [s.get("file") for s in domain.iter("source") if s.get("file")]
    assert str(spec().workdir / "private-0-guest.raw") in sources
    assert str(IMAGE) not in sources


@pytest.mark.vm
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU not installed")
def test_a_guest_writing_its_boot_disk_leaves_the_cached_image_as_it_was(tmp_path):
    from harness.catalog import load_guests
    from harness.images.cache import ImageCache
    from harness.paths import cache_dir
    from tests.test_e2e_failures import run_steps

    guest, = load_guests(["refguest"])
    image = ImageCache(cache_dir(), log=lambda _t: None).prepare(guest)
    before = file_sha256(image)
    run_steps(tmp_path, guest, "  - login\n"
              "  - run: {command: 'dd if=/dev/urandom of=/dev/vda bs=4096 count=64 conv=fsync'}\n"
              "  - poweroff\n")
    assert file_sha256(image) == before
