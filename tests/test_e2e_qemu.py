"""End to end: the real `refvm run` boots the reference guest under QEMU and reads its console.

These boot real VMs (TCG here, about 20 s each), so they are marked ``vm``.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.catalog import load_guests
from harness.images.cache import ImageCache
from harness.paths import cache_dir

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU not installed"),
]


@pytest.fixture(scope="module")
def refguest_image() -> Path:
    guest, = load_guests(["refguest"])
    return ImageCache(cache_dir(), log=lambda _t: None).prepare(guest)


def refvm_run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, ET.Element]:
    """Run `refvm run` in a subprocess with its own scratch root; return (process, junit)."""
    junit = tmp_path / "junit.xml"
    env = dict(os.environ, REFVM_TMP=str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--artifacts", str(tmp_path / "artifacts"),
         *([] if "--guest" in args else ["--guest", "refguest"]), *args,
         "--junitxml", str(junit), "-p", "no:cacheprovider"],
        capture_output=True, text=True, env=env, timeout=900)
    return proc, ET.parse(junit).getroot()


def assert_nothing_left(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    assert list(scratch.iterdir()) == [], "the run left scratch files behind"
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(scratch) not in ps, "a hypervisor of the run is still running"


def properties(case: ET.Element) -> dict:
    return {p.get("name"): p.get("value") for p in case.iter("property")}


def test_boot_passes_and_reports_figures(tmp_path, refguest_image):
    from tests.report_checks import check_boot_csm_report

    proc, junit = refvm_run(tmp_path, "--scenario", "boot", "--firmware", "csm")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    case, = junit.iter("testcase")
    assert case.get("name") == "boot[refguest-csm-qemu]"
    props = properties(case)
    assert props["guest_firmware"] == "BIOS" and props["exit"] == "poweroff"
    assert float(props["login_seconds"]) > 0
    log = Path(props["console_log"]).read_text()
    assert "refguest login:" in log and "rv-console-7731" not in log
    check_boot_csm_report(tmp_path / "artifacts", refguest_image)
    # progress: a line as the case starts and one as it ends, no pytest dot for it
    assert "refvm: start boot[refguest-csm-qemu] (1 of 1)" in proc.stdout
    assert re.search(r"refvm: \[1/1\] PASS boot\[refguest-csm-qemu\] [\d.]+ s \(login ",
                     proc.stdout), proc.stdout[-2000:]
    assert_nothing_left(tmp_path)


def test_wrong_password_is_a_fast_guest_failure_with_the_console_in_junit(tmp_path,
                                                                         refguest_image):
    from harness.hostdata import file_sha256

    guest = tmp_path / "wrongpw.yaml"
    guest.write_text(f"""\
name: wrongpw
family: linux
image:
  path: {refguest_image}
  sha256: {file_sha256(refguest_image)}
firmware: [csm]
console:
  user: root
  password: not-the-password
""")
    proc, junit = refvm_run(tmp_path, "--guest", str(guest), "--scenario", "boot")
    assert proc.returncode == 1
    case, = junit.iter("testcase")
    failure = case.find("failure")
    assert failure is not None, ET.tostring(case, encoding="unicode")[:2000]
    assert "[guest] the guest rejected the login of 'root'" in failure.get("message", "") + \
        (failure.text or "")
    props = properties(case)
    assert props["category"] == "guest" and "rejected the login" in props["reason"]
    assert float(props.get("login_seconds", 0)) == 0  # never logged in
    assert "not-the-password" not in Path(props["console_log"]).read_text()
    system_out = "".join(case.find("system-out").itertext())
    assert "refguest login:" in system_out and "Login incorrect" in system_out
    assert_nothing_left(tmp_path)


def test_missing_firmware_is_an_infra_error(tmp_path, refguest_image, monkeypatch):
    """A host problem (here: an unknown QEMU binary) is a pytest *error*, category infra."""
    proc, junit = refvm_run(tmp_path, "--scenario", "boot", "--firmware", "csm",
                            "--qemu-binary", "/nonexistent/qemu-system-x86_64")
    assert proc.returncode == 1
    case, = junit.iter("testcase")
    assert case.find("error") is not None, ET.tostring(case, encoding="unicode")[:2000]
    props = properties(case)
    assert props["category"] == "infra" and "qemu-system-x86_64 not found" in props["reason"]
    assert_nothing_left(tmp_path)
