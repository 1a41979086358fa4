"""The protocol every backend implements (small ABCs, in the style of labgrid's drivers).

A Backend plans and starts machines; a Machine is one running VM with a console, an exit we can
wait for and a destroy() that is always safe to call, however far start() got.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass

from ..errors import Unsupported
from ..vmspec import VmSpec

@dataclass(frozen=True)
class ExitInfo:
    """How a hypervisor run ended, in words a person reads in a CI report. ``kind`` is one of
    poweroff, reboot, halt, triple-fault, panic, error, killed, suspended (bhyve exits after
    writing a snapshot)."""

    kind: str
    code: int | None
    detail: str

    def __str__(self) -> str:
        code = "" if self.code is None else f", exit status {self.code}"
        return f"{self.kind} ({self.detail}{code})"


class Machine(abc.ABC):
    """One VM started by a backend."""

    spec: VmSpec
    # The model number this hypervisor's NVMe controller reports (it cannot be configured).
    nvme_model: str = ""

    @abc.abstractmethod
    def host_address_for_guest(self) -> str:
        """The address the guest connects to in order to reach a listener on the host."""

    def host_listen_address(self) -> str:
        """Where such a host listener binds. QEMU's user networking forwards the guest's
        connections to loopback; a bridged backend overrides this with the bridge address."""
        return "127.0.0.1"

    def guest_static_ipv4(self) -> str | None:
        """None: the backend's network offers DHCP (QEMU user networking does), and the guest
        gets its address from it. Otherwise the address, in CIDR form (``10.210.7.2/24``), the
        guest must configure on its NIC itself, because nothing on its network hands one out."""
        return None

    def ssh_endpoint(self) -> tuple[str, int]:
        """(host, port) where the harness reaches the guest's sshd (port 22 of the NIC marked
        ``ssh_forward``). QEMU: a user-networking host forward on loopback. Backends without
        one say so (an infrastructure error: the scenario cannot use ``channel: ssh`` there)."""
        raise Unsupported(f"the {type(self).__name__} backend offers no SSH path to the guest "
                          "yet (QEMU does, through a host forward on loopback)")

    @abc.abstractmethod
    def open_console(self, port: str = "com1"):
        """Return a stream (with fileno()) connected to the given serial port."""

    @abc.abstractmethod
    def resume(self) -> None:
        """Let the vCPUs run. Machines start paused so no console output is lost."""

    @abc.abstractmethod
    def poll(self) -> ExitInfo | None:
        """The exit, if the hypervisor has exited; None while it runs."""

    def resets(self) -> int:
        """How often the guest reset the machine while it ran (reboots, triple faults)."""
        return 0

    def triple_faults(self) -> int | None:
        """How many of those resets were triple faults; None where the hypervisor does not
        say (QEMU under KVM; libvirt). bhyve ends on a triple fault (exit 3): it never resets
        after one, so 0."""
        return None

    def save(self, state) -> list | None:
        """Suspend the running VM into the file ``state`` (the ``save-restore`` need). Returns
        every file the suspend wrote when that is more than ``state`` (bhyve), else None."""
        raise NotImplementedError(f"{type(self).__name__} cannot save a VM")

    @abc.abstractmethod
    def wait_exit(self, timeout: float) -> ExitInfo | None:
        """Wait up to ``timeout`` seconds for the hypervisor to exit; None if still running."""

    @abc.abstractmethod
    def destroy(self) -> None:
        """Stop the VM and release everything it holds. Idempotent."""


# What each machine need (harness.model.MACHINE_NEEDS) means, for skip reasons.
NEED_WORDS = {
    "restart": "start the same VM again with its vars file and disks",
    "reboot": "let a guest reboot and keep running it",
    "save-restore": "suspend a running VM to a file and restore it in a new process",
    "vars-file": "keep UEFI variables in a file apart from the firmware ROM",
    "ssh": "reach the guest's sshd from this host",
}


class Backend(abc.ABC):
    name: str = ""
    firmwares: tuple = ()
    needs: tuple = ()  # the MACHINE_NEEDS this backend implements

    def unsupported(self, spec_firmware: str) -> str | None:
        """Why this backend cannot run a firmware profile, or None if it can."""
        if spec_firmware not in self.firmwares:
            return f"the {self.name} backend has no {spec_firmware} firmware"
        return None

    def lacks(self, need: str, firmware: str) -> str | None:
        """Why this backend cannot do ``need`` for a VM booted with ``firmware``, or None."""
        if need == "vars-file" and firmware != "uefi":
            return f"{firmware} firmware has no UEFI variable store"
        if need not in self.needs:
            return f"the {self.name} backend cannot {NEED_WORDS[need]}"
        return None

    def max_vcpus(self) -> tuple[int, str]:
        """The most vCPUs one VM may have here, and where that limit comes from."""
        return 16, f"the {self.name} backend's assumed limit"

    def vcpu_problem(self, cpus: int, topology) -> str | None:
        """Why a VM of ``cpus`` vCPUs (``topology``: (sockets, cores, threads) or None)
        cannot run here, or None. Refused before start, with the limit's source."""
        limit, source = self.max_vcpus()
        if cpus > limit:
            return f"{cpus} vCPUs is above the maximum of {limit} ({source})"
        return None

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for reports: which hypervisor, version and accelerator."""

    @abc.abstractmethod
    def command_lines(self, spec: VmSpec) -> list[list[str]]:
        """The exact argv lists start() would run, in order, for plans and repro."""

    def firmware_files(self, profile: str) -> list:
        """The firmware file(s) a profile boots from on this host, for reports (their names and
        sha256); [] when it needs none or the backend does not say. Raises InfraError when a
        file it needs is missing."""
        return []

    def plan_details(self, spec: VmSpec) -> str | None:
        """Anything a plan should show beyond the command lines (libvirt: the domain XML)."""
        return None

    def restore(self, spec: VmSpec, state) -> Machine:
        """A new hypervisor process running ``spec``'s VM from the file ``state``, paused."""
        raise NotImplementedError(f"the {self.name} backend cannot restore a VM")

    @abc.abstractmethod
    def start(self, spec: VmSpec, again: bool = False) -> Machine:
        """Start the VM paused; the caller owns the Machine and must destroy() it.

        ``again``: the same VM a second time, after it stopped (the ``restart`` need): its
        UEFI vars file and private disk copies are the ones the first start made, kept."""
