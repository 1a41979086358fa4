"""`refvm run --release FILE` for real: QEMU boots the reference guest (one TCG boot, about
25 s), the FreeBSD guest's cases skip here (its image cannot be had offline; the QEMU backend
has no bhyveload), and report.json/md/html say which expectations held. Marked ``vm``."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from harness.paths import REPO_ROOT

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU not installed"),
]

RELEASE = """\
release: "14.3"
description: the reference guest must boot; FreeBSD's cases skip on this Linux host
backend: qemu
guests: [refguest, freebsd-14.3]
firmware: [csm, bhyveload]
scenarios: [boot]
expected_skips:
  - guest: freebsd-14.3
    firmware: csm
    reason_pattern: 'image not in the cache and downloads are off'
    why: "right: no image of FreeBSD here, and --offline"
  - guest: freebsd-14.3
    firmware: bhyveload
    reason: bhyveload needs a newer moon
    why: "wrong on purpose"
"""


def test_a_release_run_reports_which_expectations_held(tmp_path):
    (tmp_path / "scratch").mkdir()
    release, artifacts = tmp_path / "release.yaml", tmp_path / "artifacts"
    release.write_text(RELEASE)
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--release", str(release), "--accel",
         "tcg", "--offline", "--artifacts", str(artifacts), "-j", "1", "-p", "no:cacheprovider"],
        cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=600,
        env=dict(os.environ, REFVM_TMP=str(tmp_path / "scratch")))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    report = json.loads((artifacts / "report.json").read_text())
    results = {case["id"]: case for case in report["cases"]}
    assert results["boot[refguest-csm-qemu]"]["result"] == "pass"
    section = report["release"]
    assert [e["id"] for e in section["passed"]] == ["boot[refguest-csm-qemu]"]
    right, wrong = section["expected_skips"]
    assert right["held"] == ["boot[freebsd-14.3-csm-qemu]"], results[
        "boot[freebsd-14.3-csm-qemu]"]["reason"]
    assert wrong["held"] == []
    other, = section["skipped_for_another_reason"]
    assert other["id"] == "boot[freebsd-14.3-bhyveload-qemu]" and other["line"] == 12
    assert other["reason"] == "the qemu backend has no bhyveload firmware"
    assert section["unexpected_skips"] == section["failed"] == section["missing"] == []
    assert section["verdict"] == ("release 14.3 does not hold: 1 skipped for another reason; "
                                  "1 passed, 1 skipped as expected, 0 not applicable")
    assert f"refvm: {section['verdict']}; details in" in proc.stderr
    md = (artifacts / "report.md").read_text()
    assert f"**{section['verdict']}**" in md
    assert "- boot[freebsd-14.3-bhyveload-qemu]: the qemu backend has no bhyveload firmware " \
           "(expected by line 12: guest freebsd-14.3, firmware bhyveload: reason " \
           "'bhyveload needs a newer moon')" in md
    html = (artifacts / "report.html").read_text()
    assert '<p class="verdict broken">release 14.3 does not hold' in html
    assert "<h3>Skipped for another reason than expected</h3>" in html
    assert list((tmp_path / "scratch").iterdir()) == []
