"""Domain XML for libvirt, element by element, for the qemu and bhyve drivers, and the check
against a host's domain capabilities (saved samples below: no libvirtd needed).

bhyve elements are checked against what libvirt documents for its bhyve driver; each test names
the section of docs/drvbhyve.rst (or formatdomain.rst) it follows.
"""
from __future__ import annotations

import dataclasses
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.backends.libvirt import domain_xml as lx
from harness.errors import InfraError
from harness.vmspec import Disk, Nic, SerialPort, VmSpec

# `virsh domcapabilities --virttype qemu --arch x86_64 --machine q35` on Debian 12
# (libvirt 9.0.0, QEMU 7.2), trimmed to the parts the check reads.
QEMU_CAPS = """\
<domainCapabilities>
  <path>/usr/bin/qemu-system-x86_64</path>
  <domain>qemu</domain>
  <machine>pc-q35-7.2</machine>
  <arch>x86_64</arch>
  <os supported="yes">
    <enum name="firmware"><value>efi</value></enum>
    <loader supported="yes">
      <value>/usr/share/OVMF/OVMF_CODE_4M.ms.fd</value>
      <value>/usr/share/OVMF/OVMF_CODE_4M.secboot.fd</value>
      <value>/usr/share/OVMF/OVMF_CODE_4M.fd</value>
      <enum name="type"><value>rom</value><value>pflash</value></enum>
      <enum name="readonly"><value>yes</value><value>no</value></enum>
      <enum name="secure"><value>yes</value><value>no</value></enum>
    </loader>
  </os>
  <cpu>
    <mode name="host-passthrough" supported="no"/>
    <mode name="maximum" supported="yes"/>
    <mode name="host-model" supported="yes"/>
    <mode name="custom" supported="yes"/>
  </cpu>
  <devices>
    <disk supported="yes">
      <enum name="diskDevice">
        <value>disk</value><value>cdrom</value><value>floppy</value><value>lun</value>
      </enum>
      <enum name="bus">
        <value>fdc</value><value>scsi</value><value>virtio</value><value>usb</value>
        <value>sata</value>
      </enum>
    </disk>
  </devices>
</domainCapabilities>
"""

# What libvirt's bhyve driver reports (bhyve_capabilities.c virBhyveDomainCapsFill: disk
# devices disk/cdrom, buses sata/virtio, a pflash read-only loader listing the firmware
# directory when bhyve has the bootrom).
BHYVE_CAPS = """\
<domainCapabilities>
  <path>/usr/sbin/bhyve</path>
  <domain>bhyve</domain>
  <arch>x86_64</arch>
  <os supported="yes">
    <loader supported="yes">
      <value>/usr/local/share/uefi-firmware/BHYVE_UEFI.fd</value>
      <value>/usr/local/share/uefi-firmware/BHYVE_UEFI_CODE.fd</value>
      <value>/usr/local/share/uefi-firmware/BHYVE_UEFI_CSM.fd</value>
      <enum name="type"><value>pflash</value></enum>
      <enum name="readonly"><value>yes</value></enum>
    </loader>
  </os>
  <devices>
    <disk supported="yes">
      <enum name="diskDevice"><value>disk</value><value>cdrom</value></enum>
      <enum name="bus"><value>sata</value><value>virtio</value></enum>
    </disk>
  </devices>
</domainCapabilities>
"""

OVMF = lx.FirmwareFiles(Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), "pflash",
                        Path("/usr/share/OVMF/OVMF_VARS_4M.fd"), Path("/w/1/uefi-vars.fd"))
SEABIOS = lx.FirmwareFiles(Path("/usr/share/seabios/bios-256k.bin"), "rom")
BHYVE_UEFI = lx.FirmwareFiles(
    Path("/usr/local/share/uefi-firmware/BHYVE_UEFI_CODE.fd"), "pflash",
    Path("/usr/local/share/edk2-bhyve/BHYVE_UEFI_VARS.fd"), Path("/w/1/uefi-vars.fd"))
BHYVE = lx.Options(domain_type="bhyve", cpu_mode=None, bridge="bridge0", nmdm_unit=40)


def spec(disks=None, nics=(), serials=(SerialPort("com1"), SerialPort("com2", "data")),
         firmware="uefi", utc=True) -> VmSpec:
    if disks is None:
        disks = (Disk(Path("/img/ref.raw"), readonly=True, boot=True),)
    return VmSpec(name="refvm-0123abcd-1", memory_mib=512, cpus=2, firmware=firmware,
                  uuid="6f9619ff-8b86-d011-b42d-00c04fc964ff", utc_clock=utc,
                  workdir=Path("/w/1"), logdir=Path("/logs/1"), disks=tuple(disks),
                  nics=tuple(nics), serials=tuple(serials))


