"""`refvm repro` driven through a pty as a person would: a real QEMU boot of the reference
guest, its steps run up to (not including) the final poweroff, the console handed over, a
command typed, Ctrl-] to leave. Then, with refvm gone, the commands it printed to start the
same VM by hand are run through sh, and that VM's own console shows a login prompt.
Marked ``vm`` (two TCG boots, one after the other, about a minute)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pexpect
import pytest

from harness.paths import REPO_ROOT
from tests.by_hand_vm import by_hand_vm

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU not installed"),
]


def test_repro_hands_the_console_over_and_leaves_nothing_behind(tmp_path):
    scratch, artifacts = tmp_path / "scratch", tmp_path / "artifacts"
    scratch.mkdir()
    child = pexpect.spawn(sys.executable, ["-m", "harness.cli", "repro",
                                           "boot[refguest-uefi-qemu]", "--accel", "tcg",
                                           "--artifacts", str(artifacts)],
                          cwd=str(REPO_ROOT), env=dict(os.environ, REFVM_TMP=str(scratch)),
                          encoding="utf-8", timeout=300)
    try:
        child.expect(r"refvm: to start the same VM by hand:\r\n((?:[^#\r][^\r]*\r\n)+)")
        by_hand = child.match.group(1).replace("\r\n", "\n")
        child.expect(r"running 5 of 6 step\(s\): login, run, run, run, firmware; held back, as "
                     r"they stop the VM or need it stopped: 6 poweroff \(--until STEP")
        child.expect(r"press Ctrl-\] to leave")
        child.send("echo repro-$((6*7)); tty\r")
        child.expect("repro-42")
        child.expect("/dev/ttyS0")  # typed into the guest's own serial console
        child.send("\x1d")
        child.expect(r"left the console: you pressed Ctrl-\]; destroying refvm-")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    folder = artifacts / "boot_refguest-uefi-qemu"
    assert "repro-42" in (folder / "console.log").read_text()  # the session is logged too
    assert list(scratch.iterdir()) == [], "repro left scratch files behind"
    ps = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(scratch) not in ps, "repro left its QEMU running"
    assert str(scratch) not in by_hand, "the lines name the run's directory, gone by now"
    by_hand_vm(by_hand, (folder / "command.txt").read_text().splitlines(), tmp_path / "person")
