"""The QEMU backend: a first-class hypervisor for Linux hosts, not a mock of bhyve.

The VM is built the way bhyve builds it where QEMU allows: q35 machine, COM1 as the console,
UEFI as a read-only CODE image plus a per-VM VARS copy, and SeaBIOS standing in for bhyve's
CSM firmware (the legacy BIOS path). QEMU starts paused (-S) and is resumed over QMP once the
console is attached, so nothing the firmware prints is lost.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

from ... import firmware as fw
from ...errors import InfraError
from ...process import spawn, stop, tail_text
from ...vmspec import Disk, VmSpec
from ..base import Backend, ExitInfo, Machine
from ..usernet import SSH_FORWARD, forwarded_ssh_port
from .accel import choose as choose_accel
from .cpulog import TRIPLE_FAULT_LINE, guest_triple_faults
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


# Where TCG logs triple faults, the only thing that tells one from a reboot (cpulog).
CPU_RESET_LOG = "qemu-cpu-reset.log"

# Without an interrupt-remapping IOMMU (which TCG cannot give), x86 APIC ids fit in 8 bits.
APIC_LIMIT = 255
# Under TCG every vCPU is a host thread interpreting code: past this many per host core a
# guest kernel does not come up within a scenario's timeout.
TCG_VCPUS_PER_CORE = 16


def tcg_vcpus_problem(cpus: int) -> str | None:
    """Why ``cpus`` vCPUs under TCG on this host would not boot in time, or None."""
    cores = os.cpu_count() or 1
    if cpus > TCG_VCPUS_PER_CORE * cores:
        return (f"{cpus} vCPUs under TCG (no KVM here) on {cores} host cores: more than "
                f"{TCG_VCPUS_PER_CORE} per core do not boot within a scenario's timeout; run "
                f"it where KVM works (--accel kvm)")
    return None


class QemuBackend(Backend):
    name = "qemu"
    firmwares = ("uefi", "csm")
    needs = ("restart", "reboot", "save-restore", "vars-file", "ssh")

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
        self._max_vcpus: tuple[int, str] | None = None

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

    def max_vcpus(self) -> tuple[int, str]:
        """q35's ``cpu-max`` as this QEMU reports it (QMP query-machines), capped at the APIC
        limit of a machine without interrupt remapping; asked once."""
        if self._max_vcpus is None:
            try:
                machine_max = query_machine_max(self.binary, "q35")
                limit = min(machine_max, APIC_LIMIT)
                self._max_vcpus = (limit, f"{self.binary}: q35 cpu-max {machine_max}, "
                                          f"{APIC_LIMIT} without an interrupt-remapping IOMMU")
            except (OSError, ValueError, subprocess.TimeoutExpired) as err:
                self._max_vcpus = (APIC_LIMIT, f"{self.binary} could not be asked ({err}); "
                                               f"the x86 APIC limit")
        return self._max_vcpus

    def vcpu_problem(self, cpus: int, topology) -> str | None:
        why = super().vcpu_problem(cpus, topology)
        if why is None and cpus > 8 and self.accel.name == "tcg":
            why = tcg_vcpus_problem(cpus)
        return why

    # Command line ----------------------------------------------------------------------------
    def command_lines(self, spec: VmSpec, again: bool = False) -> list[list[str]]:
        """qemu-img for each ephemeral disk's overlay (not again: a restart keeps them), then
        QEMU."""
        made = [] if again else [overlay_argv(image, overlay, fmt)
                                 for image, overlay, fmt in overlays(spec)[1]]
        return made + [self.argv(spec)]

    def argv(self, spec: VmSpec, person: bool = False) -> list[str]:
        """The harness's command line; ``person``: the one a person starts by hand (by_hand.py):
        running at once, COM1 and QEMU's monitor on its stdio, no QMP socket or pidfile."""
        spec = overlays(spec)[0]
        w = spec.workdir
        harness = [] if person else ["-S", "-qmp", f"unix:{w / 'qmp.sock'},server=on,wait=off",
                                     "-pidfile", str(w / "qemu.pid")]
        argv = [self.binary,
                "-name", f"guest={spec.name},debug-threads=on",
                "-uuid", spec.uuid,
                "-machine", "q35",
                "-accel", self.accel.name,
                "-cpu", cpu_model(spec, self.accel.name),
                "-smp", smp(spec),
                "-m", f"{spec.memory_mib}M",
                "-nodefaults", "-no-user-config", "-display", "none",
                "-rtc", "base=utc" if spec.utc_clock else "base=localtime",
                *([] if spec.survive_reboot else ["-no-reboot"]), *harness]
        if self.accel.name == "tcg":  # a triple fault's only trace: see cpulog
            argv += ["-d", "cpu_reset", "-D", str(w / CPU_RESET_LOG)]
        argv += self._firmware_args(spec)
        for port in spec.serials:
            if port.role == "console" and person:  # Ctrl-a x quits, Ctrl-a c: the monitor
                argv += ["-chardev", f"stdio,id={port.name},mux=on,signal=off",
                         "-mon", f"chardev={port.name}"]
            elif port.role == "console":  # FIFOs: see harness/console/fifo.py for why
                argv += ["-chardev", f"pipe,id={port.name},path={w / port.name}"]
            else:  # data ports: a socket the harness connects to when the step needs it
                argv += ["-chardev", f"socket,id={port.name},path={w / (port.name + '.sock')},"
                                     "server=on,wait=off"]
            argv += ["-serial", f"chardev:{port.name}"]
        ahci_ports = iter(range(AHCI_PORTS))
        for index, disk in enumerate(spec.disks):
            port = None
            if disk.bus.startswith("ahci-"):
                port = next(ahci_ports, None)
                if port is None:
                    raise InfraError(f"more than {AHCI_PORTS} AHCI disks: q35's AHCI "
                                     f"controller has {AHCI_PORTS} ports")
            argv += _disk_args(index, disk, port)
        for index, nic in enumerate(spec.nics):
            # Port 0: the host picks a free loopback port (read back with `info usernet`).
            forward = f",hostfwd={SSH_FORWARD}" if nic.ssh_forward else ""
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

    def firmware_files(self, profile: str) -> list:
        if profile == "uefi":
            pair = self.ovmf.find()
            return [pair.code, pair.vars_template]
        return [self.seabios.find()] if profile == "csm" else []

    # Lifecycle -------------------------------------------------------------------------------
    def start(self, spec: VmSpec, again: bool = False) -> "QemuMachine":
        spec.workdir.mkdir(parents=True, exist_ok=True)
        spec.logdir.mkdir(parents=True, exist_ok=True)
        if spec.firmware == "uefi" and not (again and spec.vars_path.exists()):
            fw.make_vars_copy(self.ovmf.find().vars_template, spec.workdir / "uefi-vars.fd")
        for image, overlay, fmt in overlays(spec)[1]:
            if not (again and overlay.exists()):
                make_overlay(image, overlay, fmt)
        argv = self.argv(spec)
        for port in spec.serials:
            if port.role == "console":
                make_fifos(spec.workdir / port.name)
        (spec.logdir / ("command-again.txt" if again else "command.txt")).write_text(
            "".join(" ".join(_quote(a) for a in line) + "\n"
                    for line in self.command_lines(spec, again)))
        return QemuMachine(spec, argv, log_name="qemu-again.log" if again else "qemu.log")

    def restore(self, spec: VmSpec, state: Path, timeout: float = 300.0) -> "QemuMachine":
        """A new QEMU process for the same VM, its state read from ``state`` (QemuMachine.save)
        through ``-incoming fd:N``; paused once the state is in, like a fresh start."""
        for port in spec.serials:
            if port.role == "console":
                make_fifos(spec.workdir / port.name)
        fd = os.open(state, os.O_RDONLY)
        try:
            argv = self.argv(spec) + ["-incoming", f"fd:{fd}"]
            (spec.logdir / "command-restore.txt").write_text(
                " ".join(_quote(a) for a in argv) + "\n")
            machine = QemuMachine(spec, argv, log_name="qemu-restore.log", pass_fds=(fd,))
        finally:
            os.close(fd)
        machine.wait_migration(timeout, "restore")
        return machine


