"""The libvirt backend: the same VMs as the QEMU and bhyve backends, started through libvirtd.

One backend talks to one libvirt URI: ``qemu:///system`` (domain type 'qemu', i.e. TCG, unless
``domain_type='kvm'``), ``qemu+tcp://host/system``, ``bhyve:///system`` ... Domains are
*transient* (``virDomainCreateXML``), named after the VmSpec (refvm-<run id>-<n>), and started
with VIR_DOMAIN_START_AUTODESTROY: libvirtd destroys them when the connection that created them
closes, so a harness that is SIGKILLed leaves no running domain (the reaper still removes dead
runs' staging directories). The QEMU driver also starts them paused (VIR_DOMAIN_START_PAUSED)
so the console is attached through ``virDomainOpenConsole`` before the first byte, then
resumed; libvirt's bhyve driver refuses that flag (bhyveDomainCreateXML accepts only AUTODESTROY
and VALIDATE) and cannot suspend, so there the domain runs from the start (see
LibvirtMachine.resume). This module holds what is about the host and the plan:
host facts, firmware, the checked domain XML, and start(). The rest has its own module:
connection (binding, event loop, connect), staging (file access for
libvirt's QEMU user), machine (a running domain and how it ended), reap
(dead runs' leftovers, reached through ``LibvirtBackend.reap_dead_runs``).
"""
from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from urllib.parse import urlparse

from ... import firmware as fw
from ...errors import InfraError, Unsupported
from ...hostdata import sparse_copy
from ...vmspec import VmSpec, private_copies
from . import domain_xml as lx
from ..base import Backend
from ..qemu.backend import tcg_vcpus_problem
from .connection import connect, is_local, load_binding
from .machine import LibvirtMachine
from .origin import this_machine
from .reap import reap_domains, run_directory
from .staging import STAGE_ROOT, Stage, qemu_owner, security_models

__all__ = ["LibvirtBackend", "LibvirtMachine"]

# What `refvm plan` assumes for a bhyve host it cannot reach (a Linux machine has no bhyve
# driver): the first libvirt whose bhyve driver has every element refvm writes (BHYVE_SINCE).
PLAN_LIBVIRT = (11, 9, 0)


# Why libvirt's bhyve driver cannot do a machine need (libvirt's sources: bhyve_monitor.c stops
# the domain on bhyve's exit 0, "TODO: Implementing reboot is a little more complicated";
# the driver implements no virDomainSave).
BHYVE_DRIVER_LACKS = {
    "reboot": "libvirt's bhyve driver ends the domain when bhyve exits 0 on a guest reboot "
              "(bhyve_monitor.c: \"Implementing reboot is a little more complicated\"): "
              "<on_reboot>restart</on_reboot> is not honoured",
    "save-restore": "libvirt's bhyve driver implements no virDomainSave/virDomainRestore",
}
# x86 APIC ids fit in 8 bits without an interrupt-remapping IOMMU (as qemu.APIC_LIMIT).
APIC_LIMIT = 255


