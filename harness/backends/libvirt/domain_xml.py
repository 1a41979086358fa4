"""Domain XML for libvirt, built with ElementTree from a VmSpec, for two libvirt drivers.

``qemu`` (qemu:///system, domain type 'qemu' = TCG or 'kvm'): the same VM the direct QEMU backend
runs: q35, OVMF as a read-only pflash CODE image plus a per-VM VARS copy (``<nvram template>``),
SeaBIOS (``<loader type='rom'>``, i.e. -bios) standing in for bhyve's CSM, COM1 console and
further ISA UARTs as data channels (pty chardevs: libvirt's virDomainOpenConsole reaches them
locally and over a remote URI alike), virtio-blk / NVMe / SATA disks with serial numbers and
block sizes, user-mode virtio-net, and every lifecycle action set to destroy (like -no-reboot;
a VM that survives reboots restarts on one), a <cpu><topology> and <iotune> when asked.
Where the connected libvirt has no NVMe disk bus (libvirt 9.0's domain capabilities list none),
NVMe disks become QEMU's own ``-device nvme`` through libvirt's documented QEMU namespace
(``<qemu:commandline>``, drvqemu "Pass-through of arbitrary qemu commands"), with the drive and
device properties the QEMU backend uses; the domain's ``<description>`` says so. libvirt marks
such a domain tainted (custom-argv) in its log, and neither chowns nor labels those files:
staging makes them reachable, and :func:`check_capabilities` refuses hosts whose
AppArmor or SELinux profiles would not let QEMU open them.

``bhyve`` (bhyve:///system): the elements libvirt's bhyve driver documents (docs/drvbhyve.rst):
``<domain type='bhyve'>``, a bootrom ``<loader readonly='yes' type='pflash'>`` (3.2.0+) with a
per-VM ``<nvram template=...>`` (11.4.0+), nmdm serial ports (1.2.4+), virtio/sata/nvme disks
(NVMe 11.9.0+, one controller per disk: nvme0n1, nvme1n1, ...), virtio-net on a bridge, the
LPC bridge at slot 31 through ``<controller type='isa'>`` (the Windows advice in drvbhyve) and
``<features><msrs unknown='ignore'/>`` (5.1.0+, bhyve -w).

:func:`check_capabilities` then compares a built domain with what the connected libvirt says it
can do (``virConnectGetDomainCapabilities``; for bhyve also its version) and raises Unsupported
naming the first element it cannot run, before anything is started.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass
from pathlib import Path

from ...errors import InfraError, Unsupported
from ...vmspec import Disk, VmSpec
from .origin import origin_element
from .reap import run_directory, run_id_of

DRIVERS = ("qemu", "bhyve")

# libvirt's QEMU namespace (formatdomain / drvqemu): <qemu:commandline><qemu:arg value=.../>
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
ET.register_namespace("qemu", QEMU_NS)
# Security drivers whose per-domain policy covers only the files libvirt knows about (for
# AppArmor, virt-aa-helper builds the profile from <disk> and friends, not <qemu:commandline>).
CONFINING_SECURITY = {"apparmor": "AppArmor", "selinux": "SELinux"}

# VmSpec disk bus -> (libvirt <target bus>, <disk device>, device-name prefix)
_DISK_BUS = {
    "virtio-blk": ("virtio", "disk", "vd"),
    "ahci-hd": ("sata", "disk", "sd"),
    "ahci-cd": ("sata", "cdrom", "sd"),
    "nvme": ("nvme", "disk", "nvme"),
}

# Features of libvirt's bhyve driver and the libvirt release that documents them
# (docs/drvbhyve.rst, ":since:" markers). Domain capabilities cannot tell these apart.
BHYVE_SINCE = {
    "loader": (3, 2, 0),   # "Using UEFI bootrom": <loader readonly='yes' type='pflash'>
    "nvram": (11, 4, 0),   # "it's possible to configure an NVRAM file"
    "msrs": (5, 1, 0),     # "Ignoring unknown MSRs reads and writes"
    "nvme": (11, 9, 0),    # "NVMe device"
    "nmdm": (1, 2, 4),     # "Connecting to a guest console"
}


@dataclass(frozen=True)
class FirmwareFiles:
    """The firmware for one VM, resolved to paths on the host that runs it.

    ``loader_type`` 'pflash' (UEFI CODE; bhyve bootrom) or 'rom' (QEMU -bios, SeaBIOS); no
    loader at all means the driver's default (bhyveload for bhyve).
    """

    loader: Path | None = None
    loader_type: str = "pflash"
    vars_template: Path | None = None
    nvram: Path | None = None


@dataclass(frozen=True)
class Options:
    """Per-host choices that are not part of the VM itself."""

    domain_type: str = "qemu"         # qemu driver: 'qemu' (TCG) or 'kvm'; bhyve: 'bhyve'
    cpu_mode: str | None = "maximum"  # qemu driver: <cpu mode=...>; None leaves QEMU's default
    bridge: str = "bridge0"           # bhyve: the host bridge the tap joins
    nmdm_unit: int | None = None      # bhyve: first nmdm unit number; None = from the VM name
    nvme_as_qemu_args: bool = False   # qemu driver without the nvme bus: <qemu:commandline>
    smt_model: str | None = None      # qemu driver, TCG: the Intel CPU model for threads > 1
    machine: str | None = None        # origin metadata's machine id; None: this machine's


def disk_target(disk: Disk, index_on_bus: int) -> tuple[str, str, str]:
    """(libvirt bus, disk device, target dev name) for the index_on_bus-th disk of its bus."""
    try:
        bus, device, prefix = _DISK_BUS[disk.bus]
    except KeyError:
        raise InfraError(f"the libvirt backend has no disk bus {disk.bus!r}") from None
    if bus == "nvme":  # one controller per disk (drvbhyve: "increment controller number")
        return bus, device, f"nvme{index_on_bus}n1"
    return bus, device, prefix + _letters(index_on_bus)


def _letters(index: int) -> str:
    """0 -> a, 25 -> z, 26 -> aa: libvirt's disk name suffixes (virDiskNameParse)."""
    name = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        name = chr(ord("a") + rem) + name
    return name


