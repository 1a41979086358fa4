"""The unattended Windows install, run once by ``refvm images fetch`` (ImageCache's installer).

One VM on the backend the command names: a new sparse system disk (the boot disk, on the
guest's ``boot_bus``), the installer ISO, the answer disc (autounattend.xml, drivers) and the
virtio-win disc as AHCI CD-ROMs (bhyve: ahci-cd), COM1 as the console, COM2 for the completion
marker; guest reboots restart the VM (Setup reboots after copying files and after specialize).

What the host watches, on COM1: the firmware's "Press any key to boot from CD or DVD" (answered
with Enter: the ISO's UEFI boot image waits ~5 s for a key, then gives up), SAC starting (EMS
is on from the specialize pass), and failure words: OVMF's ``BdsDxe: failed to start Boot####
"Windows Boot Manager"`` and ``BdsDxe: No bootable option or device was found``, the UEFI
shell, ``BOOTMGR is missing``, ``The following file is missing or corrupted:``, a bugcheck.
Done: the marker on COM2 (written by the first logon) and then the hypervisor's own exit on
the guest's power-off. Progress (stage and elapsed time) goes to the log every minute; a time-out
quotes the last console lines, and so does Setup restarting in a loop (SAC starting over and
over: Setup's own errors are dialogs on the display, never on the serial line).
"""
from __future__ import annotations

import re
import shutil
import time
import uuid
from pathlib import Path

from ...console.log import ConsoleLog
from ...console.serial import SerialConsole
from ...errors import GuestFailure, InfraError
from ...families import family
from ...hostdata import make_scratch_disk
from ...ownership import make_owned
from ...vmspec import Disk, SerialPort, VmSpec
from .answer import DONE_MARKER, answer_for, autounattend_xml
from .disc import driver_files, write_answer_disc

PRESS_ANY_KEY = r"Press any key to boot from CD or DVD"
SAC_STARTED = r"Computer is booting, SAC started and initialized\."
BDS_STARTING = r"BdsDxe: starting Boot[0-9A-F]{4} \"[^\"\r\n]*\""
INSTALL_FAILURES = (
    r'BdsDxe: failed to start Boot[0-9A-F]{4} "Windows Boot Manager"[^\r\n]*',
    r"BdsDxe: No bootable option or device was found\.",
    r"UEFI Interactive Shell",
    r"BOOTMGR is missing",
    r"The following file is missing or corrupted:[^\r\n]*",
)
ANSWER_DRIVE = "E"  # D: the installer ISO, E: the answer disc (the CD-ROMs' order)
PROGRESS_EVERY = 60.0
# SAC starts on each boot of the installed system: after specialize and after OOBE, about
# twice (propolis PHD waits for it twice on a fresh image). Setup that fails after the
# windowsPE pass shows "Windows could not complete the installation" on the display only,
# and restarts when it is dismissed or times out: SAC starting again and again is all the
# serial line shows of it.
SAC_BOOTS_MAX = 5
POWEROFF_WAIT = 600.0


def install_spec(guest, name: str, system: Path, iso: Path, answer_disc: Path,
                 virtio: Path | None, workdir: Path, logdir: Path) -> VmSpec:
    """The installer's VM (no I/O): the system disk boots (empty at first, so the firmware
    falls through to the installer ISO, the one CD-ROM in the boot order; installed, it boots
    Windows), then the answer and driver CD-ROMs."""
    disks = [Disk(system, bus=guest.boot_bus, boot=True),
             Disk(iso, bus="ahci-cd", readonly=True, fallback_boot=True),
             Disk(answer_disc, bus="ahci-cd", readonly=True)]
    if virtio:
        disks.append(Disk(virtio, bus="ahci-cd", readonly=True))
    return VmSpec(name=name, memory_mib=guest.memory >> 20, cpus=guest.cpus,
                  firmware=guest.firmware[0], uuid=str(uuid.uuid4()), utc_clock=guest.utc_clock,
                  workdir=workdir, logdir=logdir, disks=tuple(disks),
                  serials=(SerialPort("com1", "console"), SerialPort("com2", "data")),
                  survive_reboot=True)


def marker_for(key: str) -> str:
    return f"{DONE_MARKER}-{key[:12]}"


