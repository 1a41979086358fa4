"""Firmware files: find them, and make the per-VM writable UEFI variable store.

UEFI NVRAM is two files: a read-only CODE image shared by every VM, and a VARS file each VM
writes to. The VARS copy must be exactly the size of the firmware's own template: a mismatched
store is refused here, before the VM starts, because the firmware cannot recover from it at run
time (bhyve's UEFI aborts; OVMF silently resets variables).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import InfraError


@dataclass(frozen=True)
class UefiPair:
    code: Path
    vars_template: Path


@dataclass(frozen=True)
class FirmwareCandidates:
    """Places a firmware can live, in order of preference, and the package that provides it."""

    what: str
    package: str
    candidates: tuple

    def find(self):
        for candidate in self.candidates:
            if all(Path(p).is_file() for p in _paths(candidate)):
                return candidate
        tried = ", ".join(str(p) for c in self.candidates for p in _paths(c))
        raise InfraError(f"{self.what} not found (looked for {tried}); "
                         f"install it with: {self.package}")


def _paths(candidate):
    return (candidate.code, candidate.vars_template) if isinstance(candidate, UefiPair) \
        else (candidate,)


QEMU_OVMF = FirmwareCandidates("OVMF (UEFI for QEMU)", "apt-get install ovmf", (
    UefiPair(Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.fd")),
    UefiPair(Path("/usr/share/OVMF/OVMF_CODE.fd"), Path("/usr/share/OVMF/OVMF_VARS.fd")),
    UefiPair(Path("/usr/share/edk2/ovmf/OVMF_CODE.fd"), Path("/usr/share/edk2/ovmf/OVMF_VARS.fd")),
))

QEMU_SEABIOS = FirmwareCandidates("SeaBIOS (legacy BIOS for QEMU)", "apt-get install seabios", (
    Path("/usr/share/seabios/bios-256k.bin"),
    Path("/usr/share/qemu/bios-256k.bin"),
))


def check_vars_file(vars_file: Path, template: Path) -> None:
    """Refuse a VARS file whose size differs from the firmware's template."""
    want, have = template.stat().st_size, vars_file.stat().st_size
    if want != have:
        raise InfraError(f"UEFI vars file {vars_file} is {have} bytes but the firmware's "
                         f"template {template} is {want} bytes; refusing to boot with it "
                         f"(make a fresh copy of the template)")


def make_vars_copy(template: Path, dest: Path) -> Path:
    """Give one VM its own writable copy of the VARS template (never share or edit the template)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, dest)
    dest.chmod(0o600)
    check_vars_file(dest, template)
    return dest


# bhyve (FreeBSD ports sysutils/edk2, flavour bhyve, package edk2-bhyve): the port installs
# BHYVE_UEFI.fd, BHYVE_UEFI_CODE.fd and BHYVE_UEFI_VARS.fd in share/edk2-bhyve and links the
# same names into share/uefi-firmware "for backwards compatibility" (its Makefile).
_EDK2_BHYVE = Path("/usr/local/share/edk2-bhyve")
_UEFI_FIRMWARE = Path("/usr/local/share/uefi-firmware")

BHYVE_UEFI_PAIR = FirmwareCandidates(
    "bhyve UEFI firmware with a variable store (BHYVE_UEFI_CODE.fd + BHYVE_UEFI_VARS.fd)",
    "pkg install edk2-bhyve", (
        UefiPair(_EDK2_BHYVE / "BHYVE_UEFI_CODE.fd", _EDK2_BHYVE / "BHYVE_UEFI_VARS.fd"),
        UefiPair(_UEFI_FIRMWARE / "BHYVE_UEFI_CODE.fd", _UEFI_FIRMWARE / "BHYVE_UEFI_VARS.fd"),
    ))

# One image, no variable store: for hosts whose bhyve cannot take a VARS file.
BHYVE_UEFI_SINGLE = FirmwareCandidates(
    "bhyve UEFI firmware (BHYVE_UEFI.fd)", "pkg install edk2-bhyve", (
        _EDK2_BHYVE / "BHYVE_UEFI.fd",
        _UEFI_FIRMWARE / "BHYVE_UEFI.fd",
    ))

# UEFI with the legacy-BIOS CSM: package uefi-edk2-bhyve-csm, gone from ports since April 2024
# (upstream EDK2 dropped CSM in December 2023). Only an old install or a pinned copy has it.
BHYVE_UEFI_CSM = FirmwareCandidates(
    "bhyve UEFI firmware with CSM (BHYVE_UEFI_CSM.fd)",
    "no package since April 2024: keep a pinned copy of uefi-edk2-bhyve-csm's "
    "BHYVE_UEFI_CSM.fd and pass its path to the bhyve backend (csm_firmware=PATH)", (
        _UEFI_FIRMWARE / "BHYVE_UEFI_CSM.fd",
    ))