class QemuMachine(Machine):
    nvme_model = "QEMU NVMe Ctrl"  # hw/nvme/ctrl.c: fixed model number

    def __init__(self, spec: VmSpec, argv: list[str], log_name: str = "qemu.log",
                 pass_fds: tuple = ()):
        self.spec = spec
        self.argv = argv
        self.log_path = spec.logdir / log_name
        self._consoles: list = []  # FifoConsole (COM1) and sockets (data ports)
        self.qmp = None
        self.proc = spawn(argv, self.log_path, pass_fds=pass_fds)
        try:
            self.qmp = QmpClient(spec.workdir / "qmp.sock",
                                 alive=lambda: self.proc.poll() is None)
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
        port = forwarded_ssh_port(str(text))
        if port is None:
            raise InfraError(f"{self.spec.name}: no SSH host forward in QEMU's user network "
                             "(the scenario attached no NIC for it?)")
        return "127.0.0.1", port

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

    def save(self, state: Path, timeout: float = 300.0) -> None:
        """Suspend the running VM into the file ``state``: vCPUs stopped, then QEMU's
        migration stream written to a descriptor handed over QMP (getfd). The process then
        holds a finished VM; destroy() it."""
        fd = os.open(state, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            self.qmp.execute("getfd", fdname="refvm-save", fds=(fd,))
        finally:
            os.close(fd)
        self.qmp.execute("stop")
        self.qmp.execute("migrate", uri="fd:refvm-save")
        self.wait_migration(timeout, "save")

    def wait_migration(self, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            status = self.qmp.execute("query-migrate").get("status")
            if what == "restore":  # the incoming side: done when the VM is paused with it
                running = self.qmp.execute("query-status").get("status")
                if running == "paused" and status in (None, "completed"):
                    return
            elif status == "completed":
                return
            if status == "failed" or self.proc.poll() is not None:
                raise InfraError(f"QEMU's {what} failed ({status}); its log says:\n"
                                 f"{tail_text(self.log_path)}")
            if time.monotonic() > deadline:
                raise InfraError(f"QEMU's {what} did not finish in {timeout:.0f}s ({status})")
            time.sleep(0.2)

    def resets(self) -> int:
        """QMP's RESET events the guest caused (QEMU resets in place when it may reboot)."""
        return sum(1 for e in self.qmp.events if e.get("event") == "RESET"
                   and e.get("data", {}).get("guest", True)) if self.qmp else 0

    def triple_faults(self) -> int | None:
        """The guest's triple faults this QEMU process saw (TCG's log: cpulog; SeaBIOS's
        own reset by triple fault does not count), None under KVM, which does not tell them
        from other resets. QEMU truncates its log when it starts, so a restarted or restored
        VM counts from 0."""
        if "-D" not in self.argv:
            return None
        try:
            text = (self.spec.workdir / CPU_RESET_LOG).read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return guest_triple_faults(text)

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
        if self.qmp:  # QEMU writes SHUTDOWN just before it exits: read to the socket's end
            self.qmp.wait_closed(2.0)
        event = self.qmp.last_event("SHUTDOWN") if self.qmp else None
        if code < 0:
            return ExitInfo("killed", code, f"QEMU killed by signal {-code}")
        if event:
            reason = event.get("data", {}).get("reason", "unknown")
            if reason == "guest-reset" and self.triple_faults():
                return ExitInfo("triple-fault", code, f"QEMU: {reason} after a triple fault "
                                                      f"(TCG's '{TRIPLE_FAULT_LINE}' in "
                                                      f"{CPU_RESET_LOG})")
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


def cpu_model(spec: VmSpec, accel: str) -> str:
    """KVM: the host's CPU. TCG: ``max``, which calls itself an AMD K8 (family 0xf), a CPU
    with no way to tell a guest about SMT threads: with a topology of threads, the same CPU
    as an Intel one, which reports the topology through CPUID leaf 0xB as real Intel CPUs do."""
    if accel != "tcg":
        return "host"
    if spec.topology and spec.topology[2] > 1:
        return "max,vendor=GenuineIntel"
    return "max"


def smp(spec: VmSpec) -> str:
    """``-smp``: the count, and the topology when the scenario sets one."""
    if spec.topology is None:
        return str(spec.cpus)
    sockets, cores, threads = spec.topology
    return f"cpus={spec.cpus},sockets={sockets},cores={cores},threads={threads}"


def query_machine_max(binary: str, machine: str) -> int:
    """``cpu-max`` of ``machine`` from QEMU itself (QMP query-machines on a machine-less QEMU:
    nothing is emulated, it answers and quits)."""
    commands = "".join(json.dumps({"execute": c}) + "\n"
                       for c in ("qmp_capabilities", "query-machines", "quit"))
    out = subprocess.run([binary, "-machine", "none", "-nodefaults", "-display", "none",
                          "-qmp", "stdio"], input=commands, capture_output=True, text=True,
                         timeout=30).stdout
    for line in out.splitlines():
        try:
            reply = json.loads(line).get("return")
        except ValueError:
            continue
        if isinstance(reply, list):
            for entry in reply:
                if machine in (entry.get("name"), entry.get("alias")):
                    return int(entry["cpu-max"])
    raise ValueError(f"no {machine} machine in its query-machines reply")


def overlays(spec: VmSpec) -> tuple[VmSpec, list[tuple[Path, Path, str]]]:
    """``spec`` with each ephemeral disk replaced by its qcow2 overlay in the VM's workdir
    (the image is the overlay's read-only backing file), and the (image, overlay, image
    format) triples to make. An overlay file, unlike ``snapshot=on``'s hidden one, outlives
    a QEMU process: a restarted or restored VM finds the writes of the one before."""
    made, disks = [], []
    for index, disk in enumerate(spec.disks):
        if disk.ephemeral:
            overlay = spec.workdir / f"overlay-{index}.qcow2"
            made.append((Path(os.path.abspath(disk.path)), overlay, disk.format))
            disk = replace(disk, path=overlay, format="qcow2", ephemeral=False)
        disks.append(disk)
    return replace(spec, disks=tuple(disks)), made


def overlay_argv(image: Path, overlay: Path, fmt: str) -> list[str]:
    return ["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(image),
            str(overlay)]


def make_overlay(image: Path, overlay: Path, fmt: str) -> None:
    if shutil.which("qemu-img") is None:
        raise InfraError("qemu-img not found (it makes each VM's boot disk overlay); install "
                         "it with: apt-get install qemu-utils")
    done = subprocess.run(overlay_argv(image, overlay, fmt), capture_output=True, text=True,
                          timeout=60)
    if done.returncode != 0:
        raise InfraError(f"qemu-img could not make {overlay.name} over {image}: "
                         f"{done.stderr.strip()[:300]}")


AHCI_PORTS = 6  # q35's ICH9 AHCI controller (00:1f.2): buses ide.0 to ide.5, one unit each


def _disk_args(index: int, disk: Disk, ahci_port: int | None = None) -> list[str]:
    """``-drive`` and ``-device`` for one disk. AHCI disks need their port named: left to
    itself QEMU puts a second one on ide.0 again ("bus supports only 1 units")."""
    node = f"disk{index}"
    drive = f"file={disk.path},format={disk.format},if=none,id={node}," \
            f"readonly={'on' if disk.readonly else 'off'}"
    if disk.iops_limit:  # requests wait in QEMU's block layer: the guest's queue fills
        drive += f",throttling.iops-total={disk.iops_limit}"
    extra = ",bootindex=0" if disk.boot else ",bootindex=1" if disk.fallback_boot else ""
    if disk.sector_size:
        extra += f",logical_block_size={disk.sector_size},physical_block_size={disk.sector_size}"
    if disk.bus == "virtio-blk":
        serial = f",serial={disk.serial}" if disk.serial else ""
        device = f"virtio-blk-pci,drive={node}{serial}{extra}"
    elif disk.bus == "nvme":
        device = f"nvme,drive={node},serial={disk.serial or f'REFVM{index:04d}'}{extra}"
    elif disk.bus in ("ahci-hd", "ahci-cd"):
        kind = "ide-hd" if disk.bus == "ahci-hd" else "ide-cd"
        device = f"{kind},drive={node},bus=ide.{ahci_port or 0}{extra}"
    else:
        raise InfraError(f"the qemu backend has no disk bus {disk.bus!r}")
    return ["-drive", drive, "-device", device]


def _quote(arg: str) -> str:
    """Quote for *display* only (plans, repro notes): argv is never run through a shell."""
    import shlex
    return shlex.quote(arg)