def nmdm_unit(name: str) -> int:
    """A stable nmdm(4) unit number for a VM: its ports use unit, unit+1, ... (A/B pairs)."""
    return 1000 + (zlib.crc32(name.encode()) % 90000) * 4


def console_alias(spec: VmSpec, port: str) -> str:
    """The libvirt device alias of a serial port (serial0 = the first <serial> element)."""
    for index, serial in enumerate(spec.serials):
        if serial.name == port:
            return f"serial{index}"
    raise InfraError(f"{spec.name} has no serial port {port!r} "
                     f"(it has {', '.join(s.name for s in spec.serials)})")


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs) -> ET.Element:
    element = ET.SubElement(parent, tag, {k: str(v) for k, v in attrs.items()})
    if text is not None:
        element.text = str(text)
    return element


def build_domain(spec: VmSpec, driver: str, firmware: FirmwareFiles,
                 options: Options = Options(), disk_paths: dict | None = None) -> ET.Element:
    """The <domain> element for ``spec`` under libvirt driver ``driver`` ('qemu' or 'bhyve').

    ``disk_paths`` maps a disk's own path to the path libvirt must open instead (a staged
    copy of a read-only image: see staging); absent disks use their own path.
    """
    if driver not in DRIVERS:
        raise InfraError(f"unknown libvirt driver {driver!r}; known: {', '.join(DRIVERS)}")
    disk_paths = disk_paths or {}
    bhyve = driver == "bhyve"
    domain = ET.Element("domain", type="bhyve" if bhyve else options.domain_type)
    _sub(domain, "name", spec.name)
    _sub(domain, "uuid", spec.uuid)
    run_id = run_id_of(spec.name)
    if run_id is not None:  # which machine's run this is: see origin
        workroot = run_directory(spec.name, spec.workdir)
        _sub(domain, "metadata").append(origin_element(
            run_id, options.machine, str(workroot) if workroot else None))
    _sub(domain, "memory", spec.memory_mib, unit="MiB")
    _sub(domain, "vcpu", spec.cpus)

    os_el = _sub(domain, "os")
    if bhyve:
        _sub(os_el, "type", "hvm")
    else:
        _sub(os_el, "type", "hvm", arch="x86_64", machine="q35")
    if firmware.loader is not None:
        attrs = {"readonly": "yes", "type": firmware.loader_type}
        if firmware.loader_type == "rom":
            attrs = {"type": "rom"}
        _sub(os_el, "loader", str(firmware.loader), **attrs)
        if firmware.nvram is not None:
            nvram_attrs = {}
            if firmware.vars_template is not None:
                nvram_attrs["template"] = str(firmware.vars_template)
            _sub(os_el, "nvram", str(firmware.nvram), **nvram_attrs)

    features = _sub(domain, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if bhyve:
        _sub(features, "msrs", unknown="ignore")  # bhyve -w (drvbhyve, since 5.1.0)
    _cpu(domain, spec, bhyve, options)
    _sub(domain, "clock", offset="utc" if spec.utc_clock else "localtime")
    # Every way the guest stops ends the domain: the harness reads the reason, never restarts
    # (the QEMU backend's -no-reboot; bhyve's own exit on reboot). An installer's VM
    # (survive_reboot) restarts on a guest reboot.
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        restart = event == "on_reboot" and spec.survive_reboot
        _sub(domain, event, "restart" if restart else "destroy")

    devices = _sub(domain, "devices")
    per_bus: dict[str, int] = {}
    as_qemu_args = []  # (position in spec.disks, disk, path) of NVMe disks outside <disk>
    for position, disk in enumerate(spec.disks):
        path = disk_paths.get(disk.path, disk.path)
        if not bhyve and uses_qemu_args(disk, options):
            as_qemu_args.append((position, disk, path))
            continue
        bus, _device, _dev = _DISK_BUS.get(disk.bus, (disk.bus, "", ""))
        index = per_bus.get(bus, 0)
        per_bus[bus] = index + 1
        _disk(devices, disk, index, bhyve, path)
    for nic in spec.nics:
        _nic(devices, nic, bhyve, options)
    unit = options.nmdm_unit if options.nmdm_unit is not None else nmdm_unit(spec.name)
    for index, serial in enumerate(spec.serials):
        port = int(serial.name[-1]) - 1  # com1 -> 0
        if bhyve:
            el = _sub(devices, "serial", type="nmdm")
            _sub(el, "source", master=f"/dev/nmdm{unit + index}A",
                 slave=f"/dev/nmdm{unit + index}B")
            _sub(el, "target", port=port)
        else:
            el = _sub(devices, "serial", type="pty")
            target = _sub(el, "target", type="isa-serial", port=port)
            _sub(target, "model", name="isa-serial")
    if bhyve:
        # LPC (com ports, bootrom) at slot 31, as drvbhyve advises for Windows guests.
        isa = _sub(devices, "controller", type="isa", index=0)
        _sub(isa, "address", type="pci", domain="0x0000", bus="0x00", slot="0x1f",
             function="0x0")
    else:
        _sub(devices, "controller", type="usb", model="none")  # like -nodefaults
        _sub(devices, "memballoon", model="none")
    if as_qemu_args:
        _nvme_as_qemu_args(domain, as_qemu_args)
    return domain


def _cpu(domain: ET.Element, spec: VmSpec, bhyve: bool, options: Options) -> None:
    """<cpu>: the mode (qemu driver) and the topology when the VM has one.

    bhyve: <cpu><topology> alone, which libvirt's bhyve driver turns into ``-c
    cpus=,sockets=,cores=,threads=`` (bhyve_command.c; dies must be 1; it refuses a bhyve whose
    usage lacks the topology form). QEMU under TCG: ``maximum`` is QEMU's ``max`` CPU, an AMD
    K8 that cannot tell a guest about SMT threads, and libvirt passes no vendor override in
    that mode (``<model vendor_id>`` is ignored there), so a topology with threads uses a
    named Intel model TCG can run (``smt_model``, from the domain capabilities), whose CPUID
    leaf 0xB reports the threads, like the QEMU backend's ``max,vendor=GenuineIntel``."""
    topology = spec.topology
    if bhyve:
        if topology is None:
            return
        cpu = _sub(domain, "cpu")
    elif topology is not None and topology[2] > 1 and options.domain_type == "qemu":
        if options.smt_model is None:
            raise Unsupported("a topology with threads under TCG needs an Intel CPU model "
                              "(QEMU's max CPU is an AMD K8, which reports no SMT); this "
                              "libvirt's domain capabilities list none TCG can run")
        cpu = _sub(domain, "cpu", mode="custom", match="exact", check="none")
        _sub(cpu, "model", options.smt_model, fallback="forbid")
    elif options.cpu_mode:
        cpu = _sub(domain, "cpu", mode=options.cpu_mode)
    elif topology is None:
        return
    else:
        cpu = _sub(domain, "cpu")
    if topology is not None:
        sockets, cores, threads = topology
        _sub(cpu, "topology", sockets=sockets, dies=1, cores=cores, threads=threads)


def uses_qemu_args(disk: Disk, options: Options) -> bool:
    """Whether ``disk`` reaches QEMU through <qemu:commandline> rather than a <disk> element
    (so libvirt neither chowns nor labels its file)."""
    return disk.bus == "nvme" and options.nvme_as_qemu_args


def nvme_qemu_args(position: int, disk: Disk, path: Path) -> list[str]:
    """``-drive`` and ``-device`` for the ``position``-th disk of a VmSpec, with the QEMU
    backend's drive id, serial, block sizes and readonly=on|off (qemu.py ``_disk_args``).

    ``path`` goes into QEMU's option syntax, where a comma ends a value unless doubled. The
    device is given as JSON, as libvirt gives its own: QEMU 7.2 creates every key=value
    ``-device`` before any JSON one, so a key=value NVMe controller would take the PCIe slot
    libvirt addressed its first root port to, and QEMU would refuse to start ("slot 1 function
    0 not available for pcie-root-port, in use by nvme"). As JSON it is created after
    libvirt's devices, in the first slot they left free."""
    node = f"disk{position}"
    drive = (f"file={str(path).replace(',', ',,')},format={disk.format},if=none,id={node},"
             f"readonly={'on' if disk.readonly else 'off'}")
    if disk.iops_limit:
        drive += f",throttling.iops-total={disk.iops_limit}"
    device: dict = {"driver": "nvme", "drive": node,
                    "serial": disk.serial or f"REFVM{position:04d}"}
    if disk.boot:
        device["bootindex"] = 0
    if disk.sector_size:
        device["logical_block_size"] = device["physical_block_size"] = disk.sector_size
    return ["-drive", drive, "-device", json.dumps(device, separators=(",", ":"))]


def _nvme_as_qemu_args(domain: ET.Element, disks: list) -> None:
    """Add NVMe disks as QEMU arguments, and say so in the domain's <description>."""
    names = ", ".join(Path(path).name for _position, _disk, path in disks)
    description = ET.Element("description")
    description.text = (f"refvm: NVMe disk(s) {names} are QEMU's own -device nvme, passed "
                         "through <qemu:commandline> because this libvirt's domain "
                         "capabilities list no 'nvme' disk bus")
    domain.insert(list(domain).index(domain.find("uuid")) + 1, description)
    commandline = ET.SubElement(domain, f"{{{QEMU_NS}}}commandline")
    for position, disk, path in disks:
        for arg in nvme_qemu_args(position, disk, path):
            ET.SubElement(commandline, f"{{{QEMU_NS}}}arg", value=arg)


def qemu_args(domain: ET.Element) -> list[str]:
    """The values of the domain's <qemu:commandline><qemu:arg> elements, in order."""
    return [arg.get("value") for arg in domain.findall(f"{{{QEMU_NS}}}commandline/"
                                                        f"{{{QEMU_NS}}}arg")]


def nmdm_slave(domain_xml: str, port: str) -> str:
    """The nmdm B side (``<source slave=...>``) of COM port ``port`` in a bhyve domain's XML."""
    target_port = str(int(port[-1]) - 1)  # com2 -> <target port='1'>
    for serial in ET.fromstring(domain_xml).findall("devices/serial[@type='nmdm']"):
        target = serial.find("target")
        if target is not None and target.get("port") == target_port:
            return serial.find("source").get("slave")
    raise InfraError(f"the domain XML has no nmdm serial port for {port} "
                     f"(<target port='{target_port}'>)")


def _disk(devices: ET.Element, disk: Disk, index: int, bhyve: bool, path: Path) -> None:
    bus, device, dev = disk_target(disk, index)
    el = _sub(devices, "disk", type="file", device=device)
    if bhyve:
        _sub(el, "driver", name="file", type=disk.format)  # drvbhyve examples
    else:
        _sub(el, "driver", name="qemu", type=disk.format)
    source = _sub(el, "source", file=str(path))
    if disk.readonly and not bhyve:
        # A shared read-only image (the cache) must never be chowned by libvirt's DAC driver.
        _sub(source, "seclabel", model="dac", relabel="no")
    _sub(el, "target", dev=dev, bus=bus)
    if disk.serial:
        _sub(el, "serial", disk.serial)
    if disk.sector_size:
        _sub(el, "blockio", logical_block_size=disk.sector_size,
             physical_block_size=disk.sector_size)
    if disk.iops_limit and not bhyve:  # requests wait in QEMU's block layer (qemu.py)
        _sub(_sub(el, "iotune"), "total_iops_sec", disk.iops_limit)
    if disk.readonly or device == "cdrom":
        _sub(el, "readonly")
    if disk.boot and not bhyve:  # bhyve boots the first disk listed (drvbhyve)
        _sub(el, "boot", order=1)
    elif disk.fallback_boot and not bhyve:
        _sub(el, "boot", order=2)


def _nic(devices: ET.Element, nic, bhyve: bool, options: Options) -> None:
    if nic.model != "virtio-net":
        raise InfraError(f"the libvirt backend has no NIC model {nic.model!r}")
    if bhyve:
        el = _sub(devices, "interface", type="bridge")
        _sub(el, "mac", address=nic.mac)
        _sub(el, "source", bridge=options.bridge)
    else:
        el = _sub(devices, "interface", type="user")  # QEMU user networking: host is 10.0.2.2
        _sub(el, "mac", address=nic.mac)
    _sub(el, "model", type="virtio")


def to_xml(domain: ET.Element) -> str:
    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode") + "\n"


# Checking a domain against the connected libvirt ------------------------------------------------

def _enum(caps: ET.Element, path: str, name: str) -> list[str] | None:
    """Values of <enum name=...> under ``path``, or None when the element is absent."""
    parent = caps.find(path)
    if parent is None:
        return None
    enum = parent.find(f"enum[@name='{name}']")
    return None if enum is None else [v.text or "" for v in enum.findall("value")]


def _version_text(version: tuple) -> str:
    return ".".join(str(p) for p in version)


def offers_disk_bus(caps_xml: str, bus: str) -> bool:
    """Whether the domain capabilities list ``bus`` among their disk buses."""
    return bus in (_enum(ET.fromstring(caps_xml), "devices/disk", "bus") or [])


def parse_version(number: int) -> tuple[int, int, int]:
    """libvirt's encoded version (major * 1e6 + minor * 1e3 + micro) as a tuple."""
    return number // 1_000_000, number // 1000 % 1000, number % 1000


def _offered_problems(domain: ET.Element, caps: ET.Element, libvirt_version) -> list[str]:
    """What ``domain`` asks for that the domain capabilities ``caps`` do not offer."""
    problems: list[str] = []
    dtype = domain.get("type")
    have_type = caps.findtext("domain")
    if have_type and have_type != dtype:
        problems.append(f"<domain type='{dtype}'>: the host offers domain type '{have_type}'")

    loader = domain.find("os/loader")
    if loader is not None:
        caps_loader = caps.find("os/loader")
        if caps_loader is None or caps_loader.get("supported") != "yes":
            problems.append("<os><loader>: the host supports no firmware loader")
        else:
            types = _enum(caps, "os/loader", "type")
            if types is not None and loader.get("type") not in types:
                problems.append(f"<loader type='{loader.get('type')}'>: loader types offered: "
                                f"{', '.join(types) or 'none'}")
            readonly = _enum(caps, "os/loader", "readonly")
            if loader.get("readonly") and readonly is not None \
                    and loader.get("readonly") not in readonly:
                problems.append(f"<loader readonly='{loader.get('readonly')}'>: offered: "
                                f"{', '.join(readonly) or 'none'}")
            paths = [v.text for v in caps_loader.findall("value")]
            if loader.get("type") == "pflash" and paths and loader.text not in paths:
                problems.append(f"<loader>{loader.text}</loader>: the host's firmware list has "
                                f"{', '.join(paths)}")

    buses = _enum(caps, "devices/disk", "bus")
    kinds = _enum(caps, "devices/disk", "diskDevice")
    for disk in domain.findall("devices/disk"):
        target = disk.find("target")
        bus = target.get("bus")
        # bhyve's domain capabilities have listed only sata and virtio; NVMe is gated by the
        # libvirt version instead (drvbhyve: since 11.9.0), checked below.
        deferred = dtype == "bhyve" and bus == "nvme" and libvirt_version is not None
        if buses is not None and bus not in buses and not deferred:
            problems.append(f"<target dev='{target.get('dev')}' bus='{bus}'>: disk bus '{bus}' "
                            f"is not supported (disk buses offered: {', '.join(buses)})")
        if kinds is not None and disk.get("device") not in kinds:
            problems.append(f"<disk device='{disk.get('device')}'>: offered: {', '.join(kinds)}")

    cpu = domain.find("cpu")
    if cpu is not None and cpu.get("mode"):
        mode = caps.find(f"cpu/mode[@name='{cpu.get('mode')}']")
        if mode is None or mode.get("supported") != "yes":
            problems.append(f"<cpu mode='{cpu.get('mode')}'>: not supported by this host")
        model = cpu.findtext("model")
        usable = [m.text for m in caps.findall("cpu/mode[@name='custom']/model[@usable='yes']")]
        if cpu.get("mode") == "custom" and model not in usable:
            problems.append(f"<cpu><model>{model}</model>: not a CPU model this host can run "
                            f"(usable: {', '.join(usable) or 'none'})")

    return problems


def check_capabilities(domain: ET.Element, caps_xml: str | None, where: str,
                       libvirt_version: tuple | None = None, local: bool = True,
                       security_models: tuple = ()) -> None:
    """Raise Unsupported naming the first element of ``domain`` the host cannot run.

    ``caps_xml`` is the connected libvirt's domain capabilities for this domain type and
    machine (None: a plan for a host not reached, checked by the version rules only);
    ``where`` names the host for the message (e.g. "libvirt 9.0.0 at qemu:///system").
    ``local``: whether the harness runs on that host (bhyve's data ports need it);
    ``security_models``: the host capabilities' <secmodel> names (QEMU arguments need DAC only).
    """
    problems = [] if caps_xml is None else \
        _offered_problems(domain, ET.fromstring(caps_xml), libvirt_version)
    dtype = domain.get("type")
    if dtype == "bhyve" and libvirt_version is not None:
        problems += _bhyve_version_problems(domain, tuple(libvirt_version))
    if dtype == "bhyve" and not local:
        problems += _bhyve_remote_console_problems(domain)
    problems += _qemu_args_problems(domain, security_models)

    if problems:
        raise Unsupported(f"{where} cannot run {domain.findtext('name')}: {problems[0]}"
                         + "".join(f"; also {p}" for p in problems[1:]))


def _qemu_args_problems(domain: ET.Element, security_models) -> list[str]:
    """QEMU arguments naming files libvirt's AppArmor or SELinux driver never allows."""
    files = [arg for arg in qemu_args(domain) if arg.startswith("file=")]
    confining = [CONFINING_SECURITY[m] for m in security_models if m in CONFINING_SECURITY]
    if not files or not confining:
        return []
    return [f"<qemu:commandline> NVMe disk files: this host confines QEMU with "
            f"{' and '.join(confining)}, whose per-domain policy allows only the files named "
            f"in <disk> elements, and its libvirt has no 'nvme' disk bus to name them there"]


def _bhyve_remote_console_problems(domain: ET.Element) -> list[str]:
    """Serial ports after the first cannot be reached on a remote bhyve host.

    libvirt's bhyveDomainOpenConsole ignores the device name and always opens serials[0]'s
    nmdm B side; locally the harness opens the others itself, remotely it cannot."""
    problems = []
    for serial in domain.findall("devices/serial")[1:]:
        port = int(serial.find("target").get("port")) + 1
        problems.append(
            f"<serial> com{port}: libvirt's bhyve driver opens only the first serial port "
            f"through virDomainOpenConsole (bhyveDomainOpenConsole ignores the device name), "
            f"and this host's nmdm device {serial.find('source').get('slave')} cannot be "
            f"opened from here (it is a remote URI)")
    return problems


def _bhyve_version_problems(domain: ET.Element, version: tuple) -> list[str]:
    needed = []
    if domain.find("os/loader") is not None:
        needed.append(("loader", "<os><loader> (UEFI bootrom)"))
    if domain.find("os/nvram") is not None:
        needed.append(("nvram", "<os><nvram> (per-VM UEFI variables)"))
    if domain.find("features/msrs") is not None:
        needed.append(("msrs", "<features><msrs unknown='ignore'/>"))
    if domain.find("devices/disk/target[@bus='nvme']") is not None:
        needed.append(("nvme", "<target bus='nvme'> (NVMe disk)"))
    if domain.find("devices/serial[@type='nmdm']") is not None:
        needed.append(("nmdm", "<serial type='nmdm'>"))
    problems = []
    for key, element in needed:
        since = BHYVE_SINCE[key]
        if version < since:
            problems.append(f"{element} needs libvirt {_version_text(since)} or later "
                            f"(drvbhyve), the host has {_version_text(version)}")
    # Documented nowhere for bhyve (drvbhyve; bhyve_command.c passes neither): refuse rather
    # than boot a disk without the serial or block size the scenario will check.
    for disk in domain.findall("devices/disk"):
        dev = disk.find("target").get("dev")
        if disk.find("blockio") is not None:
            problems.append(f"<blockio> on disk {dev}: the libvirt bhyve driver does not pass "
                            "block sizes to bhyve (no sectorsize= in its command line)")
        if disk.find("serial") is not None:
            problems.append(f"<serial> on disk {dev}: the libvirt bhyve driver does not "
                            "document disk serial numbers")
    return problems
