"""`refvm repro` driven through a pty as a person would: a real QEMU boot of the reference
guest, the console handed over after the login step, a command typed, Ctrl-] to leave.
Marked ``vm`` (one TCG boot, about 25 s)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from harness.paths import REPO_ROOT

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU not installed"),
]


def test_repro_hands_the_console_over_and_leaves_nothing_behind(tmp_path):
    scratch, artifacts = tmp_path / "scratch", tmp_path / "artifacts"
    scratch.mkdir()
    child = pexpect.spawn(sys.executable, ["-m", "harness.cli", "repro", "boot[refguest-csm-qemu]",
                                           "--until", "login", "--accel", "tcg",
                                           "--artifacts", str(artifacts)],
                          cwd=str(REPO_ROOT), env=dict(os.environ, REFVM_TMP=str(scratch)),
                          encoding="utf-8", timeout=240)
    try:
        child.expect(r"refvm: to start the same VM by hand:\r\n(qemu-img create [^\r]*)\r\n"
                     r"(qemu-system-x86_64 [^\r]*)\r\n")
        by_hand = child.match.group(1) + "\n" + child.match.group(2)  # overlay, then QEMU
        child.expect(r"running 1 of \d+ step\(s\): login")
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
    folder = artifacts / "boot_refguest-csm-qemu"
    assert (folder / "command.txt").read_text().strip() == by_hand  # the exact command line
    assert "repro-42" in (folder / "console.log").read_text()  # the session is logged too
    assert list(scratch.iterdir()) == [], "repro left scratch files behind"
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(scratch) not in ps, "repro left its QEMU running"
