"""bhyve, bhyveload, bhyvectl and ifconfig argv lists for one VmSpec (pure: no I/O).

Everything here is a list of strings for execve, never a shell string. Option names are the
ones bhyve(8) and bhyve_config(5) document; which ones a host accepts comes from BhyveCaps.

PCI slot rule (deterministic, so two runs of a case give the same guest device paths):
    0       hostbridge  (bhyve(8): "usually configured at slot 0, and is required by most
                         guest operating systems")
    1       left empty  (where bhyve(8)'s examples and vmrun.sh put lpc)
    2       the boot disk
    3..     the other disks, in VmSpec order
    then    the NICs, in VmSpec order
    31      lpc         (Windows wants the LPC bridge at 31; its COM ports misbehave elsewhere)
so at most 29 devices (slots 2..30).

Host-side names derive from the VM name (crc32, so the same name always gives the same units;
two concurrent VMs collide with odds of 1 in 10000):
    COMn of a VM  ->  nmdm unit  vm_number * 4 + (n - 1), A side to bhyve, B side to us
    NIC i of a VM ->  tap unit   vm_number * 8 + i        (at most 8 NICs)

Each VM with NICs gets its own bridge, made per run with ``ifconfig bridge create`` (which
prints the new name: ifconfig(8) "If creation of an arbitrary device is successful, the new
device name is printed to standard output"), so its name is only known at run time; plans show
it as ``bridgeN``. The bridge holds the host's end of a per-VM /24, and the guest, which no DHCP
server answers there, configures the other address itself:
    host (bridge)  10.210.net_number.1/24        guest  10.210.net_number.2/24
    net_number = crc32(VM name) % 254 + 1, in 1..254 (never 0 or 255)
Two concurrent VMs get the same /24 with odds of 1 in 254 (k VMs: about k(k-1)/508, 2.4% for
4). The backend refuses to start such a VM (the host address is already on another interface)
rather than misroute it; run names differ per run, so a rerun draws another number.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

from ...vmspec import Disk, Nic, VmSpec
from .caps import BhyveCaps

HOSTBRIDGE_SLOT, LPC_SLOT = 0, 31
FIRST_DEVICE_SLOT, LAST_DEVICE_SLOT = 2, 30
COM_PORTS = ("com1", "com2", "com3", "com4")
MAX_NICS = 8
NMDM_PATTERN = "/dev/nmdm{unit}{side}"
NET_PREFIX = "10.210"  # each VM's bridge: 10.210.net_number(name).0/24
BRIDGE_PLACEHOLDER = "bridgeN"  # plans: the name `ifconfig bridge create` prints at run time
SERIAL_MAX = 20  # bhyve_config(5): "Serial number of up to twenty characters" (ahci, nvme, vtblk)
NVME_SECTOR_SIZES = (512, 4096, 8192)  # bhyve_config(5) nvme sectsz: "one of 512, 4096, or 8192"


@dataclass(frozen=True)
class Bootrom:
    """``-l bootrom,CODE[,VARS]``: the firmware image and, where supported, this VM's vars."""

    code: Path
    vars: Path | None = None


def vm_number(name: str) -> int:
    return zlib.crc32(name.encode()) % 10000


def nmdm_pair(name: str, port: str, pattern: str = NMDM_PATTERN) -> tuple[str, str]:
    """(A side for bhyve, B side for the harness) of a VM's COM port."""
    unit = vm_number(name) * 4 + COM_PORTS.index(port)
    return pattern.format(unit=unit, side="A"), pattern.format(unit=unit, side="B")


def net_number(name: str) -> int:
    """The third octet of a VM's 10.210.x.0/24 (see the module docstring)."""
    return zlib.crc32(name.encode()) % 254 + 1


def bridge_addresses(name: str) -> tuple[str, str]:
    """(host address on the VM's bridge, the guest's static address), both in CIDR form."""
    n = net_number(name)
    return f"{NET_PREFIX}.{n}.1/24", f"{NET_PREFIX}.{n}.2/24"


def tap_names(spec: VmSpec) -> list[str]:
    base = vm_number(spec.name) * MAX_NICS
    return [f"tap{base + index}" for index in range(len(spec.nics))]


