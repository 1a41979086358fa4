"""The unattended install as a cached image build, and the plans of the install and test boots.

`refvm images fetch` runs the install through the real QEMU backend against a TEST DOUBLE of
QEMU playing the installer VM (tests/fake_qemu_windows.py, FAKE_WINDOWS_INSTALL): the CD
prompt answered on COM1, progress by stage, the marker from the answer disc read on COM2, the
power-off seen as QEMU's exit, the image cached. Only simulated: Windows Setup itself. The
bhyve plan is checked against bhyve(8) argument by argument; the libvirt XML by its elements.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.errors import InfraError
from harness.images.windows.install import SAC_BOOTS_MAX, watch_install
from tests.qemu_doubles import REPO, fake_qemu

FAKE = REPO / "tests" / "fake_qemu_windows.py"
PASSWORD = "Inst4ll-pw-88c1"
EVAL_SHA = "3e4fa6d8507b554856fc9ca6079cc402df11a8b79344871669f0251535255325"


def install(tmp_path: Path, mode: str):
    iso = tmp_path / "SERVER_EVAL_x64FRE_en-us.iso"
    iso.write_bytes(b"installer ISO stand-in " * 64)
    sha = hashlib.sha256(iso.read_bytes()).hexdigest()
    guest = tmp_path / "win.yaml"
    guest.write_text(
        f"name: win\nfamily: windows\nimage: {{install: windows}}\nwindows:\n"
        f"  iso: {{url: 'https://example.org/x.iso', sha256: {sha}}}\n  image_index: 2\n"
        f"  disk_size: 1G\n  install_timeout: 60\nmemory: 1G\nfirmware: [uefi]\n"
        f"boot_bus: ahci-hd\nutc_clock: false\nconsole: {{user: Administrator, password: "
        f"'{PASSWORD}'}}\n")
    log = tmp_path / "double.jsonl"
    env = dict(os.environ, REFVM_CACHE=str(tmp_path / "cache"), FAKE_WINDOWS_INSTALL=mode,
               FAKE_WINDOWS_LOG=str(log))
    cli = [sys.executable, "-m", "harness.cli", "images"]
    imported = subprocess.run(cli + ["import", str(iso), "--guest", str(guest)], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0, imported.stderr
    proc = subprocess.run(cli + ["fetch", "--guest", str(guest), "--accel", "tcg",
                                 "--qemu-binary", str(fake_qemu(tmp_path, FAKE)),
                                 "--artifacts", str(tmp_path / "artifacts")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    said = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, said


def test_images_fetch_installs_windows_once_and_caches_it(tmp_path):
    proc, said = install(tmp_path, "ok")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    first = said[0]
    assert first["no_reboot"] is False  # Setup reboots: the VM must survive it
    assert first["cds"] == 2 and first["joliet_autounattend"] and first["ems"]
    assert {"cd_key": "\r"} in said  # "Press any key to boot from CD or DVD" answered
    out = proc.stdout
    assert "install win: Windows Setup, booted from the installer ISO (" in out
    assert "install win: installed Windows, boot 1 (EMS on) (" in out
    assert "install win: first logon done, powering off" in out
    images = tmp_path / "cache" / "images"
    built, = images.glob("win-*.raw")
    assert built.stat().st_size == 1 << 30 and f"win: ok {built}" in out
    assert not list(images.glob("refvm-install-*"))  # the scratch is gone
    logs = list((tmp_path / "artifacts").rglob("*.log"))
    assert {p.name for p in logs} >= {"console.log", "com2.log", "qemu.log"}
    for path in logs:
        assert PASSWORD.encode() not in path.read_bytes()
    assert PASSWORD not in out + proc.stderr
    again = subprocess.run([sys.executable, "-m", "harness.cli", "images", "verify", "--guest",
                            str(tmp_path / "win.yaml")], cwd=REPO, capture_output=True,
                           text=True, timeout=60,
                           env=dict(os.environ, REFVM_CACHE=str(tmp_path / "cache")))
    assert again.returncode == 0 and f"win: ok {built}" in again.stdout


def test_a_missed_cd_prompt_fails_the_install_in_the_firmwares_words(tmp_path):
    proc, said = install(tmp_path, "nokey")
    assert proc.returncode == 1
    assert "win: error: the Windows install of win failed at stage" in proc.stdout
    assert "BdsDxe: No bootable option or device was found." in proc.stdout
    assert not list((tmp_path / "cache" / "images").glob("win-*.raw"))
    assert not list((tmp_path / "cache" / "images").glob("refvm-install-*"))


def plan(backend: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "plan", "--backend", backend,
                           "--guest", "windows-server-2022-eval", "--scenario", "boot", "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items()
                               if k != "REFVM_WINDOWS_PASSWORD"})
    assert proc.returncode == 0, proc.stderr
    return {c["id"]: c for c in json.loads(proc.stdout)["cases"]}


def test_bhyve_plan_shows_the_install_and_the_test_boot_per_bhyve_8():
    """bhyve(8): hostbridge at slot 0 and lpc at 31 (Windows wants them there), ahci-cd for
    the ISOs, no -u (Windows keeps the RTC in local time), UEFI with a private vars copy,
    COM1 the console and COM2 the install's marker; the test boot on a private copy of the
    installed image, with no CD-ROMs."""
    cases = plan("bhyve")
    destroy, vars_copy, bhyve = cases["install[windows-server-2022-eval-uefi-bhyve]"]["commands"]
    name = bhyve[-1]
    assert destroy[1:] == [f"--vm={name}", "--destroy"] and vars_copy[0] == "cp"
    assert bhyve[1:8] == ["-c", "2", "-m", "4096M", "-H", "-w", "-A"] and "-u" not in bhyve
    slots = [bhyve[i + 1] for i, a in enumerate(bhyve) if a == "-s"]
    assert slots[0] == "0,hostbridge" and slots[-1] == "31,lpc"
    assert slots[1].startswith("2,ahci-hd,") and slots[1].endswith("/system.raw")
    assert slots[2].startswith("3,ahci-cd,") and slots[2].endswith(f"/{EVAL_SHA}.iso")
    assert slots[3].startswith("4,ahci-cd,") and slots[3].endswith("/answers.iso")
    lpc = [bhyve[i + 1] for i, a in enumerate(bhyve) if a == "-l"]
    assert [p.split(",")[0] for p in lpc] == ["com1", "com2", "bootrom"]
    assert lpc[2].split(",")[1].endswith("BHYVE_UEFI_CODE.fd") and lpc[2].split(",")[2] == \
        vars_copy[2]
    boot = cases["boot[windows-server-2022-eval-uefi-bhyve]"]["commands"][-1]
    slots = [boot[i + 1] for i, a in enumerate(boot) if a == "-s"]
    assert slots[0] == "0,hostbridge" and slots[-1] == "31,lpc" and len(slots) == 3
    assert slots[1].startswith("2,ahci-hd,") and "/private-0-windows-server-2022-eval-" in slots[1]
    assert "-u" not in boot


def test_libvirt_plan_of_the_install_restarts_on_reboot_and_attaches_the_isos_as_cdroms():
    pytest.importorskip("libvirt")  # without libvirt-python, plan cannot make libvirt's XML
    case = plan("libvirt")["install[windows-server-2022-eval-uefi-libvirt]"]
    if case["skip"] or case["error"]:
        pytest.skip(f"libvirt here: {case['skip'] or case['error']}")
    domain = ET.fromstring(case["details"])
    assert domain.findtext("on_reboot") == "restart" and domain.findtext("on_crash") == "destroy"
    assert domain.find("clock").get("offset") == "localtime"
    disks = domain.findall("devices/disk")
    # the system disk; the installer, the answer disc and virtio-win as SATA CD-ROMs
    assert [(d.get("device"), d.find("target").get("bus")) for d in disks] == \
        [("disk", "sata"), ("cdrom", "sata"), ("cdrom", "sata"), ("cdrom", "sata")]
    assert disks[1].find("source").get("file").endswith(f"/{EVAL_SHA}.iso")
    # the system disk, then the installer (OVMF boots nothing the order leaves out)
    assert [d.find("boot").get("order") if d.find("boot") is not None else None
            for d in disks] == ["1", "2", None, None]


class ScriptedConsole:
    """Test double of SerialConsole for watch_install: plays (pattern index, text) waits."""

    def __init__(self, waits):
        self.waits = list(waits)
        self.sent = []
        self.log = SimpleNamespace(tail=lambda lines=20: "SAC>", note=lambda text: None)

    def try_expect(self, patterns, timeout, what):
        index = self.waits.pop(0) if self.waits else None
        return (None, None) if index is None else (index, re.search(".*", "line"))

    def send(self, text):
        self.sent.append(text)


def test_setup_restarting_in_a_loop_fails_the_install_in_words_not_after_hours():
    guest = SimpleNamespace(name="win", windows=SimpleNamespace(install_timeout=14400))
    com1 = ScriptedConsole([0] + [1] * (SAC_BOOTS_MAX + 1))  # the CD prompt, then SAC again
    com2 = ScriptedConsole([])
    ticks = iter(range(0, 10**6, 5))
    with pytest.raises(InfraError, match=rf"restarting in a loop: SAC started "
                                         rf"{SAC_BOOTS_MAX + 1} times"):
        watch_install(com1, com2, "marker", guest, lambda line: None, clock=lambda: next(ticks))
    assert com1.sent == ["\r"]


def test_an_install_with_as_many_sac_starts_as_allowed_then_the_marker_is_not_a_loop():
    guest = SimpleNamespace(name="win", windows=SimpleNamespace(install_timeout=14400))
    com1 = ScriptedConsole([0] + [1] * SAC_BOOTS_MAX + [None])
    com2 = ScriptedConsole([None] * (SAC_BOOTS_MAX + 1) + [0])
    ticks = iter(range(0, 10**6, 5))
    watch_install(com1, com2, "marker", guest, lambda line: None, clock=lambda: next(ticks))
