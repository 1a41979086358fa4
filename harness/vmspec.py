"""The backend-neutral description of one VM: what every backend turns into its command line.

Guests and scenarios are translated into a VmSpec once; QEMU, bhyve and libvirt only translate a
VmSpec. That is what lets a differential run compare the same VM on two hypervisors.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

DISK_BUSES = ("virtio-blk", "nvme", "ahci-hd", "ahci-cd")
SEED_DISC = "cidata.iso"  # a cloud image's NoCloud seed disc, in the VM's workdir


@dataclass(frozen=True)
class Disk:
    """A block device. ``boot`` marks the disk firmware boots from (there is exactly one).

    ``ephemeral``: the guest reads and writes it, but its writes go to a view private to this
    VM and are gone when it ends; ``path`` itself (a cached, verified image) is never written.
    Guests write to their root file system on first boot (host keys, growfs, systemd's
    remount), so a boot disk is ephemeral rather than read-only. How each backend makes the
    view: QEMU a qcow2 overlay in the workdir backed by the image; bhyve (raw files only)
    and libvirt a sparse private copy in the VM's workdir (``private_copies``)."""

    path: Path
    bus: str = "virtio-blk"
    readonly: bool = False
    format: str = "raw"
    boot: bool = False
    # The firmware may boot this one after the boot disk: an installer's disc behind an empty
    # system disk. OVMF drops PCI boot options QEMU's boot order does not name, so a disc left
    # out of the order is never tried (QEMU bootindex=1, libvirt <boot order="2"/>).
    fallback_boot: bool = False
    serial: str | None = None
    sector_size: int | None = None  # logical = physical, bytes
    ephemeral: bool = False
    iops_limit: int | None = None  # QEMU throttling (see model.DiskAttach); others ignore it


@dataclass(frozen=True)
class Nic:
    model: str = "virtio-net"
    mac: str = "52:54:00:00:00:01"
    network: str = "user"  # QEMU user-mode network; bhyve/libvirt map this to a tap/bridge
    ssh_forward: bool = False  # the harness reaches the guest's sshd through this NIC


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
    topology: tuple | None = None  # (sockets, cores, threads); None: the hypervisor's default
    # A guest reboot restarts the VM instead of ending it (an OS installer reboots several
    # times): QEMU without -no-reboot, bhyve relaunched on its exit 0. Test boots end on one.
    survive_reboot: bool = False

    @property
    def vars_path(self) -> Path:
        """The VM's own UEFI vars file (every backend keeps it here, made from a template)."""
        return self.workdir / "uefi-vars.fd"

    @property
    def boot_disk(self) -> Disk:
        return next(d for d in self.disks if d.boot)


def private_copies(spec: VmSpec, raw_only: bool = False) -> tuple[VmSpec, list[tuple[Path, Path]]]:
    """For hypervisors without a copy-on-write view: ``spec`` with each ephemeral disk
    pointing at a private copy in its workdir, and the (image, copy) pairs to make.
    ``raw_only`` (bhyve): the copy of an image in another format (a qcow2 cloud image) is a
    raw file, named ``.raw``: whoever makes it converts (see converts)."""
    copies, disks = [], []
    for index, disk in enumerate(spec.disks):
        if disk.ephemeral:
            convert = raw_only and disk.format != "raw"
            name = f"{disk.path.stem}.raw" if convert else disk.path.name
            copy = spec.workdir / f"private-{index}-{name}"
            copies.append((disk.path, copy))
            disk = replace(disk, path=copy, ephemeral=False,
                           format="raw" if convert else disk.format)
        disks.append(disk)
    return replace(spec, disks=tuple(disks)), copies