# What a spec asks for that this bhyve cannot give -----------------------------------------------
def problems(spec: VmSpec, caps: BhyveCaps) -> list[str]:
    """Every reason this host's bhyve cannot run ``spec``; empty when it can."""
    found = [caps.lacks_emulation("hostbridge"), caps.lacks_emulation("lpc")]
    if len(spec.disks) + len(spec.nics) > LAST_DEVICE_SLOT - FIRST_DEVICE_SLOT + 1:
        found.append(f"{len(spec.disks)} disks and {len(spec.nics)} NICs do not fit PCI "
                     f"slots {FIRST_DEVICE_SLOT}..{LAST_DEVICE_SLOT}")
    if len(spec.nics) > MAX_NICS:
        found.append(f"at most {MAX_NICS} NICs per VM (tap unit numbering), got {len(spec.nics)}")
    for disk in spec.disks:
        found += _disk_problems(disk, caps)
    for nic in spec.nics:
        found.append(caps.lacks_emulation(nic.model))
        if nic.network != "user":
            found.append(f"NIC {nic.mac}: network {nic.network!r} has no bhyve mapping "
                         f"(only 'user', which becomes a tap on the VM's own bridge)")
    for port in spec.serials:
        if port.name not in COM_PORTS:
            found.append(f"serial port {port.name!r}: bhyve's LPC has only {', '.join(COM_PORTS)}")
        else:
            found.append(caps.lacks_lpc(port.name))
    if spec.firmware in ("uefi", "csm"):
        found.append(caps.lacks_lpc("bootrom"))
    return list(dict.fromkeys(reason for reason in found if reason))  # each reason once


def _disk_problems(disk: Disk, caps: BhyveCaps) -> list[str]:
    where = f"disk {disk.path}"
    found = [caps.lacks_emulation(disk.bus)]
    if disk.format != "raw":
        found.append(f"{where}: bhyve's block backend reads raw images only, not {disk.format}")
    if "," in str(disk.path):
        found.append(f"{where}: bhyve splits device options on ',' so the path cannot hold one")
    if disk.serial is not None:
        if len(disk.serial) > SERIAL_MAX or any(c in disk.serial for c in ",="):
            found.append(f"{where}: serial {disk.serial!r} must be at most {SERIAL_MAX} "
                         f"characters without ',' or '='")
        if disk.bus in ("virtio-blk", "ahci-hd") and not caps.config_options:
            found.append(f"{where}: bhyve on FreeBSD {caps.release_name} has no ser= for "
                         f"{disk.bus} (bhyve_config(5) device options came with FreeBSD 13.1)")
    if disk.bus == "nvme":
        if disk.sector_size and disk.sector_size not in NVME_SECTOR_SIZES:
            found.append(f"{where}: nvme sectsz must be one of {NVME_SECTOR_SIZES}, "
                         f"not {disk.sector_size}")
        if disk.readonly and not caps.config_options:
            found.append(f"{where}: bhyve on FreeBSD {caps.release_name} cannot make an nvme "
                         f"namespace read-only (block options on nvme came with FreeBSD 13.1)")
    return found


# Device options -------------------------------------------------------------------------------
def nvme_serial(index: int, disk: Disk) -> str:
    """The same default the QEMU backend gives, so both hypervisors show the guest one serial."""
    return disk.serial or f"REFVM{index:04d}"


def disk_device(index: int, disk: Disk) -> str:
    """``emulation,path[,options]`` for ``-s slot,...``.

    virtio-blk / ahci-hd, bhyve(8) "Block storage device backends": ``ro`` "Force the file to
    be opened read-only", ``sectorsize=logical[/physical]`` (physical defaults to logical);
    ``ser=`` is the serial (bhyve(8) AHCI backends; bhyve_config(5) "VirtIO Block Device
    Settings"). nvme, bhyve(8) "NVMe device backends": ``sectsz=`` "Sector size", ``ser=``
    "Serial number with maximum 20 characters"; ``ro`` from bhyve_config(5) ("block device
    settings described above" apply to nvme).
    """
    options = [str(disk.path)]
    if disk.bus == "ahci-cd":
        return ",".join(["ahci-cd"] + options)  # a CD is read-only by nature
    if disk.readonly:
        options.append("ro")
    if disk.bus == "nvme":
        if disk.sector_size:
            options.append(f"sectsz={disk.sector_size}")
        options.append(f"ser={nvme_serial(index, disk)}")
    else:
        if disk.sector_size:
            options.append(f"sectorsize={disk.sector_size}")
        if disk.serial:
            options.append(f"ser={disk.serial}")
    return ",".join([disk.bus] + options)


