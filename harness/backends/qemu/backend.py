"""The QEMU backend: a first-class hypervisor for Linux hosts, not a mock of bhyve.

The VM is built the way bhyve builds it where QEMU allows: q35 machine, COM1 as the console,
UEFI as a read-only CODE image plus a per-VM VARS copy, and SeaBIOS standing in for bhyve's
CSM firmware (the legacy BIOS path). QEMU starts paused (-S) and is resumed over QMP once the
console is attached, so nothing the firmware prints is lost.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from ... import firmware as fw
from ...errors import InfraError
from ...process import spawn, stop, tail_text
from ...vmspec import Disk, VmSpec
from ..base import Backend, ExitInfo, Machine
from .accel import choose as choose_accel
from .fifo import FifoConsole, make_fifos
from .qmp import QmpClient, connect_unix

QEMU_BINARY = "qemu-system-x86_64"

# QEMU's SHUTDOWN event reasons, in words (qapi/run-state.json: ShutdownCause).
SHUTDOWN_REASONS = {
    "guest-shutdown": "poweroff",
    "guest-reset": "reboot",
    "guest-panic": "panic",
    "host-signal": "killed",
    "host-qmp-quit": "killed",
    "host-error": "error",
}


class QemuBackend(Backend):
    name = "qemu"
    firmwares = ("uefi", "csm")

    def __init__(self, accel: str = "auto", cache_dir: Path | None = None,
                 binary: str = QEMU_BINARY, probe_image: Path | None = None,
                 ovmf: fw.FirmwareCandidates = fw.QEMU_OVMF,
                 seabios: fw.FirmwareCandidates = fw.QEMU_SEABIOS):
        self.binary = binary
        self.ovmf, self.seabios = ovmf, seabios
        self.requested_accel = accel
        self.cache_dir = cache_dir
        self.probe_image = probe_image
        self._accel = None

    # Host facts ------------------------------------------------------------------------------
    @property
    def accel(self):
        """The accelerator choice, probed once per backend (and cached per host boot)."""
        if self._accel is None:
            if shutil.which(self.binary) is None:
                raise InfraError(f"{self.binary} not found; install it with: "
                                 "apt-get install qemu-system-x86")
            self._accel = choose_accel(self.binary, self.requested_accel, self.cache_dir,
                                       self.probe_image)
        return self._accel

    def describe(self) -> str:
        try:
            version = subprocess.run([self.binary, "--version"], capture_output=True, text=True,
                                     timeout=10).stdout.splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            version = self.binary
        return f"{version}; accelerator {self.accel.name}: {self.accel.reason}"

    # Command line ----------------------------------------------------------------------------
    def command_lines(self, spec: VmSpec) -> list[list[str]]:
        return [self.argv(spec)]

    def argv(self, spec: VmSpec) -> list[str]:
        w = spec.workdir
        argv = [self.binary,
                "-name", f"guest={spec.name},debug-threads=on",
                "-uuid", spec.uuid,
                "-machine", "q35",
                "-accel", self.accel.name,
                "-cpu", "max" if self.accel.name == "tcg" else "host",
                "-smp", str(spec.cpus),
                "-m", f"{spec.memory_mib}M",
                "-nodefaults", "-no-user-config", "-display", "none",
                "-rtc", "base=utc" if spec.utc_clock else "base=localtime",
                "-no-reboot", "-S",
                "-qmp", f"unix:{w / 'qmp.sock'},server=on,wait=off",
                "-pidfile", str(w / "qemu.pid")]
        argv += self._firmware_args(spec)
        for port in spec.serials:
            if port.role == "console":  # FIFOs: see harness/console/fifo.py for why
                argv += ["-chardev", f"pipe,id={port.name},path={w / port.name}"]
            else:  # data ports: a socket the harness connects to when the step needs it
                argv += ["-chardev", f"socket,id={port.name},path={w / (port.name + '.sock')},"
                                     "server=on,wait=off"]
            argv += ["-serial", f"chardev:{port.name}"]
        for index, disk in enumerate(spec.disks):
            argv += _disk_args(index, disk)
        for index, nic in enumerate(spec.nics):
            # Port 0: the host picks a free loopback port (read back with `info usernet`).
            forward = ",hostfwd=tcp:127.0.0.1:0-:22" if nic.ssh_forward else ""
            argv += ["-netdev", f"user,id=net{index}{forward}",
                     "-device", f"virtio-net-pci,netdev=net{index},mac={nic.mac}"]
        return argv

    def _firmware_args(self, spec: VmSpec) -> list[str]:
        if spec.firmware == "uefi":
            pair = self.ovmf.find()
            return ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={pair.code}",
                    "-drive", f"if=pflash,format=raw,unit=1,file={spec.workdir / 'uefi-vars.fd'}"]
        if spec.firmware == "csm":
            return ["-bios", str(self.seabios.find())]
        raise InfraError(f"the qemu backend cannot boot firmware {spec.firmware!r}")

    # Lifecycle -------------------------------------------------------------------------------
    def start(self, spec: VmSpec) -> "QemuMachine":
        spec.workdir.mkdir(parents=True, exist_ok=True)
        spec.logdir.mkdir(parents=True, exist_ok=True)
        if spec.firmware == "uefi":
            fw.make_vars_copy(self.ovmf.find().vars_template, spec.workdir / "uefi-vars.fd")
        argv = self.argv(spec)
        for port in spec.serials:
            if port.role == "console":
                make_fifos(spec.workdir / port.name)
        (spec.logdir / "command.txt").write_text(" ".join(_quote(a) for a in argv) + "\n")
        return QemuMachine(spec, argv)


class QemuMachine(Machine):
    nvme_model = "QEMU NVMe Ctrl"  # hw/nvme/ctrl.c: fixed model number

    def __init__(self, spec: VmSpec, argv: list[str]):
        self.spec = spec
        self.log_path = spec.logdir / "qemu.log"
        self._consoles: list = []  # FifoConsole (COM1) and sockets (data ports)
        self.qmp = None
        self.proc = spawn(argv, self.log_path)
        try:
            self.qmp = QmpClient(spec.workdir / "qmp.sock")
        except InfraError as err:
            self.destroy()
            raise InfraError(f"QEMU failed to start: {err}; its log says:\n"
                             f"{tail_text(self.log_path)}") from None

    def host_address_for_guest(self) -> str:
        # QEMU user networking: connections to 10.0.2.2 go to the host's 127.0.0.1.
        return "10.0.2.2"

    def ssh_endpoint(self) -> tuple[str, int]:
        """The loopback port QEMU bound for the guest's port 22 (asked over QMP: the port was
        left to the host, so no other run can take it between choosing and binding)."""
        text = self.qmp.execute("human-monitor-command", **{"command-line": "info usernet"})
        found = re.search(r"TCP\[HOST_FORWARD\]\s+\d+\s+127\.0\.0\.1\s+(\d+)\s+\S+\s+22\b",
                          str(text))
        if not found:
            raise InfraError(f"{self.spec.name}: no SSH host forward in QEMU's user network "
                             "(the scenario attached no NIC for it?)")
        return "127.0.0.1", int(found.group(1))

    def open_console(self, port: str = "com1"):
        role = next((p.role for p in self.spec.serials if p.name == port), None)
        if role is None:
            raise InfraError(f"{self.spec.name} has no serial port {port}")
        if role == "console":
            stream = FifoConsole(self.spec.workdir / port)
        else:
            stream = connect_unix(self.spec.workdir / f"{port}.sock", 10.0)
        self._consoles.append(stream)
        return stream

    def resume(self) -> None:
        self.qmp.execute("cont")

    def poll(self) -> ExitInfo | None:
        code = self.proc.poll()
        return None if code is None else self._exit_info(code)

    def wait_exit(self, timeout: float) -> ExitInfo | None:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self._exit_info(code)

    def _exit_info(self, code: int) -> ExitInfo:
        event = self.qmp.last_event("SHUTDOWN") if self.qmp else None
        if code < 0:
            return ExitInfo("killed", code, f"QEMU killed by signal {-code}")
        if event:
            reason = event.get("data", {}).get("reason", "unknown")
            return ExitInfo(SHUTDOWN_REASONS.get(reason, "error"), code, f"QEMU: {reason}")
        return ExitInfo("error", code, "QEMU exited on its own: "
                        + (tail_text(self.log_path, 3).replace("\n", " | ") or "no message"))

    def destroy(self) -> None:
        stop(self.proc)
        for sock in self._consoles:
            sock.close()
        self._consoles.clear()
        if self.qmp:
            self.qmp.close()


def _disk_args(index: int, disk: Disk) -> list[str]:
    node = f"disk{index}"
    drive = f"file={disk.path},format={disk.format},if=none,id={node}," \
            f"readonly={'on' if disk.readonly else 'off'}"
    if disk.ephemeral:  # writes go to a temporary overlay QEMU deletes; the file is untouched
        drive += ",snapshot=on"
    extra = f",bootindex={0}" if disk.boot else ""
    if disk.sector_size:
        extra += f",logical_block_size={disk.sector_size},physical_block_size={disk.sector_size}"
    if disk.bus == "virtio-blk":
        serial = f",serial={disk.serial}" if disk.serial else ""
        device = f"virtio-blk-pci,drive={node}{serial}{extra}"
    elif disk.bus == "nvme":
        device = f"nvme,drive={node},serial={disk.serial or f'REFVM{index:04d}'}{extra}"
    elif disk.bus in ("ahci-hd", "ahci-cd"):
        kind = "ide-hd" if disk.bus == "ahci-hd" else "ide-cd"
        device = f"{kind},drive={node}{extra}"
    else:
        raise InfraError(f"the qemu backend has no disk bus {disk.bus!r}")
    return ["-drive", drive, "-device", device]


def _quote(arg: str) -> str:
    """Quote for *display* only (plans, repro notes): argv is never run through a shell."""
    import shlex
    return shlex.quote(arg)
