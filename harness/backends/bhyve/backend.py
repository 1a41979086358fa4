"""The bhyve backend: FreeBSD's hypervisor, run the way share/examples/bhyve/vmrun.sh runs it.

One VM is a short sequence of programs: ``bhyvectl --destroy`` for a stale kernel VM of the same
name, ``ifconfig`` for its own bridge and tap interfaces, ``bhyveload`` for FreeBSD guests
without UEFI, then ``bhyve``. bhyve exits when the guest resets, powers off or halts; vmrun.sh
starts it again on a reset (exit 0), and so do we when asked (``relaunch_on_reboot``).

bhyve has no "start paused" (QEMU's -S): the guest runs from the moment bhyve starts, and a
guest may even block until someone opens its console. So start() only prepares the host
(stale VM gone, bridge and taps made), the runner opens the console's nmdm B side, and
resume() is where bhyveload and bhyve actually start: nothing the guest prints is lost. A
supervisor thread follows the programs (loader, then bhyve, relaunches) so the exit is known
without polling.
"""
from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ... import firmware as fw
from ...cleanup import run_all
from ...errors import InfraError, Unsupported
from ...process import spawn, stop
from ...hostdata import sparse_copy
from ...vmspec import VmSpec, private_copies
from ..base import Backend, ExitInfo, Machine
from .argv import (BRIDGE_PLACEHOLDER, NMDM_PATTERN, Bootrom, bhyve_argv, bhyveload_argv,
                   restore_argv, state_files, suspend_argv,
                   bridge_address_argv, bridge_addresses, bridge_create_argv,
                   bridge_destroy_argv, bridge_up_argv, destroy_argv, network_argvs,
                   nmdm_pair, problems, tap_create_argvs, tap_destroy_argv, tap_names)
from .caps import (MAXCPU_TUNABLE_SINCE, OLD_VM_MAXCPU, TOPOLOGY_SINCE, BhyveCaps,
                   bhyve_present, run_quietly)
from .ifaces import describe, mark_for, verdict_for

# bhyve(8) EXIT STATUS: "0 rebooted, 1 powered off, 2 halted, 3 triple fault (amd64 only),
# 4 exited due to an error". vmrun.sh: "0 - VM has been reset".
BHYVE_EXITS = {0: ("reboot", "the guest rebooted"), 1: ("poweroff", "the guest powered off"),
               2: ("halt", "the guest halted"), 3: ("triple-fault", "the guest triple-faulted"),
               4: ("error", "bhyve exited due to an error")}
BRIDGE_NAME = re.compile(r"^(bridge[0-9]+)$", re.MULTILINE)  # what `ifconfig bridge create` prints
PLAN_RELEASE = (14, 1)  # what `refvm plan` assumes on a host without bhyve


def address_is_local(address: str) -> bool:
    """Whether an interface of this host already has ``address`` (binding to it works only
    then: FreeBSD's net.inet.ip.bindany and Linux's ip_nonlocal_bind are off by default)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return False
    return True


def exit_info(code: int, reboots: int = 0, log_tail: str = "") -> ExitInfo:
    """bhyve's exit status in words."""
    if code < 0:
        return ExitInfo("killed", code, f"bhyve killed by signal {-code}")
    kind, words = BHYVE_EXITS.get(code, ("error", "bhyve exited with an unknown status"))
    detail = f"bhyve: {words}"
    if reboots:
        detail += f" after {reboots} guest reboot(s) relaunched by the harness"
    if kind == "error" and log_tail:
        detail += ": " + log_tail.replace("\n", " | ")
    return ExitInfo(kind, code, detail)


def open_nmdm(path):
    """An nmdm(4) B side (the harness's end of a bhyve COM port) as an unbuffered binary stream.

    The tty is made raw (no echo, no line editing: a login prompt has no newline) and CLOCAL
    (no waiting for, or hanging up on, the other side's carrier, which drops each time bhyve
    exits and is relaunched). O_NONBLOCK only for the open. Shared with the libvirt backend,
    which opens the B sides libvirt's bhyve driver cannot hand over as console streams."""
    import termios
    import tty

    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        if os.isatty(fd):
            tty.setraw(fd)
            attrs = termios.tcgetattr(fd)
            attrs[2] |= termios.CLOCAL
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "r+b", buffering=0)
    except BaseException:
        os.close(fd)
        raise