DEVICE_DISKS = (
    Disk(Path("/img/ref.raw"), readonly=True, boot=True),
    Disk(Path("/w/1/scratch.raw"), bus="virtio-blk", serial="RVSCRATCH", sector_size=4096),
    Disk(Path("/w/1/ns512.raw"), bus="nvme", serial="RVNS512"),
    Disk(Path("/w/1/ns4k.raw"), bus="nvme", serial="RVNS4K", sector_size=4096),
    Disk(Path("/w/1/sata.raw"), bus="ahci-hd"),
)


def qemu_domain(**kw) -> ET.Element:
    firmware = kw.pop("fw", OVMF)
    return lx.build_domain(spec(**kw), "qemu", firmware, lx.Options(), kw.pop("paths", None))


def bhyve_domain(files=BHYVE_UEFI, **kw) -> ET.Element:
    return lx.build_domain(spec(**kw), "bhyve", files, BHYVE)


def attrs(element) -> dict:
    return dict(element.attrib)


# QEMU driver -------------------------------------------------------------------------------

def test_qemu_domain_identity_memory_and_machine():
    d = qemu_domain()
    assert d.tag == "domain" and d.get("type") == "qemu"  # TCG; 'kvm' only where usable
    assert d.findtext("name") == "refvm-0123abcd-1"
    assert d.findtext("uuid") == "6f9619ff-8b86-d011-b42d-00c04fc964ff"
    assert d.find("memory").text == "512" and d.find("memory").get("unit") == "MiB"
    assert d.findtext("vcpu") == "2"
    assert attrs(d.find("os/type")) == {"arch": "x86_64", "machine": "q35"}
    assert d.findtext("os/type") == "hvm"
    assert attrs(d.find("cpu")) == {"mode": "maximum"}
    assert d.find("features/acpi") is not None and d.find("features/apic") is not None
    assert attrs(d.find("clock")) == {"offset": "utc"}


def test_qemu_localtime_clock():
    assert qemu_domain(utc=False).find("clock").get("offset") == "localtime"


def test_kvm_domain_type_and_host_cpu():
    d = lx.build_domain(spec(), "qemu", OVMF, lx.Options("kvm", "host-passthrough"))
    assert d.get("type") == "kvm" and d.find("cpu").get("mode") == "host-passthrough"


def test_qemu_uefi_is_readonly_pflash_code_plus_per_vm_vars():
    d = qemu_domain()
    loader = d.find("os/loader")
    assert attrs(loader) == {"readonly": "yes", "type": "pflash"}
    assert loader.text == "/usr/share/OVMF/OVMF_CODE_4M.fd"
    nvram = d.find("os/nvram")
    assert nvram.get("template") == "/usr/share/OVMF/OVMF_VARS_4M.fd"
    assert nvram.text == "/w/1/uefi-vars.fd"


def test_qemu_csm_is_seabios_as_bios_rom():
    d = qemu_domain(fw=SEABIOS, firmware="csm")
    assert attrs(d.find("os/loader")) == {"type": "rom"}
    assert d.find("os/loader").text == "/usr/share/seabios/bios-256k.bin"
    assert d.find("os/nvram") is None


def test_every_lifecycle_action_destroys_like_no_reboot():
    for d in (qemu_domain(), bhyve_domain()):
        assert [d.findtext(e) for e in ("on_poweroff", "on_reboot", "on_crash")] == \
            ["destroy"] * 3


def test_qemu_boot_disk_is_readonly_virtio_first_in_boot_order_never_relabelled():
    disk, = qemu_domain().findall("devices/disk")
    assert attrs(disk) == {"type": "file", "device": "disk"}
    assert attrs(disk.find("driver")) == {"name": "qemu", "type": "raw"}
    assert disk.find("source").get("file") == "/img/ref.raw"
    # The cached image is shared: libvirt's DAC driver must not chown it.
    assert attrs(disk.find("source/seclabel")) == {"model": "dac", "relabel": "no"}
    assert attrs(disk.find("target")) == {"dev": "vda", "bus": "virtio"}
    assert disk.find("readonly") is not None
    assert disk.find("boot").get("order") == "1"


def test_qemu_device_disks_buses_serials_and_block_sizes():
    disks = qemu_domain(disks=DEVICE_DISKS).findall("devices/disk")
    assert [attrs(d.find("target")) for d in disks] == [
        {"dev": "vda", "bus": "virtio"}, {"dev": "vdb", "bus": "virtio"},
        {"dev": "nvme0n1", "bus": "nvme"}, {"dev": "nvme1n1", "bus": "nvme"},
        {"dev": "sda", "bus": "sata"}]
    assert [d.findtext("serial") for d in disks] == \
        [None, "RVSCRATCH", "RVNS512", "RVNS4K", None]
    assert attrs(disks[1].find("blockio")) == {"logical_block_size": "4096",
                                               "physical_block_size": "4096"}
    assert disks[2].find("blockio") is None
    assert [d.find("readonly") is not None for d in disks] == [True, False, False, False, False]
    assert [d.find("source/seclabel") is not None for d in disks] == [True] + [False] * 4
    assert [d.find("boot") is not None for d in disks] == [True] + [False] * 4


