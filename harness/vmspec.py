"""The backend-neutral description of one VM: what every backend turns into its command line.

Guests and scenarios are translated into a VmSpec once; QEMU, bhyve and libvirt only translate a
VmSpec. That is what lets a differential run compare the same VM on two hypervisors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DISK_BUSES = ("virtio-blk", "nvme", "ahci-hd", "ahci-cd")


@dataclass(frozen=True)
class Disk:
    """A block device. ``boot`` marks the disk firmware boots from (there is exactly one)."""

    path: Path
    bus: str = "virtio-blk"
    readonly: bool = False
    format: str = "raw"
    boot: bool = False
    serial: str | None = None
    sector_size: int | None = None  # logical = physical, bytes


@dataclass(frozen=True)
class Nic:
    model: str = "virtio-net"
    mac: str = "52:54:00:00:00:01"
    network: str = "user"  # QEMU user-mode network; bhyve/libvirt map this to a tap/bridge


@dataclass(frozen=True)
class SerialPort:
    """An LPC UART. COM1 is always the console; others are data channels for scenarios."""

    name: str  # com1 .. com4
    role: str = "console"


@dataclass(frozen=True)
class VmSpec:
    name: str
    memory_mib: int
    cpus: int
    firmware: str  # uefi | csm | bhyveload
    uuid: str
    utc_clock: bool
    workdir: Path  # per-VM scratch: sockets, vars copy, scratch disks; removed at teardown
    logdir: Path  # per-VM artifacts kept after the run: console and hypervisor logs
    disks: tuple = field(default_factory=tuple)
    nics: tuple = field(default_factory=tuple)
    serials: tuple = (SerialPort("com1", "console"),)

    @property
    def boot_disk(self) -> Disk:
        return next(d for d in self.disks if d.boot)
