"""The reaper removes what dead refvm runs left, never what a live run (or anyone else) owns.

"Anyone else" is taken literally: folders and files *named* like refvm's (a person's
``refvm-photos``, a copy of a run directory, a directory without refvm's marker, one whose
marker names another directory) survive every reap, dry run or not.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from harness import hostproc
from harness.ownership import OWNER_FILE, claim, judge, make_owned
from harness.reaper import reap
from tests.decoys import dead_claim, intact, make_decoys


def test_only_marked_dead_directories_go(tmp_path):
    live = make_owned("run", tmp_path)
    dead = [dead_claim(tmp_path / "refvm-dead0001"), dead_claim(tmp_path / "refvm-xdist-dead0002", "xdist"),
            dead_claim(tmp_path / "refvm-build-dead0003", "build")]
    decoys = make_decoys(tmp_path)
    said: list = []
    removed = reap(tmp_path, said.append)
    assert sorted(removed) == sorted(dead + [tmp_path / "refvm-aaaaaaaa"])
    assert live.is_dir() and intact(decoys)
    assert any(line.startswith(f"left alone {tmp_path / 'refvm-photos'}") for line in said)


def test_a_foreign_folder_is_reported_once_per_process(tmp_path):
    (tmp_path / "refvm-cafecafe").mkdir()
    first, second = [], []
    reap(tmp_path, first.append)
    reap(tmp_path, second.append)
    assert [line for line in first if "refvm-cafecafe" in line] == [
        f"left alone {tmp_path / 'refvm-cafecafe'}: no owner.json marker (refvm marks every "
        f"directory it makes)"]
    assert not any("refvm-cafecafe" in line for line in second)


def test_dry_run_lists_what_would_go_and_why_and_touches_nothing(tmp_path):
    live = make_owned("run", tmp_path)
    dead = dead_claim(tmp_path / "refvm-dead0004")
    (tmp_path / "refvm-cafe0001").mkdir()
    said: list = []
    assert reap(tmp_path, said.append, dry_run=True) == [dead]
    assert dead.is_dir() and live.is_dir() and (tmp_path / "refvm-cafe0001").is_dir()
    pid = json.loads((dead / OWNER_FILE).read_text())["pid"]
    assert f"would remove stale {dead}: its owner, pid {pid}, has exited" in said
    assert f"kept {live}: its owner, pid {os.getpid()}, is running" in said
    assert any(line.startswith(f"left alone {tmp_path / 'refvm-cafe0001'}: ") for line in said)


def test_judging(tmp_path, monkeypatch):
    live = make_owned("run", tmp_path)
    assert judge(live).state == "live"
    marker = json.loads((live / OWNER_FILE).read_text())
    assert marker["tag"] == "refvm-owner/1" and marker["name"] == live.name

    rebooted = make_owned("run", tmp_path)
    data = json.loads((rebooted / OWNER_FILE).read_text())
    data["boot_id"] = "another-boot"
    (rebooted / OWNER_FILE).write_text(json.dumps(data))
    assert judge(rebooted).dead and "before this host last booted" in judge(rebooted).reason

    recycled = make_owned("run", tmp_path)  # our pid, but "started" at another time
    data = json.loads((recycled / OWNER_FILE).read_text())
    data["start"] = "12.00"
    (recycled / OWNER_FILE).write_text(json.dumps(data))
    assert judge(recycled).dead and "now another process" in judge(recycled).reason

    for text in ("", "[]", "{", '{"tag": "refvm-owner/1", "kind": "run", "name": "x"}',
                 "x" * 100000):
        odd = tmp_path / "refvm-0dd00000"
        odd.mkdir(exist_ok=True)
        (odd / OWNER_FILE).write_text(text)
        assert judge(odd).state == "foreign", text


def test_claim_never_adopts_an_existing_directory(tmp_path):
    existing = tmp_path / "refvm-12345678"
    existing.mkdir()
    with pytest.raises(FileExistsError):
        claim(existing)
    assert not (existing / OWNER_FILE).exists()
    with pytest.raises(ValueError):
        claim(tmp_path / "refvm-photos")


def test_the_reaper_stops_only_processes_that_name_the_dead_run(tmp_path):
    dead = dead_claim(tmp_path / "refvm-dead0005")
    (dead / "1").mkdir()
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(dead)])
    other = subprocess.Popen(["sleep", "60"])            # a recycled pid: not ours
    try:
        (dead / "1" / "qemu.pid").write_text(str(ours.pid))
        (dead / "1" / "other.pid").write_text(str(other.pid))
        assert reap(tmp_path) == [dead]
        assert ours.wait(timeout=10) == -9
        assert other.poll() is None
    finally:
        for proc in (ours, other):
            proc.kill()
            proc.wait()


def test_process_facts_come_without_proc(monkeypatch, tmp_path):
    """FreeBSD mounts no /proc: hostproc answers through psutil (sysctl kern.proc there), and
    the boot id falls back to the boot time where Linux's boot_id file does not exist."""
    monkeypatch.setattr(hostproc, "LINUX_BOOT_ID", tmp_path / "no-such-file")
    assert hostproc.boot_id().startswith("boot-")
    monkeypatch.undo()
    child = subprocess.Popen(["sleep", "60"])
    try:
        assert hostproc.start_time(child.pid) == hostproc.start_time(child.pid) is not None
        deadline = time.monotonic() + 10
        while hostproc.command_line(child.pid) != ["sleep", "60"]:  # until it has exec'd
            assert time.monotonic() < deadline, hostproc.command_line(child.pid)
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()
    assert hostproc.start_time(child.pid) is None  # reaped: gone
    assert hostproc.command_line(child.pid) is None