def test_qemu_ahci_cd_is_a_readonly_sata_cdrom():
    disk, = qemu_domain(disks=[Disk(Path("/i.iso"), bus="ahci-cd", boot=True)]) \
        .findall("devices/disk")
    assert disk.get("device") == "cdrom" and disk.find("target").get("bus") == "sata"
    assert disk.find("readonly") is not None


def test_staged_paths_replace_the_disk_source():
    d = lx.build_domain(spec(), "qemu", OVMF, lx.Options(),
                        {Path("/img/ref.raw"): Path("/var/lib/libvirt/images/x/0-ref.raw")})
    assert d.find("devices/disk/source").get("file") == "/var/lib/libvirt/images/x/0-ref.raw"


def test_qemu_serial_ports_com1_console_com2_data_as_isa_serial_ptys():
    serials = qemu_domain().findall("devices/serial")
    assert [attrs(s) for s in serials] == [{"type": "pty"}, {"type": "pty"}]
    assert [attrs(s.find("target")) for s in serials] == [
        {"type": "isa-serial", "port": "0"}, {"type": "isa-serial", "port": "1"}]
    assert [s.find("target/model").get("name") for s in serials] == ["isa-serial"] * 2
    assert lx.console_alias(spec(), "com1") == "serial0"
    assert lx.console_alias(spec(), "com2") == "serial1"
    with pytest.raises(InfraError, match="has no serial port 'com3'"):
        lx.console_alias(spec(), "com3")


def test_qemu_virtio_net_is_user_mode_like_the_qemu_backend():
    iface, = qemu_domain(nics=[Nic(mac="52:54:00:00:00:07")]).findall("devices/interface")
    assert attrs(iface) == {"type": "user"}
    assert iface.find("mac").get("address") == "52:54:00:00:00:07"
    assert iface.find("model").get("type") == "virtio"


def test_qemu_nodefaults_no_usb_no_balloon_no_graphics():
    devices = qemu_domain().find("devices")
    assert attrs(devices.find("controller")) == {"type": "usb", "model": "none"}
    assert attrs(devices.find("memballoon")) == {"model": "none"}
    assert devices.find("graphics") is None and devices.find("video") is None


def test_unknown_bus_nic_and_driver_are_infra_errors():
    with pytest.raises(InfraError, match="no disk bus 'floppy'"):
        qemu_domain(disks=[Disk(Path("/x"), bus="floppy", boot=True)])
    with pytest.raises(InfraError, match="no NIC model 'e1000'"):
        qemu_domain(nics=[Nic(model="e1000")])
    with pytest.raises(InfraError, match="unknown libvirt driver 'xen'"):
        lx.build_domain(spec(), "xen", OVMF)


def test_xml_text_round_trips():
    text = lx.to_xml(qemu_domain(disks=DEVICE_DISKS))
    assert text.startswith("<domain ") and text.endswith("</domain>\n")
    assert ET.fromstring(text).findtext("name") == "refvm-0123abcd-1"
    assert ET.fromstring(text).get("type") == "qemu"


def test_every_domain_says_which_machine_and_run_started_it():
    from harness.backends.libvirt.origin import NAMESPACE, this_machine

    for driver in ("qemu", "bhyve"):
        domain = ET.fromstring(lx.to_xml(lx.build_domain(spec(), driver, lx.FirmwareFiles())))
        origin = domain.find(f"metadata/{{{NAMESPACE}}}origin")
        assert origin is not None, driver
        assert origin.attrib == {"machine": this_machine(), "run": "0123abcd"}
    pinned = lx.build_domain(spec(), "qemu", lx.FirmwareFiles(), lx.Options(machine="ci-7"))
    assert pinned.find(f"metadata/{{{NAMESPACE}}}origin").get("machine") == "ci-7"
    # a run's VM (workdir <run dir>/<n>) names the run's claimed directory for the reaper
    in_run = dataclasses.replace(spec(), workdir=Path("/tmp/refvm-0123abcd/1"))
    origin = lx.build_domain(in_run, "qemu", lx.FirmwareFiles()).find(
        f"metadata/{{{NAMESPACE}}}origin")
    assert origin.get("workroot") == "/tmp/refvm-0123abcd"


def test_disk_names_follow_libvirt_suffixes():
    assert [lx._letters(i) for i in (0, 1, 25, 26, 27, 701)] == \
        ["a", "b", "z", "aa", "ab", "zz"]


# bhyve driver ------------------------------------------------------------------------------

def test_bhyve_domain_type_and_os():
    # drvbhyve "Example config": <domain type='bhyve'>, <os><type>hvm</type></os>
    d = bhyve_domain()
    assert d.get("type") == "bhyve"
    assert d.findtext("os/type") == "hvm" and attrs(d.find("os/type")) == {}
    assert d.find("cpu") is None  # topology only (drvbhyve "CPU topology"); no cpu mode


