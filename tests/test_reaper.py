"""The reaper: removes what dead runs left, never what a live run (or anyone else) owns."""
from __future__ import annotations

import json
import subprocess
import sys

from harness.reaper import claim, owner_alive, reap


def test_reaper_destroys_a_dead_runs_bhyve_vms_only(tmp_path):
    """FreeBSD keeps bhyve VMs in /dev/vmm until destroyed; a fake bhyvectl records calls."""
    from harness.reaper import _destroy_bhyve_vms

    vmm = tmp_path / "vmm"
    vmm.mkdir()
    for name in ("refvm-dead1234-1", "refvm-dead1234-2", "refvm-live5678-1", "otheruser-vm"):
        (vmm / name).touch()
    log = tmp_path / "calls"
    fake = tmp_path / "bhyvectl"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n")
    fake.chmod(0o755)
    assert _destroy_bhyve_vms("dead1234", vmm, str(fake)) == ["refvm-dead1234-1",
                                                              "refvm-dead1234-2"]
    assert log.read_text().splitlines() == ["--vm=refvm-dead1234-1 --destroy",
                                            "--vm=refvm-dead1234-2 --destroy"]


def test_live_run_is_kept_dead_run_is_removed_others_untouched(tmp_path):
    live = tmp_path / "refvm-live0001"
    claim(live)
    dead = tmp_path / "refvm-dead0001"
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead.mkdir()
    (dead / "owner.json").write_text(json.dumps(
        {"pid": child.pid, "start": "0", "boot_id": json.loads(
            (live / "owner.json").read_text())["boot_id"]}))
    other = tmp_path / "somebody-else"
    other.mkdir()
    assert owner_alive(live) and not owner_alive(dead)
    assert reap(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["refvm-live0001", "somebody-else"]


def test_owner_from_another_boot_is_dead(tmp_path):
    run = tmp_path / "refvm-oldboot1"
    claim(run)
    owner = json.loads((run / "owner.json").read_text())
    owner["boot_id"] = "another-boot"
    (run / "owner.json").write_text(json.dumps(owner))
    assert not owner_alive(run)
