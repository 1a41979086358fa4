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


def test_a_missing_or_failing_bhyvectl_is_logged_and_the_reap_goes_on(tmp_path, monkeypatch):
    """A missing bhyvectl (or one that fails or hangs) must not abort the reap: the other VMs
    are still tried, and the dead run's directory is still removed."""
    from harness import reaper

    vmm = tmp_path / "vmm"
    vmm.mkdir()
    for name in ("refvm-dead4321-1", "refvm-dead4321-2"):
        (vmm / name).touch()
    missing = str(tmp_path / "no-such-bhyvectl")
    messages: list = []
    assert reaper._destroy_bhyve_vms("dead4321", vmm, missing, messages.append) == []
    assert [m.split(" (")[0] for m in messages] == [
        "could not destroy stale bhyve VM refvm-dead4321-1",
        "could not destroy stale bhyve VM refvm-dead4321-2"]
    assert "exit 127" in messages[0] and "not found" in messages[0]

    runs = tmp_path / "runs"
    dead = runs / "refvm-dead4321"
    dead.mkdir(parents=True)
    (dead / "owner.json").write_text(json.dumps({"pid": 1, "start": "0",
                                                 "boot_id": "another-boot"}))
    real = reaper._destroy_bhyve_vms
    monkeypatch.setattr(reaper, "_destroy_bhyve_vms",
                        lambda run_id, log: real(run_id, vmm, missing, log))
    reap_log: list = []
    assert reap(runs, reap_log.append) == [dead] and not dead.exists()
    assert any("could not destroy stale bhyve VM refvm-dead4321-1" in m for m in reap_log)
    assert not any(m.startswith("destroyed stale bhyve VMs") for m in reap_log)


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