class Installer:
    """ImageCache's ``installer``: installs a guest on the backend ``make_backend()`` gives
    (made only when an install runs); console logs under ``logroot``."""

    def __init__(self, make_backend, logroot: Path, key_of):
        self.make_backend, self.logroot, self.key_of = make_backend, Path(logroot), key_of
        self._backend = None

    @property
    def backend(self):
        if self._backend is None:
            self._backend = self.make_backend()
        return self._backend

    def __call__(self, guest, iso: Path, virtio: Path | None, target: Path, log) -> None:
        key = self.key_of(guest)
        scratch = make_owned("install", root=target.parent)  # beside the target: a rename
        vmdir = make_owned("install")  # sockets: a short path in the temp root
        try:
            system = scratch / "system.raw"
            make_scratch_disk(system, guest.windows.disk_size)
            marker = marker_for(key)
            disc = scratch / "answers.iso"
            write_answer_disc(disc, autounattend_xml(answer_for(guest, marker, ANSWER_DRIVE)),
                              driver_files(virtio, guest.windows.driver_os) if virtio else None)
            spec = install_spec(guest, vmdir.name, system, iso, disc, virtio,
                                vmdir, self.logroot / f"install-{guest.name}")
            log(f"installing {guest.name} on {self.backend.name} (console log: "
                f"{spec.logdir / 'console.log'})")
            self._run(spec, guest, marker, log)
            system.replace(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            shutil.rmtree(vmdir, ignore_errors=True)

    def _run(self, spec: VmSpec, guest, marker: str, log) -> None:
        machine = self.backend.start(spec)
        console_log = ConsoleLog(spec.logdir / "console.log", secrets=guest.console.secrets)
        marker_log = ConsoleLog(spec.logdir / "com2.log")
        try:
            com1 = SerialConsole(machine.open_console("com1"), console_log,
                                 family("windows").failure_patterns + INSTALL_FAILURES,
                                 lambda: f"the hypervisor exited: {machine.wait_exit(5)}")
            com2 = SerialConsole(machine.open_console("com2"), marker_log)
            machine.resume()
            watch_install(com1, com2, marker, guest, log)
            info = machine.wait_exit(POWEROFF_WAIT)
            if info is None or info.kind != "poweroff":
                raise InfraError(f"the Windows install wrote its marker but the VM did not power "
                                 f"off ({info or 'still running'}); last console lines:\n"
                                 f"{console_log.tail()}")
            log(f"install of {guest.name} done")
        finally:
            console_log.close()
            marker_log.close()
            machine.destroy()


def watch_install(com1, com2, marker: str, guest, log, clock=time.monotonic) -> None:
    """Until the marker arrives on COM2: the CD prompt answered, progress logged, failures
    and the time-out in words."""
    timeout = guest.windows.install_timeout
    started = clock()
    stage, boots, said = "firmware", 0, started
    try:
        while True:
            elapsed = clock() - started
            if elapsed > timeout:
                raise InfraError(f"the Windows install of {guest.name} did not finish within "
                                 f"{timeout:.0f}s (stage: {stage}); last console lines:\n"
                                 f"{com1.log.tail()}")
            index, match = com1.try_expect([PRESS_ANY_KEY, SAC_STARTED, BDS_STARTING], 2.0,
                                           "install progress")
            if index == 0:
                com1.send("\r")
                stage = "Windows Setup, booted from the installer ISO"
            elif index == 1:
                boots += 1
                stage = f"installed Windows, boot {boots} (EMS on)"
                if boots > SAC_BOOTS_MAX:
                    raise InfraError(
                        f"the Windows install of {guest.name} is restarting in a loop: SAC "
                        f"started {boots} times without the first logon's marker (a Setup "
                        f"error such as \"Windows could not complete the installation\" is "
                        f"shown on the display only; check the answer file); last console "
                        f"lines:\n{com1.log.tail()}")
            elif index == 2:
                com1.log.note(f"firmware: {match.group(0)}")
            if com2.try_expect([re.escape(marker)], 0.05, "the install's marker")[0] == 0:
                log(f"install {guest.name}: first logon done, powering off "
                    f"({clock() - started:.0f}s)")
                return
            if index is not None or clock() - said >= PROGRESS_EVERY:
                said = clock()
                log(f"install {guest.name}: {stage} ({said - started:.0f}s)")
    except GuestFailure as err:  # a failure word, or the VM gone: the install failed
        raise InfraError(f"the Windows install of {guest.name} failed at stage {stage!r}: "
                         f"{err}") from None