# What bhyve prints when vm_checkpoint fails (snapshot.c); it keeps running.
CHECKPOINT_FAILED = "Unable to perform the requested operation"


@dataclass(frozen=True)
class Programs:
    """Where the external programs are; tests point these at a test double."""

    bhyve: str = "/usr/sbin/bhyve"  # vmrun.sh: FBSDRUN=/usr/sbin/bhyve
    bhyvectl: str = "/usr/sbin/bhyvectl"
    bhyveload: str = "/usr/sbin/bhyveload"
    ifconfig: str = "/sbin/ifconfig"
    freebsd_version: str = "/bin/freebsd-version"
    uname: str = "/usr/bin/uname"
    # Only for qcow2 images (the distributions' cloud images): bhyve reads raw files, so the
    # VM's private copy is converted (FreeBSD: qemu-img from the qemu package, emulators/qemu).
    qemu_img: str = "/usr/local/bin/qemu-img"


@dataclass(frozen=True)
class LaunchPlan:
    """Everything one VM runs, computed once by the backend and followed by the machine."""

    destroy: list
    bhyve: list
    loader: list | None = None
    taps: tuple = ()
    bridge_address: str = ""  # the host's end of the VM's own /24 (CIDR), on its bridge
    guest_address: str = ""   # the address the guest configures itself (CIDR)
    mark: str = ""  # the description its taps and bridge carry: refvm's, naming the run
    consoles: dict = field(default_factory=dict)  # port -> nmdm B side (the harness's end)