def test_bhyve_uefi_bootrom_and_nvram():
    # drvbhyve "Using UEFI bootrom, VNC, and USB tablet": <loader readonly="yes"
    # type="pflash">; since 11.4.0 <nvram template='...VARS.fd'>per-vm.fd</nvram>
    d = bhyve_domain()
    assert attrs(d.find("os/loader")) == {"readonly": "yes", "type": "pflash"}
    assert d.find("os/loader").text == "/usr/local/share/uefi-firmware/BHYVE_UEFI_CODE.fd"
    assert d.find("os/nvram").get("template") == \
        "/usr/local/share/edk2-bhyve/BHYVE_UEFI_VARS.fd"
    assert d.find("os/nvram").text == "/w/1/uefi-vars.fd"


def test_bhyve_single_image_uefi_and_bhyveload_have_no_nvram():
    single = bhyve_domain(lx.FirmwareFiles(
        Path("/usr/local/share/uefi-firmware/BHYVE_UEFI.fd"), "pflash"))
    assert single.find("os/loader") is not None and single.find("os/nvram") is None
    # drvbhyve "Example config": no <loader> and no <bootloader> -> bhyveload
    loadless = bhyve_domain(lx.FirmwareFiles(), firmware="bhyveload")
    assert loadless.find("os/loader") is None and loadless.find("bootloader") is None


def test_bhyve_features_acpi_apic_and_ignored_msrs():
    # drvbhyve examples: <features><apic/><acpi/>; "Ignoring unknown MSRs reads and writes"
    # (since 5.1.0): <features><msrs unknown='ignore'/></features>
    features = bhyve_domain().find("features")
    assert features.find("acpi") is not None and features.find("apic") is not None
    assert attrs(features.find("msrs")) == {"unknown": "ignore"}


def test_bhyve_clock():
    # drvbhyve "Clock configuration": <clock offset='utc'/> or 'localtime'
    assert bhyve_domain().find("clock").get("offset") == "utc"
    assert bhyve_domain(utc=False).find("clock").get("offset") == "localtime"


def test_bhyve_disks_virtio_sata_nvme_with_file_driver():
    # drvbhyve examples: <driver name='file' type='raw'/>, <target dev='hda' bus='sata'/>;
    # "Using ZFS volumes": bus='virtio' dev='vdb'; "NVMe device" (since 11.9.0):
    # <target dev='nvme0n1' bus='nvme'/>, "increment controller number": nvme0n1, nvme1n1
    disks = bhyve_domain(disks=[
        Disk(Path("/img/ref.raw"), readonly=True, boot=True),
        Disk(Path("/w/1/a.raw"), bus="nvme"), Disk(Path("/w/1/b.raw"), bus="nvme"),
        Disk(Path("/w/1/c.raw"), bus="ahci-hd"),
    ]).findall("devices/disk")
    assert [attrs(d.find("driver")) for d in disks] == [{"name": "file", "type": "raw"}] * 4
    assert [attrs(d.find("target")) for d in disks] == [
        {"dev": "vda", "bus": "virtio"}, {"dev": "nvme0n1", "bus": "nvme"},
        {"dev": "nvme1n1", "bus": "nvme"}, {"dev": "sda", "bus": "sata"}]
    # "the Bhyve driver in libvirt will boot whichever device is first": no <boot order>
    assert all(d.find("boot") is None for d in disks)
    assert disks[0].find("readonly") is not None
    assert disks[0].find("source/seclabel") is None  # no DAC relabelling on bhyve


def test_bhyve_nmdm_serial_ports():
    # drvbhyve "Connecting to a guest console" (since 1.2.4):
    # <serial type="nmdm"><source master="/dev/nmdm0A" slave="/dev/nmdm0B"/></serial>
    serials = bhyve_domain().findall("devices/serial")
    assert [attrs(s) for s in serials] == [{"type": "nmdm"}, {"type": "nmdm"}]
    assert [attrs(s.find("source")) for s in serials] == [
        {"master": "/dev/nmdm40A", "slave": "/dev/nmdm40B"},
        {"master": "/dev/nmdm41A", "slave": "/dev/nmdm41B"}]
    # bhyve_command.c: -l com<target port + 1>
    assert [s.find("target").get("port") for s in serials] == ["0", "1"]


def test_bhyve_nmdm_units_are_stable_and_distinct_per_vm():
    assert lx.nmdm_unit("refvm-0123abcd-1") == lx.nmdm_unit("refvm-0123abcd-1")
    assert lx.nmdm_unit("refvm-0123abcd-1") != lx.nmdm_unit("refvm-0123abcd-2")
    assert lx.nmdm_unit("refvm-0123abcd-1") % 4 == 0  # room for com1..com4


def test_bhyve_virtio_net_on_a_bridge():
    # drvbhyve "Example config": <interface type='bridge'><model type='virtio'/>
    # <source bridge="virbr0"/></interface>
    iface, = bhyve_domain(nics=[Nic(mac="52:54:00:00:00:09")]).findall("devices/interface")
    assert attrs(iface) == {"type": "bridge"}
    assert iface.find("source").get("bridge") == "bridge0"
    assert iface.find("model").get("type") == "virtio"
    assert iface.find("mac").get("address") == "52:54:00:00:00:09"


