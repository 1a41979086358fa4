"""The fio phase of queue_depth: fio's own output parsed (from a real fio run on this host,
against a file, with the family command's options), and the spare area it may write."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from harness.errors import GuestFailure
from harness.families import family
from harness.hostdata import Region
from harness.steps.queue import MIN_FIO_BYTES, fio_area, parse_fio


def test_fio_writes_only_past_the_host_regions_from_the_next_mib():
    regions = (Region(0, 1280 * 1024, 4096),)
    assert fio_area(4 << 20, regions) == (2 << 20, 2 << 20)
    assert fio_area(2 << 20, regions)[1] == 0  # nothing left: fio does not run
    assert fio_area((2 << 20) + MIN_FIO_BYTES, regions) == (2 << 20, MIN_FIO_BYTES)


@pytest.mark.skipif(shutil.which("fio") is None, reason="fio not installed")
def test_fio_terse_output_of_the_family_command_is_read(tmp_path):
    """The options of linux.yaml's fio_verify, run by this host's fio on a file (the guest's
    fio is the same 3.33 on debian-12): the figures come from the right terse fields."""
    command = family("linux").devices["fio_verify"]
    fio_part = command.split(" > /tmp/rv.fio")[0]
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(4 << 20))
    filled = (fio_part.replace("@dev@", str(disk)).replace("@depth@", "128")
              .replace("@block@", "4096").replace("@offset@", str(2 << 20))
              .replace("@size@", str(2 << 20)))
    argv = filled.split()
    assert argv[0] == "fio" and "--verify=crc32c" in argv and "--direct=1" in argv
    argv = [a for a in argv if a != "--direct=1"]  # tmpfs refuses O_DIRECT
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    parsed = parse_fio(f"inflight_max 128\nfio_status {done.returncode}\n{done.stdout}")
    assert parsed["status"] == 0 and parsed["error"] == 0
    assert parsed["write_kib"] == parsed["read_kib"] == 2048  # all written, all verified
    assert parsed["write_iops"] > 0 and parsed["write_bw_kib"] > 0 and parsed["read_iops"] > 0
    assert disk.read_bytes()[: 2 << 20] == bytes(2 << 20)  # nothing before the offset


def test_output_without_fios_line_is_a_guest_failure():
    with pytest.raises(GuestFailure, match="expected 'inflight_max N', 'fio_status S'"):
        parse_fio("inflight_max 3\nfio_status 1\nfio: engine libaio not loadable\n")