def test_a_dead_runs_bhyve_vms_and_only_those_are_destroyed(tmp_path):
    """FreeBSD keeps bhyve VMs in /dev/vmm until destroyed; a fake bhyvectl records calls."""
    from harness.reaper import _destroy_bhyve_vms

    vmm = tmp_path / "vmm"
    vmm.mkdir()
    for name in ("refvm-dead1234-1", "refvm-dead1234-2", "refvm-dead1234-x", "refvm-dead12345-1",
                 "refvm-live5678-1", "otheruser-vm"):
        (vmm / name).touch()
    log = tmp_path / "calls"
    fake = tmp_path / "bhyvectl"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n")
    fake.chmod(0o755)
    assert _destroy_bhyve_vms("dead1234", vmm, str(fake), dry_run=True) == [
        "refvm-dead1234-1", "refvm-dead1234-2"]
    assert not log.exists()
    assert _destroy_bhyve_vms("dead1234", vmm, str(fake)) == ["refvm-dead1234-1",
                                                              "refvm-dead1234-2"]
    assert log.read_text().splitlines() == ["--vm=refvm-dead1234-1 --destroy",
                                            "--vm=refvm-dead1234-2 --destroy"]


def test_a_missing_bhyvectl_is_logged_and_the_reap_goes_on(tmp_path, monkeypatch):
    from harness import reaper

    vmm = tmp_path / "vmm"
    vmm.mkdir()
    (vmm / "refvm-dead4321-1").touch()
    missing = str(tmp_path / "no-such-bhyvectl")
    runs = tmp_path / "runs"
    dead = dead_claim(runs / "refvm-dead4321")
    real = reaper._destroy_bhyve_vms
    monkeypatch.setattr(reaper, "_destroy_bhyve_vms",
                        lambda run_id, log, dry_run: real(run_id, vmm, missing, log, dry_run))
    said: list = []
    assert reap(runs, said.append) == [dead] and not dead.exists()
    assert any("could not destroy stale bhyve VM refvm-dead4321-1 (exit 127)" in m for m in said)


def test_workers_leave_the_report_to_the_controller(tmp_path):
    """A pool run reaps in every process; only the controller says what it left alone."""
    (tmp_path / "refvm-beefbeef").mkdir()
    said: list = []
    reap(tmp_path, said.append, report_foreign=False)
    assert said == [] and (tmp_path / "refvm-beefbeef").is_dir()


def test_a_dead_windows_installs_bhyve_vm_is_destroyed_by_its_directorys_name(tmp_path,
                                                                              monkeypatch):
    """The Windows install's VM is named after its claimed directory (refvm-install-<id>), so
    a dead install's VM is found from the directory alone; another install's is left."""
    from harness import reaper

    vmm = tmp_path / "vmm"
    vmm.mkdir()
    for name in ("refvm-install-dead9abc", "refvm-install-1ab51234", "refvm-dead9abc-1"):
        (vmm / name).touch()
    log = tmp_path / "calls"
    fake = tmp_path / "bhyvectl"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n")
    fake.chmod(0o755)
    real = reaper._destroy_bhyve_vms
    monkeypatch.setattr(reaper, "_destroy_bhyve_vms",
                        lambda run_id, log, dry_run: real(run_id, vmm, str(fake), log, dry_run))
    runs = tmp_path / "runs"
    dead = dead_claim(runs / "refvm-install-dead9abc", kind="install")
    said: list = []
    assert reap(runs, said.append) == [dead] and not dead.exists()
    assert log.read_text().splitlines() == ["--vm=refvm-install-dead9abc --destroy"]
    assert "destroyed stale bhyve VMs refvm-install-dead9abc" in said