def test_bhyve_lpc_at_slot_31():
    # drvbhyve "Guest-specific considerations / Windows": <controller type='isa' index='0'>
    # <address type='pci' domain='0x0000' bus='0x00' slot='0x1f' function='0x0'/>
    isa, = bhyve_domain().findall("devices/controller")
    assert attrs(isa) == {"type": "isa", "index": "0"}
    assert attrs(isa.find("address")) == {"type": "pci", "domain": "0x0000", "bus": "0x00",
                                          "slot": "0x1f", "function": "0x0"}
    assert bhyve_domain().find("devices/memballoon") is None


# Domain capabilities -------------------------------------------------------------------------

WHERE = "libvirt 9.0.0 at qemu:///system"


def test_qemu_domain_passes_against_the_debian_12_host():
    lx.check_capabilities(qemu_domain(), QEMU_CAPS, WHERE)
    lx.check_capabilities(qemu_domain(fw=SEABIOS, firmware="csm"), QEMU_CAPS, WHERE)


def test_nvme_disk_on_a_host_without_the_bus_names_the_element():
    with pytest.raises(InfraError) as err:
        lx.check_capabilities(qemu_domain(disks=DEVICE_DISKS), QEMU_CAPS, WHERE)
    message = str(err.value)
    assert message.startswith("libvirt 9.0.0 at qemu:///system cannot run refvm-0123abcd-1: "
                              "<target dev='nvme0n1' bus='nvme'>: disk bus 'nvme' is not "
                              "supported (disk buses offered: fdc, scsi, virtio, usb, sata)")
    assert "also <target dev='nvme1n1' bus='nvme'>" in message


def test_loader_not_in_the_hosts_firmware_list_is_named():
    other = lx.FirmwareFiles(Path("/opt/OVMF_CODE.fd"), "pflash", Path("/opt/VARS.fd"),
                             Path("/w/v.fd"))
    with pytest.raises(InfraError, match=r"<loader>/opt/OVMF_CODE.fd</loader>: the host's "
                                         r"firmware list has /usr/share/OVMF/OVMF_CODE_4M.ms.fd"):
        lx.check_capabilities(qemu_domain(fw=other), QEMU_CAPS, WHERE)


def test_unsupported_loader_type_cpu_mode_and_domain_type_are_named():
    caps = QEMU_CAPS.replace("<value>rom</value>", "")
    with pytest.raises(InfraError, match=r"<loader type='rom'>: loader types offered: pflash"):
        lx.check_capabilities(qemu_domain(fw=SEABIOS, firmware="csm"), caps, WHERE)
    kvm = lx.build_domain(spec(), "qemu", OVMF, lx.Options("kvm", "host-passthrough"))
    with pytest.raises(InfraError) as err:
        lx.check_capabilities(kvm, QEMU_CAPS, WHERE)
    assert "<domain type='kvm'>: the host offers domain type 'qemu'" in str(err.value)
    assert "<cpu mode='host-passthrough'>: not supported" in str(err.value)


def test_host_without_any_loader_is_named():
    caps = QEMU_CAPS.replace('<loader supported="yes">', '<loader supported="no">')
    with pytest.raises(InfraError, match="<os><loader>: the host supports no firmware loader"):
        lx.check_capabilities(qemu_domain(), caps, WHERE)


def test_bhyve_domain_passes_on_a_new_enough_libvirt():
    lx.check_capabilities(bhyve_domain(), BHYVE_CAPS, "libvirt 11.9.0 at bhyve:///system",
                          (11, 9, 0))
    nvme = bhyve_domain(disks=[Disk(Path("/img/ref.raw"), readonly=True, boot=True),
                               Disk(Path("/w/1/a.raw"), bus="nvme")])
    lx.check_capabilities(nvme, BHYVE_CAPS, "libvirt 11.9.0 at bhyve:///system", (11, 9, 0))


def test_bhyve_features_newer_than_the_host_libvirt_are_named_with_their_release():
    nvme = bhyve_domain(disks=[Disk(Path("/img/ref.raw"), readonly=True, boot=True),
                               Disk(Path("/w/1/a.raw"), bus="nvme")])
    with pytest.raises(InfraError) as err:
        lx.check_capabilities(nvme, BHYVE_CAPS, "libvirt 10.0.0 at bhyve:///system",
                              (10, 0, 0))
    message = str(err.value)
    assert "<os><nvram> (per-VM UEFI variables) needs libvirt 11.4.0 or later (drvbhyve), " \
           "the host has 10.0.0" in message
    assert "<target bus='nvme'> (NVMe disk) needs libvirt 11.9.0 or later" in message


