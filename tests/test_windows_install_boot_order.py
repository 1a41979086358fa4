"""The installer's VM must let OVMF reach the installer ISO after the empty system disk.

A real boot under OVMF (no Windows here: the ISOs are small stand-ins made with xorriso). The
install VM gives the system disk the first boot priority, so that once Windows is on it the
VM boots Windows, not the installer again. OVMF turns QEMU's bootorder into its BootOrder and
drops the PCI boot options that order does not name (OvmfPkg QemuBootOrderLib): a CD-ROM with
no bootindex would never be tried, and the install would end in "No bootable option". What
this checks is the firmware's own word on the console that it tried the installer's CD-ROM
after the disk."""
from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.backends.qemu.backend import QemuBackend
from harness.console.log import ConsoleLog
from harness.console.serial import SerialConsole
from harness.images.windows.install import install_spec

# OVMF's words for each option it tries (a stand-in disc fails to load: it is not bootable).
LOADING = r'BdsDxe: (?:loading|failed to load) Boot[0-9A-F]{4} "(?P<what>[^"]*)" from (?P<path>\S+)'
NO_OPTION = r"BdsDxe: No bootable option or device was found|UEFI Interactive Shell"


def stand_in_iso(path: Path, label: str) -> Path:
    """A small ISO 9660 image (not bootable: the firmware trying it is what is checked)."""
    tree = path.with_suffix(".d")
    tree.mkdir()
    (tree / "README.TXT").write_text(f"{label}: a stand-in for the installer's disc\n")
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-V", label, "-o", str(path),
                    str(tree)], check=True, capture_output=True, timeout=60)
    return path


def installer_vm(tmp_path: Path):
    system = tmp_path / "system.raw"
    with open(system, "wb") as disk:
        disk.truncate(64 << 20)
    guest = SimpleNamespace(boot_bus="ahci-hd", memory=256 << 20, cpus=1, firmware=("uefi",),
                            utc_clock=False)
    spec = install_spec(guest, f"refvm-cd-{uuid.uuid4().hex[:6]}", system,
                        stand_in_iso(tmp_path / "installer.iso", "INSTALLER"),
                        stand_in_iso(tmp_path / "answer.iso", "ANSWER"), None,
                        tmp_path / "w", tmp_path / "logs")
    return spec


def test_each_ahci_disc_has_its_own_port_and_only_the_installer_follows_the_disk(tmp_path):
    devices = [arg for arg in QemuBackend(accel="tcg").argv(installer_vm(tmp_path))
               if arg.startswith("ide-")]
    # one unit per AHCI port: a second disc on ide.0 stops QEMU before it starts
    assert devices == ["ide-hd,drive=disk0,bus=ide.0,bootindex=0",
                       "ide-cd,drive=disk1,bus=ide.1,bootindex=1",
                       "ide-cd,drive=disk2,bus=ide.2"]


@pytest.mark.vm
def test_ovmf_tries_the_installer_cd_after_the_empty_system_disk(tmp_path):
    spec = installer_vm(tmp_path)
    spec.workdir.mkdir()
    spec.logdir.mkdir()
    machine = QemuBackend(accel="tcg").start(spec)
    log = ConsoleLog(spec.logdir / "console.log")
    try:
        console = SerialConsole(machine.open_console("com1"), log)
        machine.resume()
        tried, paths = [], []
        while not any("DVD-ROM" in what for what in tried):
            _, match = console.expect([LOADING, NO_OPTION], timeout=120,
                                      what="the firmware's boot attempts")
            assert match.re.pattern == LOADING, f"{match.group(0)} after trying {tried}"
            tried.append(match.group("what"))
            paths.append(match.group("path"))
        assert "HARDDISK" in tried[0], tried  # the system disk first
        # the installer's disc is the first CD-ROM (SATA port 1); the answer disc is not booted
        assert "Sata(0x1," in paths[-1], (tried, paths)
    finally:
        machine.destroy()