def nic_device(nic: Nic, tap: str) -> str:
    """bhyve(8) network backend ``tapN[,mac=xx:xx:xx:xx:xx:xx]``."""
    return f"{nic.model},{tap},mac={nic.mac}"


def cpu_setting(spec: VmSpec) -> str:
    """bhyve -c: the count, or ``cpus=N,sockets=S,cores=C,threads=T`` (FreeBSD 12.0+)."""
    if spec.topology is None:
        return str(spec.cpus)
    sockets, cores, threads = spec.topology
    return f"cpus={spec.cpus},sockets={sockets},cores={cores},threads={threads}"


def pci_slots(spec: VmSpec, taps: list[str]) -> list[str]:
    """The ``-s`` values, in slot order (see the module docstring for the rule)."""
    slots = [f"{HOSTBRIDGE_SLOT},hostbridge"]
    numbered = list(enumerate(spec.disks))
    boot = next(i for i, d in numbered if d.boot)
    ordered = [numbered[boot]] + [item for item in numbered if item[0] != boot]
    devices = [disk_device(index, disk) for index, disk in ordered]
    devices += [nic_device(nic, tap) for nic, tap in zip(spec.nics, taps)]
    slots += [f"{slot},{device}" for slot, device in enumerate(devices, FIRST_DEVICE_SLOT)]
    slots.append(f"{LPC_SLOT},lpc")
    return slots


# Whole command lines --------------------------------------------------------------------------
def bhyve_argv(bhyve: str, spec: VmSpec, caps: BhyveCaps, bootrom: Bootrom | None,
               nmdm_pattern: str = NMDM_PATTERN) -> list[str]:
    """The bhyve command line. Flags, from bhyve(8):

    -c N    "Number of guest virtual CPUs and/or the CPU topology" (a plain count: VmSpec
            has no sockets/cores/threads)
    -m NM   "If no suffix is given, the value is assumed to be in megabytes"; we say M
    -H      "Yield the virtual CPU thread when a HLT instruction is detected" (else 100% CPU)
    -w      "Ignore accesses to unimplemented Model Specific Registers" (else the guest gets
            a #GP for MSRs bhyve does not emulate; x86.strictmsr defaults to true)
    -u      "RTC keeps UTC time", when the guest wants UTC (Windows does not)
    -A      usage(): "-A: create ACPI tables"; only where the flag exists (a no-op kept
            "for backward compatibility" on main, gone from 15's synopsis)
    -D      "Destroy the VM on guest initiated power-off", where it exists
    -U      "Set the universally unique identifier (UUID) in the guest's System Management
            BIOS System Information structure"
    """
    argv = [bhyve, "-c", cpu_setting(spec), "-m", f"{spec.memory_mib}M", "-H", "-w"]
    if spec.utc_clock:
        argv.append("-u")
    if caps.acpi_flag:
        argv.append("-A")
    if caps.destroy_flag:
        argv.append("-D")
    for slot in pci_slots(spec, tap_names(spec)):
        argv += ["-s", slot]
    for port in spec.serials:
        argv += ["-l", f"{port.name},{nmdm_pair(spec.name, port.name, nmdm_pattern)[0]}"]
    if bootrom is not None:
        files = [str(bootrom.code)] + ([str(bootrom.vars)] if bootrom.vars else [])
        argv += ["-l", ",".join(["bootrom"] + files)]
    argv += ["-U", spec.uuid, spec.name]
    return argv