class LibvirtBackend(Backend):
    name = "libvirt"
    needs = ("restart", "reboot", "save-restore", "vars-file", "ssh")

    def __init__(self, uri: str = "qemu:///system", domain_type: str | None = None,
                 stage_root: Path = STAGE_ROOT, bridge: str = "bridge0",
                 host_address: str | None = None, guest_ipv4: str | None = None,
                 ovmf: fw.FirmwareCandidates = fw.QEMU_OVMF,
                 seabios: fw.FirmwareCandidates = fw.QEMU_SEABIOS, conn=None,
                 planning: bool = False):
        """``conn``: an open connection to ``uri`` to use instead of opening one (unit tests
        pass a test double of the driver they check). ``planning``: a plan for a bhyve host
        that cannot be reached from here assumes PLAN_LIBVIRT and the usual firmware paths,
        and says so, instead of failing."""
        self.uri = uri
        self.driver = "bhyve" if urlparse(uri).scheme.split("+")[0] == "bhyve" else "qemu"
        # /dev/kvm may exist and still hang guests (nested hosts): TCG unless asked for kvm.
        self.domain_type = domain_type or ("bhyve" if self.driver == "bhyve" else "qemu")
        self.stage_root = Path(stage_root)
        self.bridge = bridge
        self.host_address = host_address  # bhyve: the bridge's address on the host
        self.guest_ipv4 = guest_ipv4      # bhyve: CIDR the guest sets itself (no DHCP)
        self.ovmf, self.seabios = ovmf, seabios
        self.firmwares = ("uefi", "csm", "bhyveload") if self.driver == "bhyve" \
            else ("uefi", "csm")
        self._conn = conn
        self._caps: dict = {}
        self._host_caps: str | None = None
        self._version: tuple | None = None
        self._unreachable: InfraError | None = None
        self.planning = planning
        self._offline_reason: str | None = None

    # Host facts ------------------------------------------------------------------------------
    @property
    def conn(self):
        """The connection, opened on first use. A host that could not be reached is not tried
        again by each later case of the run: a host that drops packets costs a TCP time-out
        per attempt, which a matrix would pay once per case."""
        if self._conn is None:
            if self._unreachable is not None:
                raise InfraError(f"{self._unreachable} (not tried again in this run)")
            try:
                self._conn = connect(self.uri)
            except InfraError as err:
                self._unreachable = err
                raise
        return self._conn

    @property
    def local(self) -> bool:
        return is_local(self.uri)

    def offline(self) -> bool:
        """Planning for a bhyve host this machine cannot reach: its facts are assumed."""
        if not (self.planning and self.driver == "bhyve"):
            return False
        if self._offline_reason is None:
            try:
                self.conn
                self._offline_reason = ""
            except InfraError as err:
                self._offline_reason = str(err)
        return bool(self._offline_reason)

    def version(self) -> tuple:
        if self._version is None:  # asked at every start: one round trip per host, not per VM
            self._version = PLAN_LIBVIRT if self.offline() else \
                lx.parse_version(self.conn.getLibVersion())
        return self._version

    def where(self) -> str:
        return f"libvirt {'.'.join(map(str, self.version()))} at {self.uri}"

    def describe(self) -> str:
        if self.offline():
            return (f"libvirt at {self.uri}: not reached ({self._offline_reason}); the domain "
                    f"XML assumes libvirt {'.'.join(map(str, PLAN_LIBVIRT))}'s bhyve driver "
                    f"and the usual firmware paths, and was not checked against the host's "
                    f"domain capabilities")
        try:
            hv = lx.parse_version(self.conn.getVersion())
            hv_text = f"{self.conn.getType()} {'.'.join(map(str, hv))}"
        except Exception:  # noqa: BLE001 - describe() is for reports only
            hv_text = "hypervisor version unknown"
        text = f"{self.where()}: {hv_text}; domain type {self.domain_type}"
        try:  # the machine the VMs run on (a remote URI: not the one refvm runs on)
            model, memory_mib, cpus = self.conn.getInfo()[:3]
            text += f"; host {self.conn.getHostname()}: {model}, {cpus} CPUs, {memory_mib} MiB"
        except Exception:  # noqa: BLE001 - describe() is for reports only
            pass
        try:
            if self.nvme_as_qemu_args():
                text += ("; NVMe disks as QEMU's -device nvme through <qemu:commandline> (this "
                         "libvirt lists no nvme disk bus)")
        except InfraError:
            pass  # describe() is for reports only; start() says what is wrong
        return text

    def domain_capabilities(self) -> str:
        key = (self.domain_type, self.driver)
        if key not in self._caps:
            machine = "q35" if self.driver == "qemu" else None
            libvirt = load_binding()
            try:
                self._caps[key] = self.conn.getDomainCapabilities(
                    None, "x86_64", machine, self.domain_type, 0)
            except libvirt.libvirtError as err:
                raise InfraError(f"{self.where()} reports no capabilities for domain type "
                                 f"{self.domain_type!r}: {err.get_error_message()}") from None
        return self._caps[key]

    def host_capabilities(self) -> str:
        """``virConnectGetCapabilities``: the host's security drivers and QEMU's user."""
        if self._host_caps is None:
            libvirt = load_binding()
            try:
                self._host_caps = self.conn.getCapabilities()
            except libvirt.libvirtError as err:
                raise InfraError(f"{self.where()} reports no host capabilities: "
                                 f"{err.get_error_message()}") from None
        return self._host_caps

    def nvme_as_qemu_args(self) -> bool:
        """Whether NVMe disks go to QEMU as its own arguments: the QEMU driver, when the
        domain capabilities list no nvme disk bus (libvirt 9.0). The bhyve driver keeps
        <target bus='nvme'>, gated on its libvirt version instead (domain_xml)."""
        return self.driver == "qemu" and not lx.offers_disk_bus(self.domain_capabilities(),
                                                                "nvme")

    def lacks(self, need: str, firmware: str) -> str | None:
        """``needs`` are the QEMU driver's; the bhyve driver restarts (a new domain from the
        same files) and keeps a vars file, but neither reboots nor saves (BHYVE_DRIVER_LACKS;
        a pool, which asks the class, meets the same refusal when such a VM starts)."""
        if self.driver == "bhyve" and need in BHYVE_DRIVER_LACKS:
            return BHYVE_DRIVER_LACKS[need]
        if need == "ssh" and self.driver == "qemu" and not self.local:
            # QEMU's hostfwd (see the SSH section of the README) listens on the loopback of
            # the machine libvirtd runs on: out of reach from here.
            return (f"the SSH forward of a user-network NIC listens on the loopback of "
                    f"the libvirt host of {self.uri}, which this host cannot reach")
        return super().lacks(need, firmware)

    def max_vcpus(self) -> tuple[int, str]:
        """``<vcpu max>`` of the domain capabilities (QEMU: q35's limit for the domain type;
        bhyve: the driver's answer), capped at the APIC limit; the base guess offline."""
        if self.offline():
            return super().max_vcpus()
        import xml.etree.ElementTree as ET
        vcpu = ET.fromstring(self.domain_capabilities()).find("vcpu")
        if vcpu is None or not (vcpu.get("max") or "").isdigit():
            return super().max_vcpus()
        most = int(vcpu.get("max"))
        source = f"{self.where()}: domain capabilities <vcpu max='{most}'/>"
        if self.driver == "qemu" and most > APIC_LIMIT:
            return APIC_LIMIT, f"{source}, {APIC_LIMIT} without an interrupt-remapping IOMMU"
        return most, source

    def smt_model(self) -> str | None:
        """An Intel CPU model TCG runs whose CPUID reports SMT threads (leaf 0xB: Westmere
        and Nehalem have level 11), as listed usable in the domain capabilities."""
        import xml.etree.ElementTree as ET
        caps = ET.fromstring(self.domain_capabilities())
        usable = {m.text for m in caps.findall("cpu/mode[@name='custom']/model[@usable='yes']")}
        return next((m for m in ("Westmere", "Nehalem") if m in usable), None)

    # Firmware ---------------------------------------------------------------------------------
    def _offered_loaders(self) -> list[str]:
        import xml.etree.ElementTree as ET
        caps = ET.fromstring(self.domain_capabilities())
        return [v.text for v in caps.findall("os/loader/value")]

    def _pick(self, candidates: fw.FirmwareCandidates):
        """The first candidate the host offers (remote: by its domain capabilities)."""
        if self.offline():
            return candidates.candidates[0]
        if self.local:
            return candidates.find()
        offered = self._offered_loaders()
        for candidate in candidates.candidates:
            code = candidate.code if isinstance(candidate, fw.UefiPair) else candidate
            if str(code) in offered:
                return candidate
        raise InfraError(f"{self.where()} offers none of {candidates.what}: it lists "
                         f"{', '.join(offered) or 'no firmware'}; {candidates.package}")

    def firmware_for(self, spec: VmSpec) -> lx.FirmwareFiles:
        nvram = spec.workdir / "uefi-vars.fd"
        if self.driver == "qemu":
            if spec.firmware == "uefi":
                pair = self._pick(self.ovmf)
                return lx.FirmwareFiles(pair.code, "pflash", pair.vars_template, nvram)
            if spec.firmware == "csm":
                if not self.local:  # QEMU's default BIOS on q35 is SeaBIOS's bios-256k.bin
                    return lx.FirmwareFiles()
                return lx.FirmwareFiles(self.seabios.find(), "rom")
        else:
            if spec.firmware == "uefi":
                if self.version() >= lx.BHYVE_SINCE["nvram"]:
                    pair = self._pick(fw.BHYVE_UEFI_PAIR)
                    return lx.FirmwareFiles(pair.code, "pflash", pair.vars_template, nvram)
                return lx.FirmwareFiles(self._pick(fw.BHYVE_UEFI_SINGLE), "pflash")
            if spec.firmware == "csm":
                return lx.FirmwareFiles(self._pick(fw.BHYVE_UEFI_CSM), "pflash")
            if spec.firmware == "bhyveload":
                return lx.FirmwareFiles()
        raise InfraError(f"the libvirt backend ({self.driver} driver) cannot boot firmware "
                         f"{spec.firmware!r}")

    def firmware_files(self, profile: str) -> list:
        """For reports: the files firmware_for() gives a VM of ``profile``. Only on a local
        host: a remote host's files are not here to hash, and a file of the same path here
        could be another build."""
        if not self.local or self.offline():
            return []
        spec = VmSpec(name="refvm-report", memory_mib=0, cpus=1, firmware=profile, uuid="",
                      utc_clock=True, workdir=Path("/nonexistent"), logdir=Path("/nonexistent"))
        files = self.firmware_for(spec)
        return [path for path in (files.loader, files.vars_template) if path is not None]

    def options(self) -> lx.Options:
        cpu = None
        if self.driver == "qemu":
            cpu = "host-passthrough" if self.domain_type == "kvm" else "maximum"
        smt = self.smt_model() if self.domain_type == "qemu" and self.driver == "qemu" \
            else None
        return lx.Options(domain_type=self.domain_type, cpu_mode=cpu, bridge=self.bridge,
                          nvme_as_qemu_args=self.nvme_as_qemu_args(), smt_model=smt)

    def start_flags(self) -> int:
        """virDomainCreateXML flags: AUTODESTROY always (both drivers take it), PAUSED only
        for the QEMU driver (bhyveDomainCreateXML's virCheckFlags rejects it)."""
        libvirt = load_binding()
        flags = libvirt.VIR_DOMAIN_START_AUTODESTROY
        if self.driver == "qemu":
            flags |= libvirt.VIR_DOMAIN_START_PAUSED
        return flags

    # Plans ------------------------------------------------------------------------------------
    def command_lines(self, spec: VmSpec) -> list[list[str]]:
        """What start() amounts to, as a command a person can rerun (the XML is in logdir).

        Without ``--autodestroy``, which start() does use: virsh's connection ends when virsh
        does, so the domain a person started would be destroyed at once."""
        paused = ["--paused"] if self.driver == "qemu" else []
        return [["virsh", "-c", self.uri, "create", *paused, str(spec.logdir / "domain.xml")]]

    def plan_details(self, spec: VmSpec) -> str:
        return self.domain_xml(spec)

    def vcpu_problem(self, cpus: int, topology) -> str | None:
        why = super().vcpu_problem(cpus, topology)
        if why is None and cpus > 8 and self.domain_type == "qemu" and self.local:
            why = tcg_vcpus_problem(cpus)
        return why

    def domain_xml(self, spec: VmSpec, disk_paths: dict | None = None,
                   firmware: lx.FirmwareFiles | None = None) -> str:
        """The checked domain XML for ``spec`` (raises InfraError for what the host lacks)."""
        if self.driver == "bhyve" and spec.survive_reboot:
            raise Unsupported(BHYVE_DRIVER_LACKS["reboot"])
        spec = self.view_of(spec)
        domain = lx.build_domain(spec, self.driver, firmware or self.firmware_for(spec),
                                 self.options(), disk_paths)
        models = security_models(self.host_capabilities()) if lx.qemu_args(domain) else ()
        caps = None if self.offline() else self.domain_capabilities()
        lx.check_capabilities(domain, caps, self.where(),
                              self.version() if self.driver == "bhyve" else None,
                              local=self.local, security_models=models)
        return lx.to_xml(domain)

    @staticmethod
    def view_of(spec: VmSpec) -> VmSpec:
        """``spec`` as libvirt runs it: an ephemeral disk becomes a private (sparse) copy in
        the VM's workdir, made by start(). Neither driver has a view libvirt can give here:
        the bhyve driver has no transient disks, and the QEMU driver's ``<transient/>`` (9.0)
        opens the image itself read-write before it adds its overlay, which a shared cached
        image (never chowned to libvirt's QEMU user) cannot allow."""
        return private_copies(spec)[0]

    # Lifecycle -------------------------------------------------------------------------------
    def start(self, spec: VmSpec, again: bool = False) -> "LibvirtMachine":
        """Check, stage, create. What the host cannot run is refused before any file is
        linked, copied or lent; a failure after createXML destroys the domain it made.
        ``again`` (restart): the private disk copies and the vars file are the first start's."""
        libvirt = load_binding()

        def create(xml: str):
            try:
                return self.conn.createXML(xml, self.start_flags())
            except libvirt.libvirtError as err:
                raise InfraError(f"{self.where()} refused to start {spec.name}: "
                                 f"{err.get_error_message()}{self._qemu_log_tail(spec)}") \
                    from None
        return self._launch(spec, again, create)

    def restore(self, spec: VmSpec, state: Path) -> "LibvirtMachine":
        """``virDomainRestoreFlags`` of the file LibvirtMachine.save wrote, paused, after the
        VM's files are staged again (the save's domain XML names the same staged paths: they
        are made in the same order under the same VM name).

        Unlike createXML, a restore takes no AUTODESTROY flag: if the harness is SIGKILLed
        while a restored domain runs, the domain stays until `refvm clean` (or the next run's
        reaping) finds its origin metadata naming a dead run."""
        if self.driver == "bhyve":
            raise Unsupported(BHYVE_DRIVER_LACKS["save-restore"])
        libvirt = load_binding()

        def create(_xml: str):
            try:
                self.conn.restoreFlags(str(state), None, libvirt.VIR_DOMAIN_SAVE_PAUSED)
                return self.conn.lookupByUUIDString(spec.uuid)
            except libvirt.libvirtError as err:
                raise InfraError(f"{self.where()} could not restore {spec.name} from "
                                 f"{state.name}: {err.get_error_message()}"
                                 f"{self._qemu_log_tail(spec)}") from None
        return self._launch(spec, True, create, log_name="domain-restore.xml")

    def _launch(self, spec: VmSpec, again: bool, create, log_name: str = "domain.xml"):
        """Stage ``spec``'s files, then ``create(xml)`` its domain; on any failure undo both."""
        libvirt = load_binding()
        spec.workdir.mkdir(parents=True, exist_ok=True)
        spec.logdir.mkdir(parents=True, exist_ok=True)
        spec, copies = private_copies(spec)
        firmware = self.firmware_for(spec)
        self.domain_xml(spec, firmware=firmware)  # raises Unsupported/InfraError: no staging yet
        vars_copy = firmware.nvram if self.local else None
        stage = Stage(self.stage_root / spec.name, run_directory(spec.name, spec.workdir)) \
            if self.local else None
        dom = None
        made_vars = False
        try:
            for image, copy in ([] if again else copies):  # a restart keeps their contents
                sparse_copy(image, copy)
            if vars_copy is not None and not (again and vars_copy.exists()):
                made_vars = True
                fw.make_vars_copy(firmware.vars_template, vars_copy)
            disk_paths = {}
            if stage is not None:
                options = self.options()
                for disk in spec.disks:
                    owner = self._qemu_owner() if lx.uses_qemu_args(disk, options) else None
                    disk_paths[disk.path] = stage.reachable(disk.path, disk.readonly, owner)
                if vars_copy is not None:
                    firmware = dataclasses.replace(
                        firmware, nvram=stage.reachable(vars_copy, readonly=False))
            xml = self.domain_xml(spec, disk_paths, firmware)
            (spec.logdir / log_name).write_text(xml)
            (spec.logdir / "command.txt").write_text(shlex.join(self.command_lines(spec)[0])
                                                     + "\n")
            dom = create(xml)
            return LibvirtMachine(self, spec, dom, stage)
        except BaseException:
            if dom is not None:
                try:
                    dom.destroy()
                except libvirt.libvirtError:
                    pass  # already gone (LibvirtMachine's own clean-up got there first)
            if stage is not None:
                stage.remove()
            if made_vars:  # a vars file an earlier start made is the VM's: it stays
                vars_copy.unlink(missing_ok=True)
            raise

    def reap_dead_runs(self, log=lambda _text: None, dry_run: bool = False) -> list[str]:
        """Remove what this machine's dead refvm runs left on this host (libvirt.reap): only
        domains whose origin metadata names this machine and a dead run; staging directories
        only on a local host."""
        return reap_domains(self.conn, stage_root=STAGE_ROOT if self.local else None, log=log,
                            only_machine=this_machine(), dry_run=dry_run)

    def _qemu_owner(self) -> tuple[int, int] | None:
        return qemu_owner(self.host_capabilities(), self.domain_type)

    def _qemu_log_tail(self, spec: VmSpec) -> str:
        log = Path("/var/log/libvirt/qemu") / f"{spec.name}.log"
        if not self.local or self.driver != "qemu" or not log.is_file():
            return ""
        lines = log.read_text(errors="replace").splitlines()[-5:]
        return "; its QEMU log ends:\n" + "\n".join(lines)
