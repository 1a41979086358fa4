"""refvm run --keep-failed: a failing case's VM outlives the run's pytest session for a person.

The reaper part needs no VM. The hand-over is driven through a pty as a person would: a real
QEMU boot of the reference guest (about 25 s under TCG) whose scenario, written here, fails on
purpose after the login; the console is handed over, a typed command answered by the guest,
Ctrl-] leaves and nothing is left behind. Marked ``vm``."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pexpect
import pytest

from harness.ownership import KEPT_FILE, mark_kept
from harness.paths import REPO_ROOT
from harness.reaper import reap
from tests.decoys import dead_claim
from tests.by_hand_vm import by_hand_vm

FAILING = """\
name: keepfail
description: logs in, then fails on purpose (refvm run --keep-failed's test)
timeout: 300
steps:
  - login
  - run:
      command: echo kept-once
      output: '^this is never printed$'
"""


def test_a_dead_kept_run_directory_is_left_to_an_explicit_refvm_clean(tmp_path):
    kept = dead_claim(tmp_path / "refvm-dead00aa")
    mark_kept(kept, ["refvm-dead00aa-1"])
    plain = dead_claim(tmp_path / "refvm-dead00bb")
    said = []
    assert reap(tmp_path, said.append) == [plain]  # the automatic reap at a run's start
    assert kept.is_dir() and any(line.startswith(f"left {kept} for you: its VMs were kept")
                                 for line in said)
    assert reap(tmp_path, said.append, kept=True) == [kept]  # refvm clean
    assert not kept.exists()


@pytest.mark.vm
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU not installed")
def test_a_failed_cases_vm_is_kept_and_its_console_handed_over(tmp_path):
    scratch, artifacts = tmp_path / "scratch", tmp_path / "artifacts"
    scratch.mkdir()
    scenario = tmp_path / "keepfail.yaml"
    scenario.write_text(FAILING)
    child = pexpect.spawn(sys.executable, [
        "-m", "harness.cli", "run", "--keep-failed", "--guest", "refguest", "--firmware", "csm",
        "--accel", "tcg", "--artifacts", str(artifacts), "--", str(scenario), "-k", "keepfail",
        "-p", "no:cacheprovider"], cwd=str(REPO_ROOT), env=dict(os.environ, REFVM_TMP=str(scratch)),
        encoding="utf-8", timeout=150)
    try:
        child.expect(r"refvm: keepfail\[refguest-csm-qemu\] failed: ")
        child.expect(r"its VM (refvm-[0-9a-f]{8}-\d+) was kept")
        child.expect(r"to start the same VM by hand:\r+\n((?:[^#\r][^\r]*\r+\n)+)")
        by_hand = child.match.group(1).replace("\r", "")
        child.expect(r"press Ctrl-\] to leave")
        # While the person has the console: the run directory says kept, and is live.
        workroot, = scratch.iterdir()
        assert json.loads((workroot / KEPT_FILE).read_text())["vms"] == [
            f"{workroot.name}-1"]
        assert reap(scratch) == [] and workroot.is_dir()
        child.send("echo kept-$((6*7)); tty\r")
        child.expect("kept-42")
        child.expect("/dev/ttyS0")  # the guest's own serial console answers
        child.send("\x1d")
        child.expect(r"left the console: you pressed Ctrl-\]; destroying refvm-")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 1  # a case failed
    report = json.loads((artifacts / "report.json").read_text())
    case, = [c for c in report["cases"] if c["id"] == "keepfail[refguest-csm-qemu]"]
    assert case["result"] == "fail" and "this is never printed" in case["reason"]
    folder = artifacts / "keepfail_refguest-csm-qemu"
    log = (folder / "console.log").read_text()
    assert "kept after the failure" in log and "kept-42" in log
    assert list(scratch.iterdir()) == [], "the kept VM's files were left behind"
    ps = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(scratch) not in ps, "the kept VM's QEMU is still running"
    assert str(scratch) not in by_hand, "the lines name the run's directory, gone by now"
    by_hand_vm(by_hand, (folder / "command.txt").read_text().splitlines(), tmp_path / "person")