def test_bhyve_disk_serial_and_block_size_are_refused_not_silently_dropped():
    disks = [Disk(Path("/img/ref.raw"), readonly=True, boot=True),
             Disk(Path("/w/1/a.raw"), serial="RV1", sector_size=4096)]
    with pytest.raises(InfraError) as err:
        lx.check_capabilities(bhyve_domain(disks=disks), BHYVE_CAPS, "bhyve host", (12, 0, 0))
    assert "<blockio> on disk vdb" in str(err.value)
    assert "<serial> on disk vdb" in str(err.value)


def test_bhyve_loader_must_be_in_the_firmware_directory():
    other = lx.FirmwareFiles(Path("/boot/BHYVE_UEFI.fd"), "pflash")
    with pytest.raises(InfraError, match=r"<loader>/boot/BHYVE_UEFI.fd</loader>"):
        lx.check_capabilities(bhyve_domain(other), BHYVE_CAPS, "bhyve host", (12, 0, 0))


def test_version_numbers():
    assert lx.parse_version(9000000) == (9, 0, 0)
    assert lx.parse_version(11009001) == (11, 9, 1)


# File access and exit words (libvirt.staging, libvirt.machine; no libvirtd needed) -------

def test_others_can_reach_needs_searchable_parents_and_a_readable_file(tmp_path):
    from harness.backends.libvirt.staging import others_can_reach

    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    (closed / "img.raw").write_bytes(b"x")
    (closed / "img.raw").chmod(0o644)
    assert not others_can_reach(closed / "img.raw", read_file=True)
    closed.chmod(0o755)
    tmp_path.chmod(0o755)
    opened = all(p.stat().st_mode & 0o001 for p in list(tmp_path.parents)[:-1])
    assert others_can_reach(closed / "img.raw", read_file=True) == opened
    (closed / "img.raw").chmod(0o600)
    assert not others_can_reach(closed / "img.raw", read_file=True)
    assert others_can_reach(closed / "img.raw", read_file=False) == opened


def test_stage_links_shared_files_and_copies_private_read_only_ones(tmp_path):
    from harness.backends.libvirt.staging import Stage

    src = tmp_path / "private"
    src.mkdir(mode=0o700)
    shared, secret, scratch = src / "shared.raw", src / "secret.raw", src / "scratch.raw"
    for path, mode in ((shared, 0o644), (secret, 0o600), (scratch, 0o644)):
        path.write_bytes(b"data")
        path.chmod(mode)
    stage = Stage(tmp_path / "stage" / "refvm-0123abcd-1")
    linked = stage.reachable(shared, readonly=True)
    copied = stage.reachable(secret, readonly=True)
    writable = stage.reachable(scratch, readonly=False)
    assert linked.stat().st_ino == shared.stat().st_ino  # the same file, not a copy
    assert copied.stat().st_ino != secret.stat().st_ino and copied.read_bytes() == b"data"
    assert secret.stat().st_mode & 0o777 == 0o600  # the original is never chmodded
    assert writable.stat().st_ino == scratch.stat().st_ino  # guest writes = harness reads
    assert stage.root.stat().st_mode & 0o777 == 0o711
    stage.remove()
    assert not stage.root.exists() and shared.read_bytes() == b"data"


def test_run_ids_of_domain_names():
    from harness.backends.libvirt.reap import run_id_of

    assert run_id_of("refvm-0123abcd-7") == "0123abcd"
    assert run_id_of("refvm-0123abcd") is None and run_id_of("webserver") is None


def _machine(events=(), qmp=None):
    """A LibvirtMachine with no domain behind it, for its exit-reason logic."""
    libvirt = pytest.importorskip("libvirt")
    import threading

    from harness.backends.libvirt.machine import LibvirtMachine

    m = object.__new__(LibvirtMachine)
    m.libvirt, m._events, m._qmp_reason, m._exit = libvirt, list(events), qmp, None
    m._changed, m._last_state = threading.Condition(), "running"
    return m, libvirt


def test_exit_words_from_lifecycle_events_and_qemu_reasons():
    lv = pytest.importorskip("libvirt")
    m, lv = _machine([(lv.VIR_DOMAIN_EVENT_STOPPED, lv.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN)])
    assert str(m._vanished()) == "poweroff (libvirt: the guest shut down)"
    # libvirt 9.0 reports a guest reset under <on_reboot>destroy</on_reboot> exactly like a
    # power-off; QEMU's SHUTDOWN reason tells them apart.
    m, lv = _machine([(lv.VIR_DOMAIN_EVENT_STOPPED, lv.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN)],
                     qmp="guest-reset")
    assert str(m._vanished()) == "reboot (libvirt: the guest shut down; QEMU: guest-reset)"
    m, lv = _machine([(lv.VIR_DOMAIN_EVENT_STOPPED, lv.VIR_DOMAIN_EVENT_STOPPED_DESTROYED)])
    assert m._vanished().kind == "killed"
    m, lv = _machine([(lv.VIR_DOMAIN_EVENT_CRASHED, 0),
                      (lv.VIR_DOMAIN_EVENT_STOPPED, lv.VIR_DOMAIN_EVENT_STOPPED_CRASHED)])
    assert m._vanished().kind == "panic"
    m, lv = _machine([(lv.VIR_DOMAIN_EVENT_STOPPED, lv.VIR_DOMAIN_EVENT_STOPPED_FAILED)])
    assert str(m._vanished()) == "error (libvirt: the hypervisor failed)"


