"""refvm doctor: one line per check, a fix for every problem; FreeBSD checks from recorded output."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from harness import firmware as fw
from harness.doctor import FAIL, OK, WARN, freebsd_checks, linux_checks
from tests.doubles_bhyve import SAMPLES, canned_runner


def freebsd_runner(sample: dict, loaded=("vmm", "nmdm", "if_tuntap", "if_bridge"),
                   free_pages=1_000_000):
    """Answers kldstat and sysctl too; everything else from the bhyve sample."""
    bhyve = canned_runner(sample)

    def run(argv):
        tool = Path(argv[0]).name
        if tool == "kldstat":
            return (0, "") if argv[-1] in loaded else (1, "")
        if tool == "sysctl":
            return 0, f"{free_pages}\n4096\n"
        return bhyve(argv)
    return run


def by_name(checks) -> dict:
    return {c.what.split(" (")[0]: c for c in checks}


def test_freebsd_host_ready():
    sample = SAMPLES["14.1"]
    checks = by_name(freebsd_checks(freebsd_runner(sample), euid=0))
    assert checks["FreeBSD release"].status == OK and "14.1" in checks["FreeBSD release"].found
    for module in ("vmm", "nmdm", "if_tap", "if_bridge"):
        assert checks[f"kernel module {module}"].status == OK  # if_tap via if_tuntap (12+)
    assert checks["bhyve"].status == OK and "UEFI vars file supported" in checks["bhyve"].found
    assert checks["privileges"].status == OK
    assert checks["free memory"].status == OK


def test_freebsd_problems_each_say_how_to_fix_them():
    sample = SAMPLES["14.1"]
    checks = by_name(freebsd_checks(freebsd_runner(sample, loaded=("nmdm",), free_pages=1000),
                                    euid=1001))
    vmm = checks["kernel module vmm"]
    assert vmm.status == FAIL and vmm.fix.startswith("kldload vmm")
    assert checks["kernel module if_bridge"].status == FAIL
    assert checks["privileges"].status == FAIL and "run as root" in checks["privileges"].fix
    assert checks["free memory"].status == WARN
    assert "fix: kldload vmm" in str(vmm)


def bhyve_firmware_in(monkeypatch, root: Path) -> None:
    """Point the bhyve firmware candidates into ``root``, so the checks do not depend on
    whether this host has edk2-bhyve installed."""
    pair = fw.BHYVE_UEFI_PAIR
    monkeypatch.setattr(fw, "BHYVE_UEFI_PAIR", fw.FirmwareCandidates(
        pair.what, pair.package,
        (fw.UefiPair(root / "BHYVE_UEFI_CODE.fd", root / "BHYVE_UEFI_VARS.fd"),)))
    csm = fw.BHYVE_UEFI_CSM
    monkeypatch.setattr(fw, "BHYVE_UEFI_CSM", fw.FirmwareCandidates(
        csm.what, csm.package, (root / "BHYVE_UEFI_CSM.fd",)))


def test_freebsd_firmware_checks_name_the_package(tmp_path, monkeypatch):
    bhyve_firmware_in(monkeypatch, tmp_path)  # empty: no firmware installed
    checks = by_name(freebsd_checks(freebsd_runner(SAMPLES["14.1"]), euid=0))
    uefi = checks["UEFI firmware"]
    assert uefi.status == FAIL and uefi.fix == "pkg install edk2-bhyve"
    csm = checks["UEFI CSM firmware"]
    assert csm.status == WARN and "--csm-firmware" in csm.fix


def test_freebsd_firmware_checks_find_installed_files(tmp_path, monkeypatch):
    bhyve_firmware_in(monkeypatch, tmp_path)
    for name in ("BHYVE_UEFI_CODE.fd", "BHYVE_UEFI_VARS.fd", "BHYVE_UEFI_CSM.fd"):
        (tmp_path / name).write_bytes(b"fd")
    checks = by_name(freebsd_checks(freebsd_runner(SAMPLES["14.1"]), euid=0))
    uefi, csm = checks["UEFI firmware"], checks["UEFI CSM firmware"]
    assert uefi.status == OK and uefi.found == (f"{tmp_path / 'BHYVE_UEFI_CODE.fd'}, "
                                                f"{tmp_path / 'BHYVE_UEFI_VARS.fd'}")
    assert csm.status == OK and csm.found == str(tmp_path / "BHYVE_UEFI_CSM.fd")


def test_linux_checks_on_this_host_are_real(tmp_path):
    checks = by_name(linux_checks(cache_dir=tmp_path))
    assert {"QEMU", "UEFI firmware", "legacy BIOS", "KVM", "free memory"} <= set(checks)
    qemu = shutil.which("qemu-system-x86_64")
    assert (checks["QEMU"].status, checks["QEMU"].found) == (
        (OK, qemu) if qemu else (FAIL, "qemu-system-x86_64 not found"))
    # never blocks: TCG always works; an empty cache has no KVM verdict yet
    kvm = checks["KVM"]
    assert kvm.status == WARN
    assert kvm.found.startswith("not probed yet" if os.access("/dev/kvm", os.R_OK | os.W_OK)
                                else "/dev/kvm missing")


def test_doctor_command_exit_status_follows_failures():
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "doctor"],
                          capture_output=True, text=True, timeout=60)
    failed = any(line.startswith("FAIL") for line in proc.stdout.splitlines())
    assert proc.returncode == (1 if failed else 0)
    assert proc.stdout.strip().splitlines()[-1].startswith("refvm: ")
