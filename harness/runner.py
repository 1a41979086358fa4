"""Running cases: one Run per harness invocation, one BootedVM per booted guest.

A Run owns everything it creates (scratch directory, VMs) under one run id, and its close()
releases all of it; the pytest plugin calls close() at session end whatever happened, and on
SIGTERM/SIGINT. The VM is acquired separately from the steps that use it so that, later, one
booted VM can serve several scenarios.
"""
from __future__ import annotations

import functools
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .backends.base import Backend, Machine
from .cleanup import run_all
from .console.log import ConsoleLog
from .console.serial import SerialConsole
from .errors import GuestFailure
from .families import family
from .guestos import driver_for
from .matrix import Case, vcpus_of
from .paths import temp_root
from .ownership import claim, mark_kept, new_id
from .steps import REGISTRY
from .hostdata import file_sha256, make_scratch_disk, pattern, sha256, write_region
from .model import DiskAttach, NicAttach, SerialAttach
from .vmspec import SEED_DISC, Disk, Nic, SerialPort, VmSpec


def new_run_id() -> str:
    return new_id()


def safe_dirname(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


@dataclass
class BootedVM:
    spec: VmSpec
    machine: Machine
    console: SerialConsole
    log: ConsoleLog
    guest: object = None  # the guest-OS driver on the console (harness.guestos)
    ssh: object = None  # the same driver over SSH, once a step asked for channel: ssh
    closed: bool = False
    facts: dict = field(default_factory=dict)  # what host-side preparation recorded
    runner: object = None  # the Run that booted it (restarts go through it)
    backend: object = None
    case: object = None
    restarts: int = 0

    def close(self) -> None:
        """Destroy the VM and its scratch files; keep the logs. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        run_all(lambda: self.ssh is not None and self.ssh.close(), self.console.close,
                self.log.close, self.machine.destroy,
                lambda: shutil.rmtree(self.spec.workdir, ignore_errors=True))


@dataclass
class StepContext:
    """What a step sees: the case, the booted VM, its guest-OS driver, and a recorder."""

    case: Case
    vm: BootedVM
    record: Callable[[str, object], None]
    deadline: float
    faults: frozenset = frozenset()  # injected corruption, for the harness's own tests only
    channel: str = "console"  # the step's channel: console, or ssh (harness.guestos.ssh)

    @property
    def guest(self):
        """The guest-OS driver: steps run commands through it, never on the console. A step
        with ``channel: ssh`` gets the same driver's commands over SSH (connected once)."""
        if self.channel == "ssh":
            if self.vm.ssh is None:
                from .guestos.ssh import connect_ssh
                self.vm.ssh = connect_ssh(self)
            return self.vm.ssh
        return self.vm.guest

    def remaining(self, wanted: float) -> float:
        """A step's timeout, cut to what is left of the scenario's own timeout."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise GuestFailure(f"scenario timeout ({self.case.scenario.timeout:.0f}s) reached; "
                               f"last console lines:\n{self.vm.log.tail()}")
        return min(wanted, left)


class Run:
    def __init__(self, backend: Backend | None, artifacts: Path, run_id: str | None = None,
                 faults: frozenset = frozenset()):
        self.backend = backend
        self.faults = faults
        self.run_id = run_id or new_run_id()
        self.artifacts = Path(artifacts)
        self.workroot = temp_root() / f"refvm-{self.run_id}"
        self._claimed = False
        self._serial = 0
        self._live: list[BootedVM] = []
        self._kept: list[BootedVM] = []  # refvm run --keep-failed (harness/keep.py)

    def vm_spec(self, case: Case, image: Path, backend: Backend | None = None) -> VmSpec:
        """The VM for a case: the guest's boot disk plus what the scenario attaches, in the
        scenario's shape (vCPUs, topology, RTC). No I/O."""
        self._serial += 1
        guest = case.guest
        workdir = self.workroot / str(self._serial)
        # The guest may write its boot disk (first-boot host keys, growfs, a read-write /);
        # what it writes stays in a per-case view, the cached image is never changed.
        disks = [Disk(path=Path(image), bus=guest.boot_bus, ephemeral=True, boot=True,
                      format=guest.image.format)]
        if guest.cloud_init:  # the NoCloud seed disc (written at boot: seed_disc below)
            disks.append(Disk(path=workdir / SEED_DISC, bus="ahci-cd", readonly=True))
        nics, serials = [], [SerialPort("com1", "console")]
        for item in case.scenario.attach:
            if isinstance(item, DiskAttach):
                disks.append(Disk(path=workdir / f"{item.id}.raw", bus=item.bus,
                                  readonly=item.readonly, serial=item.serial,
                                  sector_size=item.sector_size, iops_limit=item.iops_limit))
            elif isinstance(item, NicAttach):
                nics.append(Nic(model=item.model, mac=item.mac, ssh_forward=item.ssh))
            elif isinstance(item, SerialAttach):
                serials.append(SerialPort(item.port, "data"))
        cpus, topology = vcpus_of(case, backend or self.backend)
        shape = case.scenario.vm
        return VmSpec(
            name=f"refvm-{self.run_id}-{self._serial}",
            memory_mib=guest.memory >> 20, cpus=cpus, firmware=case.firmware,
            uuid=str(uuid.uuid4()),
            utc_clock=guest.utc_clock if shape.utc_clock is None else shape.utc_clock,
            workdir=workdir, logdir=self.artifacts / safe_dirname(case.id),
            disks=tuple(disks), nics=tuple(nics), serials=tuple(serials), topology=topology,
            survive_reboot="reboot" in case.scenario.needs)

    @staticmethod
    def prepare_attachments(case: Case, spec: VmSpec) -> dict:
        """Create the scenario's scratch disks and write the host's patterns into them.

        Returns facts for the steps: each disk's path, the sha256 of every region the host
        wrote, and the whole-file sha256 of read-only disks (which must not change).
        """
        facts = {}
        for item in case.scenario.attach:
            if not isinstance(item, DiskAttach):
                continue
            path = spec.workdir / f"{item.id}.raw"
            make_scratch_disk(path, item.size)
            host_sha = {}
            for region in item.regions:
                data = pattern(item.seed, region)
                write_region(path, region, data)
                host_sha[region] = sha256(data)
            facts[f"disk:{item.id}"] = {
                "path": path, "host_sha": host_sha,
                "file_sha": file_sha256(path) if item.readonly else None, "guest_sha": {}}
        return facts

    @staticmethod
    def seed_disc(case: Case, spec: VmSpec) -> dict:
        """A cloud image's NoCloud seed disc (harness/images/nocloud.py): the console user
        with its password hashed, the run's SSH key, a host key for this VM. Returns the
        facts the SSH channel needs (the client key, the host key to expect)."""
        guest = case.guest
        if not guest.cloud_init:
            return {}
        from .console.ssh import new_client_key
        from .images.nocloud import new_seed, write_seed_disc
        key = new_client_key()
        seed = new_seed(guest.console.user, guest.console.password, key.public_line,
                        guest.cloud_init.hostname, spec.name)
        write_seed_disc(seed, spec.workdir / SEED_DISC)
        return {"seed": {"client_key": key, "host_key": seed.host_key_public}}

    def boot(self, case: Case, image: Path, backend: Backend | None = None) -> BootedVM:
        """Start the VM paused, attach the console and its log, then let it run.

        ``backend`` overrides the run's own: a run over a pool of hosts has one per host
        (and then no default)."""
        backend = backend or self.backend
        if backend is None:
            raise ValueError("Run.boot needs a backend: this run has no default one")
        if not self._claimed:
            claim(self.workroot)  # owner.json: lets `refvm clean` tell live runs from dead ones
            self._claimed = True
        spec = self.vm_spec(case, image, backend)
        spec.workdir.mkdir(parents=True, exist_ok=True)
        machine = log = vm = None
        try:
            facts = {**self.prepare_attachments(case, spec), **self.seed_disc(case, spec)}
            machine = backend.start(spec)
            log = ConsoleLog(spec.logdir / "console.log", secrets=case.guest.console.secrets)
            log.note(f"{spec.name}: {case.id}; command line in command.txt")
            console = self._console(case, machine, log)
            vm = BootedVM(spec, machine, console, log, facts=facts,
                          guest=driver_for(case.guest, console, family(case.guest.family)),
                          runner=self, backend=backend, case=case)
            machine.resume()
            self._live.append(vm)
            return vm
        except BaseException:
            if vm is not None:
                vm.close()  # its console too
            else:
                run_all(lambda: log is not None and log.close(),
                        lambda: machine is not None and machine.destroy(),
                        lambda: shutil.rmtree(spec.workdir, ignore_errors=True))
            raise

    @staticmethod
    def _console(case: Case, machine, log: ConsoleLog) -> SerialConsole:
        def describe_eof() -> str:
            info = machine.wait_exit(5)
            return f"the hypervisor exited: {info}" if info else "the console closed"

        return SerialConsole(machine.open_console("com1"), log,
                             family(case.guest.family).failure_patterns, describe_eof)

    def restart(self, vm: BootedVM, fresh_vars: bool = False) -> None:
        """Start ``vm``'s VM again after it stopped: the same spec, disks and (unless
        ``fresh_vars``) UEFI vars file; the console log goes on. On QEMU the boot disk's
        ephemeral overlay is new (its writes were the first run's); a bhyve or libvirt
        private copy keeps them."""
        run_all(vm.console.close, vm.machine.destroy)
        if fresh_vars:
            vm.spec.vars_path.unlink(missing_ok=True)
        vm.log.note(f"starting {vm.spec.name} again"
                    + (" with a fresh UEFI vars file" if fresh_vars else ""))
        machine = vm.backend.start(vm.spec, again=True)
        vm.machine = machine
        vm.console = self._console(vm.case, machine, vm.log)
        vm.guest = driver_for(vm.case.guest, vm.console, family(vm.case.guest.family))
        machine.resume()
        vm.restarts += 1

    def save_restore(self, vm: BootedVM) -> dict:
        """Suspend ``vm`` to a file and restore it into a new hypervisor process; the guest's
        driver goes on where it was (logged in, at its shell) on the new console. Returns
        the figures: the state's size (all the files the suspend wrote: bhyve writes three)
        and the suspend and resume seconds."""
        state = vm.spec.workdir / "saved.state"
        started = time.monotonic()
        files = vm.machine.save(state) or [state]
        suspended = time.monotonic() - started
        size = sum(path.stat().st_size for path in files)
        run_all(vm.console.close, vm.machine.destroy)
        vm.log.note(f"suspended to {', '.join(path.name for path in files)} ({size} bytes) in "
                    f"{suspended:.1f}s; restoring into a new process")
        started = time.monotonic()
        machine = vm.backend.restore(vm.spec, state)
        vm.machine = machine
        vm.console = self._console(vm.case, machine, vm.log)
        vm.guest.console = vm.console
        machine.resume()
        return {"state_bytes": size, "suspend_seconds": round(suspended, 2),
                "resume_seconds": round(time.monotonic() - started, 2)}

    def run_steps(self, case: Case, vm: BootedVM, record: Callable[[str, object], None],
                  before_step: Callable | None = None) -> None:
        """Run the scenario's steps in order. ``before_step(step, vm)`` is a hook for the
        harness's own tests (e.g. to corrupt a disk image between two steps)."""
        ctx = StepContext(case, vm, record,
                          deadline=time.monotonic() + case.scenario.timeout, faults=self.faults)
        # The VM as this case made it (a variant may change the guest file's cpus or memory).
        record("vcpus", vm.spec.cpus)
        record("memory_mib", vm.spec.memory_mib)
        for number, step in enumerate(case.scenario.steps, 1):
            if before_step:
                before_step(step, vm)
            ctx.channel = step.args.get("channel") or "console"
            vm.log.note(f"step {number}: {step.kind} over {ctx.channel} "
                        f"(scenario line {step.line})")
            REGISTRY[step.kind].run(ctx, step.args)

    def release(self, vm: BootedVM) -> None:
        if vm in self._live:
            self._live.remove(vm)
        vm.close()

    def keep(self, vm: BootedVM) -> None:
        """Leave ``vm`` up past close(), for a person (harness/keep.py); the run directory
        is marked kept, so only an explicit `refvm clean` removes it if this process dies."""
        if vm in self._live:
            self._live.remove(vm)
        self._kept.append(vm)
        mark_kept(self.workroot, [v.spec.name for v in self._kept])

    def release_kept(self, vm: BootedVM) -> None:
        if vm in self._kept:
            self._kept.remove(vm)
        vm.close()

    def close_kept(self) -> None:
        """Destroy the kept VMs too, and remove the run's scratch directory."""
        run_all(*[functools.partial(self.release_kept, vm) for vm in reversed(self._kept)],
                self.close)

    def close(self) -> None:
        """Destroy every VM still alive and remove the run's scratch directory (unless VMs
        were kept: then close_kept() does that after their hand-over)."""
        run_all(*[functools.partial(self.release, vm) for vm in reversed(self._live)],
                lambda: self._claimed and not self._kept
                and shutil.rmtree(self.workroot, ignore_errors=True))