def test_a_vanished_domain_without_events_is_judged_by_its_last_state():
    m, _ = _machine()
    assert str(m._vanished()) == "killed (libvirt: the domain vanished; last seen running)"


# NVMe as QEMU's own device (QEMU driver without the nvme disk bus) ---------------------------

QEMU_ARGS = lx.Options(nvme_as_qemu_args=True)
NS = "{http://libvirt.org/schemas/domain/qemu/1.0}"


def test_offers_disk_bus_reads_the_domain_capabilities():
    assert not lx.offers_disk_bus(QEMU_CAPS, "nvme") and lx.offers_disk_bus(QEMU_CAPS, "sata")
    with_nvme = QEMU_CAPS.replace("<value>sata</value>", "<value>sata</value><value>nvme</value>")
    assert lx.offers_disk_bus(with_nvme, "nvme")


def test_nvme_disks_become_qemu_drive_and_device_args():
    # -drive file=,format=,if=none,id=disk<position>,readonly=on|off, then the device as JSON
    # (QEMU creates key=value -device options before libvirt's JSON ones: see nvme_qemu_args)
    d = lx.build_domain(spec(disks=DEVICE_DISKS), "qemu", OVMF, QEMU_ARGS)
    assert [t.get("bus") for t in d.findall("devices/disk/target")] == ["virtio", "virtio", "sata"]
    assert [t.get("dev") for t in d.findall("devices/disk/target")] == ["vda", "vdb", "sda"]
    assert lx.qemu_args(d) == [
        "-drive", "file=/w/1/ns512.raw,format=raw,if=none,id=disk2,readonly=off",
        "-device", '{"driver":"nvme","drive":"disk2","serial":"RVNS512"}',
        "-drive", "file=/w/1/ns4k.raw,format=raw,if=none,id=disk3,readonly=off",
        "-device", '{"driver":"nvme","drive":"disk3","serial":"RVNS4K",'
                   '"logical_block_size":4096,"physical_block_size":4096}']
    assert d[list(d).index(d.find("uuid")) + 1].tag == "description"
    assert "ns512.raw, ns4k.raw are QEMU's own -device nvme" in d.findtext("description")
    assert "list no 'nvme' disk bus" in d.findtext("description")


@pytest.mark.parametrize("disk", [
    Disk(Path("/w/1/a.raw"), bus="nvme", serial="RV-A"),
    Disk(Path("/w/1/b.raw"), bus="nvme", serial="RV-B", sector_size=4096, readonly=True),
    Disk(Path("/w/1/c.raw"), bus="nvme"),  # no serial: the QEMU backend's default one
    Disk(Path("/w/1/d.raw"), bus="nvme", serial="RV-D", boot=True),
])
def test_nvme_qemu_args_carry_the_qemu_backends_properties(disk):
    """The same drive and device properties as harness/backends/qemu/backend.py for the same disk."""
    from harness.backends.qemu.backend import _disk_args

    def props(text: str) -> dict:
        return dict(item.split("=", 1) for item in text.split(",") if "=" in item)

    drive, device = lx.nvme_qemu_args(3, disk, disk.path)[1::2]
    qemu_drive, qemu_device = _disk_args(3, disk)[1::2]
    assert props(drive) == props(qemu_drive)
    ours = {k: str(v) for k, v in json.loads(device).items()}
    assert ours.pop("driver") == qemu_device.split(",")[0] == "nvme"
    assert ours == props(qemu_device)


def test_qemu_args_use_the_staged_path_with_commas_doubled_and_readonly_on():
    disks = (Disk(Path("/img/ref.raw"), readonly=True, boot=True),
             Disk(Path("/w/1/ro.raw"), bus="nvme", serial="RO", readonly=True))
    d = lx.build_domain(spec(disks=disks), "qemu", OVMF, QEMU_ARGS,
                        {Path("/w/1/ro.raw"): Path("/stage/a,b/0-ro.raw")})
    assert lx.qemu_args(d)[1] == "file=/stage/a,,b/0-ro.raw,format=raw,if=none,id=disk1," \
                                 "readonly=on"


def test_qemu_args_serialize_in_libvirts_qemu_namespace():
    text = lx.to_xml(lx.build_domain(spec(disks=DEVICE_DISKS), "qemu", OVMF, QEMU_ARGS))
    assert text.startswith('<domain xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0" ')
    assert "<qemu:commandline>\n    <qemu:arg value=\"-drive\" />" in text
    parsed = ET.fromstring(text)
    assert parsed.find(f"{NS}commandline") is not None
    assert len(parsed.findall(f"{NS}commandline/{NS}arg")) == 8