def bhyveload_argv(bhyveload: str, spec: VmSpec, nmdm_pattern: str = NMDM_PATTERN) -> list[str]:
    """bhyveload(8): ``-c cons-dev`` (the same nmdm A side bhyve's COM1 uses, so the loader's
    output reaches the harness on the B side), ``-m mem-size`` (bhyve(8): "This must be the
    same size that was given to bhyveload"), ``-d disk-path`` (the boot disk)."""
    console = nmdm_pair(spec.name, "com1", nmdm_pattern)[0]
    return [bhyveload, "-c", console, "-m", f"{spec.memory_mib}M",
            "-d", str(spec.boot_disk.path), spec.name]


def suspend_argv(bhyvectl: str, name: str, state: Path) -> list[str]:
    """bhyvectl (BHYVE_SNAPSHOT builds; usage ``[--suspend=<filename>]``): asks the VM's bhyve
    to checkpoint into FILE, FILE.kern and FILE.meta, then to exit (see state_files)."""
    return [bhyvectl, f"--vm={name}", f"--suspend={state}"]


def state_files(state: Path) -> list[Path]:
    """What a suspend writes (snapshot.c vm_checkpoint): FILE, the guest's memory; FILE.kern,
    vmm.ko's and the devices' state; FILE.meta, JSON metadata (vCPUs, memory size, name)."""
    state = Path(state)
    return [state, state.with_name(state.name + ".kern"), state.with_name(state.name + ".meta")]


def restore_argv(bhyve: list[str], state: Path) -> list[str]:
    """bhyve(8) ``-r file``: "Resume a guest from a snapshot. The guest memory contents are
    restored from file, and the guest device and vCPU state are restored from the file
    file.kern"; "the configuration of devices in the new VM [must] match the VM from which the
    snapshot was taken by specifying the same -s and -l options" (the vCPU count and memory
    size come from the snapshot). So: the VM's own command line with -r before its name."""
    return bhyve[:-1] + ["-r", str(state), bhyve[-1]]


def destroy_argv(bhyvectl: str, name: str) -> list[str]:
    """bhyvectl(8) example: ``bhyvectl --vm=fbsd10 --destroy``."""
    return [bhyvectl, f"--vm={name}", "--destroy"]


def bridge_create_argv(ifconfig: str, mark: str) -> list[str]:
    """ifconfig(8) ``create`` without a unit number: a new bridge(4), whose name (e.g.
    ``bridge3``) ifconfig prints on standard output. ``description`` (a parameter the synopsis
    allows after ``create``) marks it as refvm's at birth (bhyve.ifaces)."""
    return [ifconfig, "bridge", "create", "description", mark]


def bridge_address_argv(ifconfig: str, bridge: str, address: str) -> list[str]:
    """ifconfig(8): ``inet`` with the netmask in CIDR notation ("one can specify an address
    like 192.168.0.1/16"); bridge(4): "The bridge can be used as a regular host interface at
    the same time as bridging between its member ports"."""
    return [ifconfig, bridge, "inet", address]


def bridge_up_argv(ifconfig: str, bridge: str) -> list[str]:
    """bridge(4): "For the bridge to forward packets, all member interfaces and the bridge
    need to be up"."""
    return [ifconfig, bridge, "up"]


def tap_create_argvs(ifconfig: str, tap: str, bridge: str, mark: str) -> list[list[str]]:
    """ifconfig(8): create the tap marked as refvm's (``description``), make it a bridge
    member (``addm``), bring it up."""
    return [[ifconfig, tap, "create", "description", mark], [ifconfig, bridge, "addm", tap],
            [ifconfig, tap, "up"]]


def network_argvs(ifconfig: str, bridge: str, address: str, taps, mark: str) -> list[list[str]]:
    """What follows ``ifconfig bridge create`` (which printed ``bridge``), in run order: the
    host address on the bridge, each tap made and added, the bridge up."""
    lines = [bridge_address_argv(ifconfig, bridge, address)]
    for tap in taps:
        lines += tap_create_argvs(ifconfig, tap, bridge, mark)
    return lines + [bridge_up_argv(ifconfig, bridge)]


def tap_destroy_argv(ifconfig: str, tap: str) -> list[str]:
    return [ifconfig, tap, "destroy"]


def bridge_destroy_argv(ifconfig: str, bridge: str) -> list[str]:
    return [ifconfig, bridge, "destroy"]
