"""``refvm doctor``: is this host ready to run the suite, and if not, what exactly to do.

Every check prints one line: ok / FAIL (blocks runs) / warn (limits runs), what was found, and
for a problem the command that fixes it. On FreeBSD it checks what bhyve needs (release, vmm,
nmdm, tap and bridge kernel modules, firmware packages, root); on Linux the QEMU equivalents
(QEMU, OVMF, SeaBIOS, KVM's verdict, the image-building tools). Commands are run through an
injectable runner so the FreeBSD checks are tested on Linux with recorded outputs.
"""
from __future__ import annotations

import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil

from . import firmware as fw
from .backends.bhyve.caps import BhyveCaps, run_quietly
from .errors import InfraError

OK, FAIL, WARN = "ok", "FAIL", "warn"
MIN_FREE_MEMORY = 2 << 30  # the suite's VMs use 512 MiB each; leave room for the host


@dataclass(frozen=True)
class Check:
    status: str
    what: str
    found: str
    fix: str = ""

    def __str__(self) -> str:
        line = f"{self.status:4}  {self.what}: {self.found}"
        return line + (f"\n      fix: {self.fix}" if self.fix and self.status != OK else "")


Runner = Callable[[list], tuple]


def _files(candidates: fw.FirmwareCandidates, what: str) -> Check:
    try:
        found = candidates.find()
    except InfraError:
        return Check(FAIL, what, "not found", candidates.package)
    paths = (found.code, found.vars_template) if isinstance(found, fw.UefiPair) else (found,)
    return Check(OK, what, ", ".join(str(p) for p in paths))


def _tool(name: str, package: str, what: str, status_if_missing: str = FAIL) -> Check:
    path = shutil.which(name)
    return Check(OK, what, path) if path else \
        Check(status_if_missing, what, f"{name} not found", f"apt-get install {package}")


def _memory_check(free_bytes: int | None) -> Check:
    if free_bytes is None:
        return Check(WARN, "free memory", "unknown")
    found = f"{free_bytes >> 20} MiB available"
    if free_bytes < MIN_FREE_MEMORY:
        return Check(WARN, "free memory", found, "free memory or run fewer cases at once")
    return Check(OK, "free memory", found)


def linux_checks(cache_dir: Path | None = None) -> list[Check]:
    checks = [
        _tool("qemu-system-x86_64", "qemu-system-x86", "QEMU"),
        _files(fw.QEMU_OVMF, "UEFI firmware (OVMF)"),
        _files(fw.QEMU_SEABIOS, "legacy BIOS (SeaBIOS, the CSM path)"),
    ]
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        verdict = _kvm_verdict(cache_dir)
        checks.append(Check(OK if verdict.startswith("usable") else WARN, "KVM", verdict,
                            "runs use TCG (slower, but correct)"))
    else:
        checks.append(Check(WARN, "KVM", "/dev/kvm missing or not accessible",
                            "load kvm_intel/kvm_amd, or accept TCG (slower, but correct)"))
    for name, package in (("xorriso", "xorriso"), ("mformat", "mtools"),
                          ("dpkg-deb", "dpkg"), ("apt-get", "apt")):
        checks.append(_tool(name, package, f"reference guest build: {name}"))
    checks.append(_memory_check(available_memory()))
    checks.append(_tool("virsh", "libvirt-clients", "libvirt client (optional)", WARN))
    return checks


def _kvm_verdict(cache_dir: Path | None) -> str:
    import json

    try:
        verdict = json.loads(((cache_dir or Path()) / "accel.json").read_text())
    except (OSError, ValueError):
        return "not probed yet (the first run boots the reference guest under KVM to decide)"
    return ("usable: " if verdict.get("kvm") else "not usable: ") + verdict.get("why", "")


# FreeBSD: kernel modules bhyve needs, as kldstat -m names them, and the module to load.
FREEBSD_MODULES = (
    ("vmm", "vmm", "the bhyve hypervisor"),
    ("nmdm", "nmdm", "null-modem consoles"),
    ("if_tap", "if_tap", "tap interfaces for virtio-net"),
    ("if_bridge", "if_bridge", "the bridge the taps join"),
)


def freebsd_checks(runner: Runner = run_quietly, euid: int | None = None,
                   bhyve: str = "bhyve") -> list[Check]:
    checks = []
    status, release = runner(["freebsd-version", "-u"])
    checks.append(Check(OK if status == 0 else FAIL, "FreeBSD release",
                        release.strip() or "unknown"))
    for module, kld, why in FREEBSD_MODULES:
        loaded = runner(["kldstat", "-q", "-m", module])[0] == 0
        if not loaded and module == "if_tap":  # FreeBSD 12+: tap lives in if_tuntap
            loaded = runner(["kldstat", "-q", "-m", "if_tuntap"])[0] == 0
        checks.append(Check(OK if loaded else FAIL, f"kernel module {module} ({why})",
                            "loaded" if loaded else "not loaded",
                            f"kldload {kld}  (and add {kld}_load=\"YES\" to /boot/loader.conf)"))
    try:
        caps = BhyveCaps.probe(runner, bhyve)
        checks.append(Check(OK, "bhyve", f"FreeBSD {caps.release_name}: "
                                         f"{len(caps.emulations)} PCI emulations, UEFI vars file "
                                         f"{'supported' if caps.bootrom_vars else 'unsupported'}"))
    except InfraError as err:
        checks.append(Check(FAIL, "bhyve", str(err), "bhyve is in the base system: check PATH"))
    checks.append(_files(fw.BHYVE_UEFI_PAIR, "UEFI firmware (edk2-bhyve)"))
    checks.append(_csm_check())
    euid = os.geteuid() if euid is None else euid
    checks.append(Check(OK if euid == 0 else FAIL, "privileges",
                        "root" if euid == 0 else f"uid {euid}", "run as root: bhyve needs it"))
    status, text = runner(["sysctl", "-n", "vm.stats.vm.v_free_count", "hw.pagesize"])
    try:
        free_pages, page_size = (int(x) for x in text.split()[:2])
        checks.append(_memory_check(free_pages * page_size))
    except ValueError:
        checks.append(_memory_check(None))
    return checks


def _csm_check() -> Check:
    try:
        return Check(OK, "UEFI CSM firmware (legacy BIOS path)", str(fw.BHYVE_UEFI_CSM.find()))
    except InfraError:
        return Check(WARN, "UEFI CSM firmware (legacy BIOS path)", "not found: csm cases skip",
                     "pass --csm-firmware PATH to a pinned BHYVE_UEFI_CSM.fd "
                     "(uefi-edk2-bhyve-csm, no longer packaged)")


def checks_for_this_host(cache_dir: Path | None = None) -> list[Check]:
    system = platform.system()
    if system == "FreeBSD":
        return freebsd_checks()
    if system == "Linux":
        return linux_checks(cache_dir=cache_dir)
    return [Check(FAIL, "host", f"{system} is not supported", "use FreeBSD (bhyve) or Linux")]


def available_memory() -> int | None:
    """Bytes of memory free for new VMs (psutil: Linux's MemAvailable, FreeBSD's free +
    inactive + laundry pages), or None when the host will not say."""
    try:
        return int(psutil.virtual_memory().available)
    except (OSError, RuntimeError, AttributeError):  # a doctor check reports, never crashes
        return None