def test_without_the_fallback_there_is_no_qemu_namespace():
    d = qemu_domain(disks=DEVICE_DISKS)
    assert lx.qemu_args(d) == [] and d.find("description") is None
    assert "xmlns:qemu" not in lx.to_xml(d)


def test_bhyve_keeps_the_nvme_bus_whatever_the_option():
    options = lx.Options(domain_type="bhyve", cpu_mode=None, nmdm_unit=40,
                         nvme_as_qemu_args=True)
    d = lx.build_domain(spec(disks=[Disk(Path("/img/ref.raw"), readonly=True, boot=True),
                                    Disk(Path("/w/1/a.raw"), bus="nvme")]),
                        "bhyve", BHYVE_UEFI, options)
    assert [t.get("bus") for t in d.findall("devices/disk/target")] == ["virtio", "nvme"]
    assert lx.qemu_args(d) == []


def test_qemu_args_pass_on_libvirt_9_with_dac_only_and_are_refused_under_apparmor():
    d = lx.build_domain(spec(disks=DEVICE_DISKS), "qemu", OVMF, QEMU_ARGS)
    lx.check_capabilities(d, QEMU_CAPS, WHERE, security_models=("none", "dac"))
    with pytest.raises(InfraError) as err:
        lx.check_capabilities(d, QEMU_CAPS, WHERE, security_models=("apparmor", "dac"))
    assert "<qemu:commandline> NVMe disk files: this host confines QEMU with AppArmor" \
        in str(err.value)


# bhyve data ports ------------------------------------------------------------------------------

def test_nmdm_slave_of_a_port_comes_from_the_domain_xml():
    text = lx.to_xml(bhyve_domain())
    assert lx.nmdm_slave(text, "com1") == "/dev/nmdm40B"
    assert lx.nmdm_slave(text, "com2") == "/dev/nmdm41B"
    with pytest.raises(InfraError, match="no nmdm serial port for com3"):
        lx.nmdm_slave(text, "com3")


def test_remote_bhyve_host_cannot_reach_a_data_port():
    # bhyve_driver.c bhyveDomainOpenConsole: dev_name unused, always vm->def->serials[0]
    where = "libvirt 11.9.0 at bhyve+ssh://host/system"
    with pytest.raises(lx.Unsupported) as err:
        lx.check_capabilities(bhyve_domain(), BHYVE_CAPS, where, (11, 9, 0), local=False)
    assert "<serial> com2: libvirt's bhyve driver opens only the first serial port" \
        in str(err.value)
    assert "/dev/nmdm41B cannot be opened from here" in str(err.value)
    lx.check_capabilities(bhyve_domain(), BHYVE_CAPS, where, (11, 9, 0), local=True)
    console_only = bhyve_domain(serials=(SerialPort("com1"),))
    lx.check_capabilities(console_only, BHYVE_CAPS, where, (11, 9, 0), local=False)


# QEMU's user and the files it must write (libvirt.staging) --------------------------------------

HOST_CAPS = """\
<capabilities>
  <host>
    <secmodel><model>none</model><doi>0</doi></secmodel>
    <secmodel>
      <model>dac</model><doi>0</doi>
      <baselabel type='kvm'>+64055:+107</baselabel>
      <baselabel type='qemu'>+64055:+64055</baselabel>
    </secmodel>
  </host>
</capabilities>
"""


def test_qemu_user_and_security_models_from_the_host_capabilities():
    from harness.backends.libvirt.staging import qemu_owner, security_models

    assert qemu_owner(HOST_CAPS, "qemu") == (64055, 64055)
    assert qemu_owner(HOST_CAPS, "kvm") == (64055, 107)
    assert qemu_owner(HOST_CAPS, "bhyve") is None
    assert security_models(HOST_CAPS) == ("none", "dac")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_stage_lends_a_writable_file_to_qemus_user_and_gives_it_back(tmp_path):
    """libvirt chowns only the files its <disk> elements name; a file passed as QEMU
    arguments is chowned by the stage for the run (QEMU must open it read-write)."""
    from harness.backends.libvirt.staging import Stage

    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    writable, readonly = closed / "disk.raw", closed / "ro.raw"
    for path in (writable, readonly):
        path.write_bytes(b"x")
        path.chmod(0o644)
    stage = Stage(tmp_path / "stage" / "refvm-0123abcd-1")
    lent = stage.reachable(writable, readonly=False, owner=(64055, 64056))
    kept = stage.reachable(readonly, readonly=True, owner=(64055, 64056))
    assert lent.parent == stage.root and lent.stat().st_ino == writable.stat().st_ino
    assert (lent.stat().st_uid, lent.stat().st_gid) == (64055, 64056)
    assert (kept.stat().st_uid, kept.stat().st_gid) == (os.getuid(), os.getgid())
    stage.remove()
    assert (writable.stat().st_uid, writable.stat().st_gid) == (os.getuid(), os.getgid())
    assert not stage.root.exists()