class BhyveBackend(Backend):
    name = "bhyve"
    firmwares = ("uefi", "csm", "bhyveload")
    # restart: the same files relaunched; reboot: relaunched on exit 0 (bhyve(8)'s contract);
    # save-restore: bhyvectl --suspend, then bhyve -r, where bhyve was built with snapshots.
    needs = ("restart", "reboot", "save-restore", "vars-file", "ssh")

    def __init__(self, programs: Programs = Programs(), caps: BhyveCaps | None = None,
                 nmdm_pattern: str = NMDM_PATTERN, csm_firmware: Path | None = None,
                 uefi: fw.FirmwareCandidates = fw.BHYVE_UEFI_PAIR,
                 uefi_single: fw.FirmwareCandidates = fw.BHYVE_UEFI_SINGLE,
                 relaunch_on_reboot: bool = False, plan_release: tuple = PLAN_RELEASE,
                 stop_grace: float = 5.0, planning: bool = False):
        """VmSpec's "user" network has no bhyve equivalent: each VM with NICs gets a bridge of
        its own, made and destroyed with the VM, holding the host's end of a per-VM /24 and one
        tap per NIC; no DHCP server runs there, so the guest sets its address itself (see
        bhyve.argv's module docstring for the numbering)."""
        self.programs = programs
        self._caps = caps
        self.nmdm_pattern = nmdm_pattern
        self.csm = fw.BHYVE_UEFI_CSM  # csm_firmware: a pinned BHYVE_UEFI_CSM.fd, used instead
        if csm_firmware:
            self.csm = fw.FirmwareCandidates(self.csm.what, self.csm.package,
                                             (Path(csm_firmware),))
        self.uefi, self.uefi_single = uefi, uefi_single
        self.relaunch_on_reboot = relaunch_on_reboot
        self.plan_release = tuple(plan_release)
        self.stop_grace = stop_grace
        # Planning may assume a release's bhyve on a host without one; running may not.
        self.planning = planning

    # Host facts ------------------------------------------------------------------------------
    @property
    def caps(self) -> BhyveCaps:
        """Probed once per backend (= once per run); assumed from a release without bhyve."""
        if self._caps is None:
            if bhyve_present(self.programs.bhyve):
                p = self.programs
                self._caps = BhyveCaps.probe(run_quietly, p.bhyve, p.freebsd_version, p.uname,
                                             p.bhyvectl)
            else:
                self._caps = BhyveCaps.for_release(
                    self.plan_release, f"{self.programs.bhyve} not found on this host")
        return self._caps

    def describe(self) -> str:
        caps = self.caps
        if caps.assumed:
            return (f"bhyve: {'; '.join(caps.notes)}; command lines assume FreeBSD "
                    f"{caps.release_name}'s bhyve and were not checked against one")
        flags = ", ".join(f"-{f} {'yes' if on else 'no'}" for f, on in
                          (("A", caps.acpi_flag), ("D", caps.destroy_flag)))
        return (f"bhyve on FreeBSD {caps.release_name}: {len(caps.emulations)} PCI emulations, "
                f"{flags}, UEFI vars file {'yes' if caps.bootrom_vars else 'no'}, "
                f"snapshots {'yes' if caps.snapshot else 'no'}")

    def unsupported(self, spec_firmware: str) -> str | None:
        why = super().unsupported(spec_firmware)
        if why:
            return why
        try:
            caps = self.caps  # a failed probe is the reason for every profile
            self._bootrom_files(spec_firmware)
        except InfraError as err:
            return str(err)
        if caps.assumed and not self.planning:
            return f"{self.programs.bhyve} not found: bhyve runs on FreeBSD hosts"
        if spec_firmware == "bhyveload" and not caps.assumed \
                and shutil.which(self.programs.bhyveload) is None:
            return f"{self.programs.bhyveload} not found"
        return None

    def lacks(self, need: str, firmware: str) -> str | None:
        if need == "save-restore" and not self.caps.snapshot:
            return self.caps.snapshot_reason()
        why = super().lacks(need, firmware)
        if why is None and need == "vars-file" and not self.caps.bootrom_vars:
            why = self.caps.vars_reason()
        return why

    def save_restore_lines(self, spec: VmSpec, state: Path) -> list[list[str]]:
        """Suspend the running VM into ``state``, then start it again from there: the same
        bhyve command line plus ``-r``, after bhyvectl cleared the old VM."""
        plan = self.launch_plan(spec)
        return [suspend_argv(self.programs.bhyvectl, spec.name, state), plan.destroy,
                restore_argv(plan.bhyve, state)]

    def restore(self, spec: VmSpec, state: Path) -> "BhyveMachine":
        """A new bhyve for ``spec``'s VM resumed from ``state`` (BhyveMachine.save made it):
        bhyve(8) ``-r``, "the configuration of devices in the new VM [must] match the VM from
        which the snapshot was taken by specifying the same -s and -l options", so the command
        line is the VM's own (same disks, taps, nmdm A sides, bootrom and vars file) plus -r;
        no bhyveload: the guest's memory comes from the file. The bridge and taps, removed
        with the suspended machine, are made again first. Like start(), it runs at resume().
        The machine owns the state files from then on and removes them in destroy()."""
        if self.caps.assumed:
            raise InfraError(f"cannot restore bhyve VMs here: {'; '.join(self.caps.notes)}")
        plan = self.launch_plan(spec)
        lines = [restore_argv(argv, state) if argv == plan.bhyve else argv
                 for argv in self.command_lines(spec, again=True) if argv != plan.loader]
        (spec.logdir / "command-restore.txt").write_text(
            "".join(shlex.join(argv) + "\n" for argv in lines))
        return self._prepared_machine(spec, plan, restore_from=Path(state))

    def _prepared_machine(self, spec: VmSpec, plan, restore_from: Path | None = None):
        """A BhyveMachine with its bridge, taps and consoles made (prepare), destroyed again
        if that fails; bhyve itself runs at resume()."""
        machine = BhyveMachine(spec, plan, self.programs,
                               relaunch_on_reboot=self.relaunch_on_reboot
                               or spec.survive_reboot,
                               stop_grace=self.stop_grace, restore_from=restore_from)
        try:
            machine.prepare()
        except BaseException:
            machine.destroy()
            raise
        return machine

    @functools.cached_property
    def _max_vcpus(self) -> tuple[int, str]:
        return self._ask_max_vcpus()

    def max_vcpus(self) -> tuple[int, str]:
        """Asked once per backend: the matrix asks for every case at collection."""
        return self._max_vcpus

    def _ask_max_vcpus(self) -> tuple[int, str]:
        """VM_MAXCPU (16) before 14.0; from 14.0 the host's hw.vmm.maxcpu (by default its
        CPU count; in a plan without bhyve, this machine's count stands in for it)."""
        caps = self.caps
        if caps.release < MAXCPU_TUNABLE_SINCE:
            return OLD_VM_MAXCPU, f"VM_MAXCPU of bhyve on FreeBSD {caps.release_name}"
        if not caps.assumed:
            status, out = run_quietly(["sysctl", "-n", "hw.vmm.maxcpu"])
            if status == 0 and out.strip().isdigit():
                return int(out.strip()), "this host's hw.vmm.maxcpu"
        count = os.cpu_count() or 1
        return count, (f"hw.vmm.maxcpu's default on FreeBSD {caps.release_name}: the host's "
                       f"CPU count ({count}{', this machine' if caps.assumed else ''})")

    def vcpu_problem(self, cpus: int, topology) -> str | None:
        why = super().vcpu_problem(cpus, topology)
        if why is None and topology and self.caps.release < TOPOLOGY_SINCE:
            why = (f"bhyve on FreeBSD {self.caps.release_name} takes no CPU topology (-c "
                   f"sockets=,cores=,threads= came with FreeBSD "
                   f"{TOPOLOGY_SINCE[0]}.{TOPOLOGY_SINCE[1]})")
        return why

    # Firmware --------------------------------------------------------------------------------
    def _pick(self, candidates: fw.FirmwareCandidates):
        """The firmware file(s) to use; when planning without bhyve, the preferred ones."""
        return candidates.candidates[0] if self.caps.assumed else candidates.find()

    def _bootrom_files(self, firmware: str):
        """(code, vars template or None) for a firmware profile; raises InfraError."""
        caps = self.caps
        if firmware == "bhyveload":
            return None
        if firmware == "csm":
            if caps.assumed and self.csm is fw.BHYVE_UEFI_CSM:
                raise InfraError(f"{self.csm.what} not configured; {self.csm.package}")
            return self._pick(self.csm), None
        if caps.bootrom_vars:
            try:
                pair = self._pick(self.uefi)
                return pair.code, pair.vars_template
            except InfraError as err:
                missing_pair = str(err)
        else:
            missing_pair = caps.vars_reason()
        try:
            return self._pick(self.uefi_single), None
        except InfraError as err:
            raise InfraError(f"{missing_pair}; and {err}") from None

    def firmware_files(self, profile: str) -> list:
        files = self._bootrom_files(profile)
        return [f for f in files if f is not None] if files else []

    def _bootrom(self, spec: VmSpec):
        files = self._bootrom_files(spec.firmware)
        if files is None:
            return None, None
        code, template = files
        return Bootrom(code, spec.workdir / "uefi-vars.fd" if template else None), template

    # Command lines ---------------------------------------------------------------------------
    def launch_plan(self, spec: VmSpec) -> LaunchPlan:
        spec, _ = private_copies(spec, raw_only=True)  # no copy-on-write view of an image
        reasons = problems(spec, self.caps)
        if reasons:
            raise Unsupported("; ".join(reasons))
        p = self.programs
        bootrom, _ = self._bootrom(spec)
        host_address, guest_address = bridge_addresses(spec.name)
        return LaunchPlan(
            destroy=destroy_argv(p.bhyvectl, spec.name),
            bhyve=bhyve_argv(p.bhyve, spec, self.caps, bootrom, self.nmdm_pattern),
            loader=bhyveload_argv(p.bhyveload, spec, self.nmdm_pattern)
            if spec.firmware == "bhyveload" else None,
            taps=tuple(tap_names(spec)), bridge_address=host_address, guest_address=guest_address,
            mark=mark_for(spec.workdir),
            consoles={port.name: nmdm_pair(spec.name, port.name, self.nmdm_pattern)[1]
                      for port in spec.serials})

    def command_lines(self, spec: VmSpec, again: bool = False) -> list[list[str]]:
        """Run order, to paste on FreeBSD: stale VM, private copies of ephemeral disks (the
        boot image), vars copy, bridge and taps, bhyveload, bhyve. ``again`` (a restart of
        the same VM): no copies, the first start's disks and vars file are used as they are.

        The vars copy is shown as ``cp``; start() makes the same copy in Python (and checks
        its size against the template). The VM's bridge is named by ``ifconfig bridge
        create`` at run time, so the lines after it say ``bridgeN``: put the name it printed
        there, as a person pasting these would. (start() also first destroys stale taps of the
        same units that a dead refvm run marked as its own, refuses any other, and checks that
        the bridge's address is free; none of that is shown.)"""
        plan = self.launch_plan(spec)
        bootrom, template = self._bootrom(spec)
        lines = [plan.destroy]
        if not again:
            lines += self._copy_argvs(spec)
            if bootrom and bootrom.vars:
                lines.append(["cp", str(template), str(bootrom.vars)])
        if plan.taps:
            ifconfig = self.programs.ifconfig
            lines.append(bridge_create_argv(ifconfig, plan.mark))
            lines += network_argvs(ifconfig, BRIDGE_PLACEHOLDER, plan.bridge_address, plan.taps,
                                   plan.mark)
        if plan.loader:
            lines.append(plan.loader)
        lines.append(plan.bhyve)
        return lines

    def _copy_argvs(self, spec: VmSpec) -> list[list[str]]:
        """The private copies of the VM's ephemeral disks: ``cp`` for a raw image, ``qemu-img
        convert`` to raw for a qcow2 one (its copy is named .raw, see private_copies)."""
        formats = {disk.path: disk.format for disk in spec.disks if disk.ephemeral}
        return [["cp", str(image), str(copy)] if formats[image] == "raw" else
                [self.programs.qemu_img, "convert", "-f", formats[image], "-O", "raw",
                 str(image), str(copy)]
                for image, copy in private_copies(spec, raw_only=True)[1]]

    # Lifecycle -------------------------------------------------------------------------------
    def start(self, spec: VmSpec, again: bool = False) -> "BhyveMachine":
        if self.caps.assumed:
            raise InfraError(f"cannot start bhyve VMs here: {'; '.join(self.caps.notes)}")
        plan = self.launch_plan(spec)
        spec.workdir.mkdir(parents=True, exist_ok=True)
        spec.logdir.mkdir(parents=True, exist_ok=True)
        bootrom, template = self._bootrom(spec)
        if not again:  # a restart keeps the disks' contents
            for argv, (image, copy) in zip(self._copy_argvs(spec),
                                           private_copies(spec, raw_only=True)[1]):
                if argv[0] == "cp":
                    sparse_copy(image, copy)  # what the plan shows as cp, keeping its holes
                else:
                    _convert(argv)
        if bootrom and bootrom.vars and not (again and Path(bootrom.vars).exists()):
            fw.make_vars_copy(template, bootrom.vars)
        (spec.logdir / ("command-again.txt" if again else "command.txt")).write_text(
            "".join(shlex.join(argv) + "\n" for argv in self.command_lines(spec, again)))
        return self._prepared_machine(spec, plan)


