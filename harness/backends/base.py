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
    poweroff, reboot, halt, triple-fault, panic, error, killed."""

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

    @abc.abstractmethod
    def wait_exit(self, timeout: float) -> ExitInfo | None:
        """Wait up to ``timeout`` seconds for the hypervisor to exit; None if still running."""

    @abc.abstractmethod
    def destroy(self) -> None:
        """Stop the VM and release everything it holds. Idempotent."""


class Backend(abc.ABC):
    name: str = ""
    firmwares: tuple = ()

    def unsupported(self, spec_firmware: str) -> str | None:
        """Why this backend cannot run a firmware profile, or None if it can."""
        if spec_firmware not in self.firmwares:
            return f"the {self.name} backend has no {spec_firmware} firmware"
        return None

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for reports: which hypervisor, version and accelerator."""

    @abc.abstractmethod
    def command_lines(self, spec: VmSpec) -> list[list[str]]:
        """The exact argv lists start() would run, in order, for plans and repro."""

    def plan_details(self, spec: VmSpec) -> str | None:
        """Anything a plan should show beyond the command lines (libvirt: the domain XML)."""
        return None

    @abc.abstractmethod
    def start(self, spec: VmSpec) -> Machine:
        """Start the VM paused; the caller owns the Machine and must destroy() it."""