class BhyveMachine(Machine):
    nvme_model = "bhyve-NVMe"  # pci_nvme.c pci_nvme_init_ctrldata: cd->mn "bhyve-NVMe"

    def __init__(self, spec: VmSpec, plan: LaunchPlan, programs: Programs,
                 relaunch_on_reboot: bool = False, stop_grace: float = 5.0,
                 restore_from: Path | None = None):
        """``restore_from``: the first bhyve resumes the VM from this BhyveMachine.save() file
        (``-r``, no bhyveload); a guest reboot after it boots afresh, as any reboot does."""
        self.spec, self.plan, self.programs = spec, plan, programs
        self.restore_from = restore_from
        self._suspending = False  # save() asked bhyve to checkpoint and exit
        self._suspend_to: Path | None = None
        self._suspend_failed = False  # then destroy() removes what a late checkpoint wrote
        self._child_from = 0  # where the running program's output starts in the log
        self.relaunch_on_reboot = relaunch_on_reboot
        self.stop_grace = stop_grace
        self.log_path = spec.logdir / "bhyve.log"
        self.reboots = 0
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._stopping = False
        self._destroyed = False
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._exit: ExitInfo | None = None
        self._taps: list[str] = []  # the taps this machine created, to remove at destroy()
        self.bridge: str | None = None  # the bridge it created (name known once made)
        self._consoles: list = []

    # Host preparation ------------------------------------------------------------------------
    def _note(self, text: str) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as log:
            log.write(f"[refvm {time.strftime('%H:%M:%S')}] {text}\n")

    def _call(self, argv: list, must: bool = False) -> tuple[int, str]:
        """A short helper command (bhyvectl, ifconfig), logged; InfraError if it must work."""
        status, output = run_quietly(argv, timeout=60)
        self._note(f"$ {shlex.join(argv)} -> {status}" + (f": {output.strip()}" if output.strip()
                                                          else ""))
        if must and status != 0:
            raise InfraError(f"`{shlex.join(argv)}` failed (exit {status}): "
                             f"{output.strip()[:300]}")
        return status, output

    def _run(self, argv: list, must: bool = False) -> int:
        return self._call(argv, must)[0]

    def prepare(self) -> None:
        """Destroy a stale kernel VM of this name, then make this VM's bridge and taps (the
        order command_lines() shows). Whatever was made is recorded as soon as it exists, so
        destroy() removes it however far this got."""
        self._run(self.plan.destroy)  # fails when there is none: that is the normal case
        if not self.plan.taps:
            return
        ifconfig = self.programs.ifconfig
        host = self.host_address_for_guest()
        if address_is_local(host):
            raise InfraError(
                f"{host} is already on an interface of this host, so {self.spec.name}'s bridge "
                f"cannot have it: another VM drew the same network number (odds 1 in 254 per "
                f"pair of concurrent VMs; a rerun draws another), or a killed run left a bridge "
                f"behind (find it with `ifconfig -a inet`, remove it with `ifconfig bridgeK "
                f"destroy`)")
        for tap in self.plan.taps:
            self._clear_stale_tap(tap)
        _, output = self._call(bridge_create_argv(ifconfig, self.plan.mark), must=True)
        names = BRIDGE_NAME.findall(output)
        if len(names) != 1:
            raise InfraError(f"`{shlex.join(bridge_create_argv(ifconfig, self.plan.mark))}` printed "
                             f"{output.strip()[:200]!r}, not the name of one new bridge")
        self.bridge = names[0]
        self._run(bridge_address_argv(ifconfig, self.bridge, self.plan.bridge_address), must=True)
        for tap in self.plan.taps:
            create, *attach = tap_create_argvs(ifconfig, tap, self.bridge, self.plan.mark)
            self._run(create, must=True)
            self._taps.append(tap)
            for argv in attach:
                self._run(argv, must=True)
        self._run(bridge_up_argv(ifconfig, self.bridge), must=True)

    def _clear_stale_tap(self, tap: str) -> None:
        """A tap on one of this VM's units is removed only when a dead refvm run marked it as
        its own (a killed run's); one that anything else made, or a live run uses, is refused."""
        ifconfig = self.programs.ifconfig
        description = describe(ifconfig, tap)
        if description is None:
            return  # no such interface: the usual case
        verdict = verdict_for(description)
        if verdict is None or not verdict.dead:
            whose = "it is not refvm's" if verdict is None else verdict.reason
            raise InfraError(f"{tap}, which {self.spec.name} needs, already exists and is left "
                             f"alone: {whose} (VM units come from the VM's name; a rerun draws "
                             f"others)")
        self._note(f"destroying stale {tap}: {verdict.reason}")
        self._run(tap_destroy_argv(ifconfig, tap), must=True)

    # Machine protocol ------------------------------------------------------------------------
    def host_listen_address(self) -> str:
        # The guest is on the bridge: listeners bind to the bridge's own address.
        return self.host_address_for_guest()

    def host_address_for_guest(self) -> str:
        """The VM's bridge's own address (10.210.n.1): the guest's taps are its members."""
        return self.plan.bridge_address.split("/")[0]

    def guest_static_ipv4(self) -> str | None:
        """10.210.n.2/24: nothing answers DHCP on the VM's bridge. One address per VM: with
        several NICs, all on the one bridge, only one of them may be given it."""
        return self.plan.guest_address or None

    def ssh_endpoint(self) -> tuple[str, int]:
        """The guest's own address on the VM's bridge (it sets it itself: guest_static_ipv4),
        port 22: the host is on that bridge, so no forward is needed."""
        if not self.plan.taps or not self.plan.guest_address:
            raise InfraError(f"{self.spec.name}: no NIC on a bridge, so no way to its sshd")
        return self.plan.guest_address.split("/")[0], 22

    def open_console(self, port: str = "com1"):
        """The nmdm(4) B side of ``port`` (see open_nmdm). nmdm creates the pair on first
        open; opening B before bhyve opens A is what lets us see the first byte."""
        path = self.plan.consoles.get(port)
        if path is None:
            raise InfraError(f"{self.spec.name} has no serial port {port}")
        stream = open_nmdm(path)
        self._consoles.append(stream)
        return stream

    def resume(self) -> None:
        """Start bhyveload (if used) and bhyve; see the module docstring for why here."""
        with self._lock:
            if self._thread is not None or self._stopping:
                return
            self._thread = threading.Thread(target=self._supervise, daemon=True,
                                            name=f"bhyve {self.spec.name}")
            self._thread.start()

    def resets(self) -> int:
        """Guest reboots, each a bhyve exit 0 the harness relaunched."""
        return self.reboots

    def save(self, state: Path, timeout: float = 300.0) -> list[Path]:
        """Suspend the running VM into ``state``: ``bhyvectl --vm=NAME --suspend=FILE``.

        bhyvectl only hands the request to bhyve's checkpoint thread (a datagram on bhyve's
        socket under /var/run/bhyve) and returns; bhyve then writes the guest's memory to FILE,
        the kernel and device state to FILE.kern and JSON metadata to FILE.meta
        (snapshot.c vm_checkpoint), destroys the VM and exits 0. So the suspend is done when
        bhyve has exited 0 with the three files there; that exit 0 is not a guest reboot and
        is never relaunched. A checkpoint that fails leaves bhyve running ("Unable to perform
        the requested operation"): an InfraError with bhyve's words, and the files it
        half-wrote removed. Returns the three files (the restore needs them all)."""
        files = state_files(state)
        there = [path for path in files if path.exists()]
        if there:
            raise InfraError(f"{there[0]} already exists: refvm suspends a VM only into files "
                             f"it makes, and leaves that one alone")
        with self._lock:
            if self._proc is None or self._done.is_set():
                raise InfraError(f"{self.spec.name}: bhyve is not running, nothing to suspend")
            self._suspending, self._suspend_to = True, Path(state)
        try:
            self._call(suspend_argv(self.programs.bhyvectl, self.spec.name, state), must=True)
            asked = time.monotonic()
            info = self._wait_checkpoint(timeout)
            missing = [path.name for path in files if not path.is_file()]
            if info is None or info.kind != "suspended" or missing:
                raise InfraError(
                    f"bhyve did not suspend {self.spec.name} into {state}: "
                    + (f"still running after {time.monotonic() - asked:.0f}s" if info is None
                       else str(info))
                    + (f"; missing {', '.join(missing)}" if missing else "")
                    + f"; bhyve said: {self._child_output() or 'nothing'}")
        except BaseException:
            # _suspending stays set: a checkpoint that ends after all must not read as a guest
            # reboot and be relaunched; destroy() removes what it writes late.
            self._suspend_failed = True
            for path in files:  # none was there before: this suspend made them
                path.unlink(missing_ok=True)
            raise
        return files

    def _wait_checkpoint(self, timeout: float) -> ExitInfo | None:
        """bhyve's exit after a suspend request, or None: at ``timeout``, or at once when bhyve
        says the checkpoint failed (it then goes on running)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            info = self.wait_exit(min(left, 1.0))
            if info is not None or CHECKPOINT_FAILED in self._child_output(20):
                return info
        return None

    def poll(self) -> ExitInfo | None:
        return self._exit if self._done.is_set() else None

    def wait_exit(self, timeout: float) -> ExitInfo | None:
        return self._exit if self._done.wait(timeout) else None

    def destroy(self) -> None:
        """Stop bhyve (SIGTERM is an ACPI power-off; SIGKILL after the grace), destroy the
        kernel VM, remove the taps and the bridge, close the consoles. Once; safe at any stage
        (only what prepare() made is removed: nothing when `ifconfig bridge create` failed).

        Each step runs even if an earlier one raised (e.g. KeyboardInterrupt from a second
        SIGTERM during the stop grace): a later call is a no-op, so this one must finish the
        clean-up (harness/cleanup.py)."""
        with self._lock:
            if self._destroyed:
                return
            self._destroyed = self._stopping = True
            proc = self._proc
        ifconfig = self.programs.ifconfig
        taps, self._taps = self._taps[::-1], []  # the last made first
        bridge, self.bridge = self.bridge, None
        consoles, self._consoles = self._consoles, []
        restored = state_files(self.restore_from) if self.restore_from else []
        if self._suspend_failed and self._suspend_to is not None:
            restored += state_files(self._suspend_to)
        run_all(lambda: self._stop_bhyve(proc),
                lambda: self._run(self.plan.destroy),  # vmrun.sh: "Cleanup /dev/vmm entry"
                *[functools.partial(self._run, tap_destroy_argv(ifconfig, tap)) for tap in taps],
                lambda: bridge and self._run(bridge_destroy_argv(ifconfig, bridge)),
                *[stream.close for stream in consoles],
                # the suspended state it resumed from: refvm's save() made these files
                *[functools.partial(path.unlink, missing_ok=True) for path in restored])

    def _stop_bhyve(self, proc) -> None:
        if proc is not None:
            stop(proc, self.stop_grace)
        if self._thread is not None:
            self._thread.join(self.stop_grace + 5)

    # The programs, in order ------------------------------------------------------------------
    def _supervise(self) -> None:
        """bhyveload then bhyve; again after a guest reboot when asked (vmrun.sh's loop). A
        restored machine starts with ``bhyve -r`` and no loader; a reboot boots afresh."""
        resuming = self.restore_from is not None
        while True:
            if self.plan.loader and not resuming:
                code = self._run_child(self.plan.loader)
                if code is None:
                    return
                if code != 0:
                    return self._finish(ExitInfo(
                        "error", code, f"bhyveload exited {code}: "
                        + self._child_output().replace("\n", " | ")))
            code = self._run_child(restore_argv(self.plan.bhyve, self.restore_from)
                                   if resuming else self.plan.bhyve)
            resuming = False
            if code is None:
                return
            if code == 0 and self._suspending:
                return self._finish(ExitInfo("suspended", 0, f"bhyve: suspended to "
                                             f"{self._suspend_to} (bhyvectl --suspend)"))
            if code == 0 and self.relaunch_on_reboot and not self._stopping:
                self.reboots += 1
                self._note(f"guest reboot {self.reboots}: relaunching")
                continue
            return self._finish(exit_info(code, self.reboots, self._child_output()))

    def _run_child(self, argv: list) -> int | None:
        """Run one program to its end; None if destroy() came first."""
        with self._lock:
            if self._stopping:
                self._finish(ExitInfo("killed", None, "stopped by the harness"))
                return None
            try:
                self._child_from = self._log_size()
                self._proc = spawn(argv, self.log_path)
            except OSError as err:
                self._finish(ExitInfo("error", None, f"cannot run {argv[0]}: {err}"))
                return None
        code = self._proc.wait()
        with self._lock:
            self._proc = None
            if self._stopping:
                self._finish(exit_info(code) if code >= 0 else
                             ExitInfo("killed", code, "stopped by the harness"))
                return None
        return code

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def _child_output(self, lines: int = 5) -> str:
        """The last lines the current (or last) program wrote, its stderr included: the log
        from where it started, without refvm's own notes (another thread's bhyvectl call)."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._child_from)
                text = log.read()[-16384:].decode("utf-8", "replace")
        except OSError:
            return ""
        own = [line.rstrip("\r") for line in text.splitlines()
               if line.strip() and not line.startswith("[refvm ")]
        return "\n".join(own[-lines:])

    def _finish(self, info: ExitInfo) -> None:
        if not self._done.is_set():
            self._exit = info
            self._note(f"exit: {info}")
            self._done.set()


def _convert(argv: list[str]) -> None:
    """A qcow2 image's raw private copy (qemu-img convert), or an infrastructure error."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise InfraError(f"cannot convert the boot image to raw for bhyve ({argv[0]}: {err}); "
                         "install qemu-img (FreeBSD: the qemu package, emulators/qemu)") from None
    if done.returncode != 0:
        raise InfraError(f"{shlex.join(argv[:3])} failed: {done.stderr.strip()[-300:]}")
