"""bhyve command lines: exact argv for guest x firmware x devices x FreeBSD release.

Why each expected option is there (quotes from bhyve(8), bhyve_config(5), bhyveload(8),
bhyvectl(8) in the FreeBSD source tree):

  -c 1                 "-c [[cpus=]numcpus]...  Number of guest virtual CPUs"
  -m 512M              "-m memsize[K|k|M|m|G|g|T|t] Set the guest physical memory size"
  -H                   "Yield the virtual CPU thread when a HLT instruction is detected.
                        If this option is not specified, virtual CPUs will use 100% of a host CPU"
  -w                   "Ignore accesses to unimplemented Model Specific Registers (MSRs)"
  -u                   "RTC keeps UTC time" (the guest's utc_clock)
  -A                   usage(): "-A: create ACPI tables" (13.2, 14.1); 15.0's synopsis
                        [-aCDeHhPSuWwxY] has no -A (main keeps it only as a "NOP. For
                        backward compatibility")
  -D                   "Destroy the VM on guest initiated power-off"
  -s 0,hostbridge      "This is usually configured at slot 0, and is required by most guest
                        operating systems"
  -s N,virtio-blk,P    "Virtio block storage interface"; block options "ro  Force the file to
                        be opened read-only"; "sectorsize=logical[/physical]"
  ...,ser=S            bhyve_config(5) VirtIO Block Device Settings "ser  Serial number of up
                        to twenty characters"
  -s N,nvme,P          "NVM Express (NVMe) controller"; "sectsz  Sector size", "ser  Serial
                        number with maximum 20 characters"
  -s N,virtio-net,tapN,mac=M   network backend "tapN[,mac=xx:xx:xx:xx:xx:xx]"
  -s 31,lpc            "LPC PCI-ISA bridge with COM1, COM2, COM3, and COM4 16550 serial ports,
                        a boot ROM"; at 31 because Windows wants it there
  -l comN,/dev/nmdmXA  "-l lpcdev[,conf]"; TTY backend "/dev/xxx  Use the host TTY device"
  -l bootrom,ROM,VARS  "Map romfile ... If varfile is provided, that file is also mapped ...
                        any modifications the guest makes will be saved to that file"
  -U UUID              "Set the universally unique identifier (UUID) in the guest's System
                        Management BIOS System Information structure"
  bhyvectl --vm=N --destroy   bhyvectl(8) "Destroy the specified VM" (a stale one, first)
  ifconfig bridge create      ifconfig(8) create: "If the interface is given without a unit
                        number, try to create a new device with an arbitrary unit number ...
                        the new device name is printed to standard output"; the plan shows
                        the later lines with bridgeN where that name goes
  ... description D           ifconfig(8) "description value: Specify a description of the
                        interface"; the synopsis allows parameters after create. D is refvm's
                        mark, naming the run directory (the workdir's parent, here /)
  ifconfig bridgeN inet A/24  ifconfig(8): "one can specify an address like 192.168.0.1/16"
  ifconfig bridgeN addm tapN  bridge(4)/ifconfig(8) addm: make the tap a member
  ifconfig bridgeN up         bridge(4): "all member interfaces and the bridge need to be up"
  bhyveload -c CONS -m MEM -d DISK NAME   bhyveload(8) "-c cons-dev", "-m mem-size",
                        "-d disk-path  the pathname of the guest's boot disk image"
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from harness import firmware as fw
from harness.backends import get_backend
from harness.backends.bhyve.backend import BhyveBackend, Programs
from harness.backends.bhyve.argv import (bridge_addresses, net_number, nmdm_pair, tap_names,
                                         vm_number)
from harness.backends.bhyve.caps import BhyveCaps, parse_release
from harness.errors import InfraError
from harness.vmspec import Disk, Nic, SerialPort, VmSpec

from tests.doubles_bhyve import PCI_HELP_NO_NVME, SAMPLES, SNAPSHOT_BUILD, canned_runner

NAME, UUID = "refvm-abc-1", "00000000-0000-4000-8000-000000000001"
BHYVE, BHYVECTL, BHYVELOAD, IFCONFIG = ("/usr/sbin/bhyve", "/usr/sbin/bhyvectl",
                                        "/usr/sbin/bhyveload", "/sbin/ifconfig")
# crc32("refvm-abc-1") % 10000 = 4711: COM1 is nmdm 4711*4, COM2 the next; NIC 0 is tap 4711*8.
COM1_A, COM2_A, TAP0 = "/dev/nmdm18844A", "/dev/nmdm18845A", "tap37688"
# crc32("refvm-abc-1") % 254 + 1 = 2: the VM's bridge has 10.210.2.1/24, the guest 10.210.2.2/24.
HOST_CIDR, GUEST_CIDR = "10.210.2.1/24", "10.210.2.2/24"


def caps(release: str, **changes) -> BhyveCaps:
    sample = dict(SAMPLES[release], **changes)
    return BhyveCaps.probe(canned_runner(sample), BHYVE, "freebsd-version", "uname")


@pytest.fixture
def firmware(tmp_path):
    """Stand-ins for edk2-bhyve's files and a pinned CSM image."""
    files = {name: tmp_path / name for name in
             ("BHYVE_UEFI_CODE.fd", "BHYVE_UEFI_VARS.fd", "BHYVE_UEFI.fd", "BHYVE_UEFI_CSM.fd")}
    for path in files.values():
        path.write_bytes(b"\0" * 1024)
    return files


def backend(firmware, release="14.1", host_caps=None, **options) -> BhyveBackend:
    f = firmware
    return BhyveBackend(
        caps=host_caps or caps(release), csm_firmware=f["BHYVE_UEFI_CSM.fd"],
        uefi=fw.FirmwareCandidates("uefi", "pkg install edk2-bhyve", (
            fw.UefiPair(f["BHYVE_UEFI_CODE.fd"], f["BHYVE_UEFI_VARS.fd"]),)),
        uefi_single=fw.FirmwareCandidates("uefi", "pkg install edk2-bhyve",
                                          (f["BHYVE_UEFI.fd"],)), **options)


DEVICES = {
    "none": {},
    "virtio-blk": {"disks": (Disk(Path("/w/scratch.raw"), serial="RVBLK-SCRATCH"),
                             Disk(Path("/w/golden.raw"), readonly=True))},
    "nvme": {"disks": (Disk(Path("/w/ns512.raw"), bus="nvme", serial="RVNVME-512"),
                       Disk(Path("/w/ns4k.raw"), bus="nvme", serial="RVNVME-4K",
                            sector_size=4096))},
    "virtio-net": {"nics": (Nic(mac="52:54:00:12:34:56"),)},
    "com2": {"serials": (SerialPort("com1"), SerialPort("com2", "data"))},
}


def refguest(firmware="uefi", devices="none") -> VmSpec:
    """Like Run.vm_spec makes for the reference guest: read-only boot disk, COM1 console."""
    extra = DEVICES[devices]
    boot = Disk(Path("/img/refguest.raw"), readonly=True, boot=True)
    return VmSpec(name=NAME, memory_mib=512, cpus=1, firmware=firmware, uuid=UUID, utc_clock=True,
                  workdir=Path("/w"), logdir=Path("/logs"),
                  disks=(boot,) + extra.get("disks", ()), nics=extra.get("nics", ()),
                  serials=extra.get("serials", (SerialPort("com1"),)))


# Expected pieces, as literal tables -----------------------------------------------------------
FLAGS = {"13.2": ["-u", "-A", "-D"], "14.1": ["-u", "-A", "-D"], "15.0": ["-u", "-D"]}
SLOTS = {  # after "-s 0,hostbridge -s 2,<boot disk>", before "-s 31,lpc"
    "none": [],
    "virtio-blk": ["-s", "3,virtio-blk,/w/scratch.raw,ser=RVBLK-SCRATCH",
                   "-s", "4,virtio-blk,/w/golden.raw,ro"],
    "nvme": ["-s", "3,nvme,/w/ns512.raw,ser=RVNVME-512",
             "-s", "4,nvme,/w/ns4k.raw,sectsz=4096,ser=RVNVME-4K"],
    "virtio-net": ["-s", f"3,virtio-net,{TAP0},mac=52:54:00:12:34:56"],
    "com2": [],
}
MORE_PORTS = {"com2": ["-l", f"com2,{COM2_A}"]}
MARK = "refvm:/"  # the workdir /w's parent: the run directory the taps and bridge belong to
NET_LINES = [[IFCONFIG, "bridge", "create", "description", MARK],
             [IFCONFIG, "bridgeN", "inet", HOST_CIDR],
             [IFCONFIG, TAP0, "create", "description", MARK], [IFCONFIG, "bridgeN", "addm", TAP0],
             [IFCONFIG, TAP0, "up"], [IFCONFIG, "bridgeN", "up"]]


def expected_lines(f, release, firmware, devices) -> list[list[str]]:
    bootrom = {"uefi": ["-l", f"bootrom,{f['BHYVE_UEFI_CODE.fd']},/w/uefi-vars.fd"],
               "csm": ["-l", f"bootrom,{f['BHYVE_UEFI_CSM.fd']}"],
               "bhyveload": []}[firmware]
    bhyve = [BHYVE, "-c", "1", "-m", "512M", "-H", "-w", *FLAGS[release],
             "-s", "0,hostbridge", "-s", "2,virtio-blk,/img/refguest.raw,ro", *SLOTS[devices],
             "-s", "31,lpc", "-l", f"com1,{COM1_A}", *MORE_PORTS.get(devices, []), *bootrom,
             "-U", UUID, NAME]
    lines = [[BHYVECTL, f"--vm={NAME}", "--destroy"]]
    if firmware == "uefi":
        lines.append(["cp", str(f["BHYVE_UEFI_VARS.fd"]), "/w/uefi-vars.fd"])
    if devices == "virtio-net":
        lines += NET_LINES
    if firmware == "bhyveload":
        lines.append([BHYVELOAD, "-c", COM1_A, "-m", "512M", "-d", "/img/refguest.raw", NAME])
    return lines + [bhyve]


@pytest.mark.parametrize("release", ["13.2", "14.1", "15.0"])
@pytest.mark.parametrize("firmware_profile", ["uefi", "csm", "bhyveload"])
@pytest.mark.parametrize("devices", list(DEVICES))
def test_command_lines_are_exact(firmware, release, firmware_profile, devices):
    lines = backend(firmware, release).command_lines(refguest(firmware_profile, devices))
    assert lines == expected_lines(firmware, release, firmware_profile, devices)


def test_uefi_two_nvme_on_14_1_in_full(firmware):
    """The whole bhyve argv written out once, for the record (and the report)."""
    argv = backend(firmware, "14.1").command_lines(refguest("uefi", "nvme"))[-1]
    assert argv == [
        "/usr/sbin/bhyve", "-c", "1", "-m", "512M", "-H", "-w", "-u", "-A", "-D",
        "-s", "0,hostbridge",
        "-s", "2,virtio-blk,/img/refguest.raw,ro",
        "-s", "3,nvme,/w/ns512.raw,ser=RVNVME-512",
        "-s", "4,nvme,/w/ns4k.raw,sectsz=4096,ser=RVNVME-4K",
        "-s", "31,lpc",
        "-l", "com1,/dev/nmdm18844A",
        "-l", f"bootrom,{firmware['BHYVE_UEFI_CODE.fd']},/w/uefi-vars.fd",
        "-U", "00000000-0000-4000-8000-000000000001",
        "refvm-abc-1"]


# Slots and host-side names -----------------------------------------------------------------------
def test_boot_disk_takes_slot_2_wherever_it_is_listed(firmware):
    spec = refguest()
    boot, = spec.disks
    data = Disk(Path("/w/data.raw"))
    spec = VmSpec(**{**spec.__dict__, "disks": (data, boot.__class__(**{**boot.__dict__}))})
    argv = backend(firmware).command_lines(spec)[-1]
    slots = [argv[i + 1] for i, a in enumerate(argv) if a == "-s"]
    assert slots == ["0,hostbridge", "2,virtio-blk,/img/refguest.raw,ro",
                     "3,virtio-blk,/w/data.raw", "31,lpc"]


def test_nvme_without_serial_gets_the_qemu_backends_default(firmware):
    spec = refguest()
    spec = VmSpec(**{**spec.__dict__, "disks": spec.disks + (Disk(Path("/w/n.raw"), bus="nvme"),)})
    assert "3,nvme,/w/n.raw,ser=REFVM0001" in backend(firmware).command_lines(spec)[-1]


def test_host_names_are_derived_from_the_vm_name_only():
    assert vm_number(NAME) == 4711
    assert nmdm_pair(NAME, "com1") == ("/dev/nmdm18844A", "/dev/nmdm18844B")
    assert nmdm_pair(NAME, "com2", "/tmp/x/nmdm{unit}{side}") == ("/tmp/x/nmdm18845A",
                                                                  "/tmp/x/nmdm18845B")
    assert tap_names(refguest(devices="virtio-net")) == [TAP0]
    assert net_number(NAME) == 2 and bridge_addresses(NAME) == (HOST_CIDR, GUEST_CIDR)


@pytest.mark.parametrize("name", ["a", "refvm-0-1", "refvm-abc-1", "x" * 200])
def test_network_numbers_avoid_0_and_255(name):
    assert 1 <= net_number(name) <= 254
    assert {net_number(f"refvm-run-{i}") for i in range(5000)} == set(range(1, 255))


def test_two_nics_share_the_one_bridge_in_order(firmware):
    spec = VmSpec(**{**refguest().__dict__, "nics": (Nic(mac="52:54:00:00:00:01"),
                                                     Nic(mac="52:54:00:00:00:02"))})
    tap0, tap1 = tap_names(spec)
    lines = [line for line in backend(firmware).command_lines(spec) if line[0] == IFCONFIG]
    assert lines == [[IFCONFIG, "bridge", "create", "description", MARK],
                     [IFCONFIG, "bridgeN", "inet", HOST_CIDR],
                     [IFCONFIG, tap0, "create", "description", MARK],
                     [IFCONFIG, "bridgeN", "addm", tap0], [IFCONFIG, tap0, "up"],
                     [IFCONFIG, tap1, "create", "description", MARK],
                     [IFCONFIG, "bridgeN", "addm", tap1],
                     [IFCONFIG, tap1, "up"], [IFCONFIG, "bridgeN", "up"]]


# What a release or host lacks: a reason, never a wrong command line -------------------------
def test_release_without_vars_file_boots_the_single_image(firmware):
    lines = backend(firmware, host_caps=caps("13.2", version="13.0-RELEASE\n")) \
        .command_lines(refguest("uefi"))
    assert [line[0] for line in lines] == [BHYVECTL, BHYVE]  # no vars copy
    assert lines[-1][lines[-1].index("-U") - 1] == f"bootrom,{firmware['BHYVE_UEFI.fd']}"


def test_release_without_vars_file_and_no_single_image_says_why(firmware):
    firmware["BHYVE_UEFI.fd"].unlink()
    why = backend(firmware, host_caps=caps("13.2", version="13.0-RELEASE\n")).unsupported("uefi")
    assert "FreeBSD 13.0-RELEASE cannot keep UEFI variables" in why
    assert "needs FreeBSD 13.1 or later" in why and "BHYVE_UEFI.fd" in why


def test_host_without_nvme_refuses_the_nvme_scenario(firmware):
    host = backend(firmware, host_caps=caps("13.2", pci=PCI_HELP_NO_NVME))
    with pytest.raises(InfraError, match="FreeBSD 13.2-RELEASE-p11 has no nvme emulation"):
        host.command_lines(refguest("uefi", "nvme"))
    assert host.command_lines(refguest("uefi", "virtio-blk"))  # the rest still works


def test_virtio_blk_serial_needs_the_config_option_parser(firmware):
    old = BhyveCaps.for_release((12, 2))
    with pytest.raises(InfraError, match=r"no ser= for virtio-blk .*came with FreeBSD 13\.1"):
        backend(firmware, host_caps=old).command_lines(refguest("uefi", "virtio-blk"))


def test_csm_needs_a_pinned_firmware_file(firmware, tmp_path):
    with_csm = backend(firmware)
    assert with_csm.unsupported("csm") is None
    firmware["BHYVE_UEFI_CSM.fd"].unlink()
    why = with_csm.unsupported("csm")
    assert "BHYVE_UEFI_CSM.fd" in why and "no package since April 2024" in why
    planning = BhyveBackend(programs=Programs(bhyve=str(tmp_path / "no-bhyve")))
    assert "not configured" in planning.unsupported("csm")


@pytest.mark.parametrize("disk, message", [
    (Disk(Path("/w/a.raw"), bus="nvme", sector_size=1024), "sectsz must be one of"),
    (Disk(Path("/w/a.raw"), serial="S" * 21), "at most 20 characters"),
    (Disk(Path("/w/a.qcow2"), format="qcow2"), "raw images only"),
    (Disk(Path("/w/a,b.raw")), "cannot hold one"),
])
def test_disks_bhyve_cannot_express_are_refused(firmware, disk, message):
    spec = refguest()
    spec = VmSpec(**{**spec.__dict__, "disks": spec.disks + (disk,)})
    with pytest.raises(InfraError, match=message):
        backend(firmware).command_lines(spec)


def test_only_the_user_network_maps_to_a_tap(firmware):
    spec = VmSpec(**{**refguest().__dict__, "nics": (Nic(network="socket"),)})
    with pytest.raises(InfraError, match="network 'socket' has no bhyve mapping"):
        backend(firmware).command_lines(spec)


def test_bhyveload_is_unsupported_without_the_program(firmware, tmp_path):
    host = backend(firmware, programs=Programs(bhyveload=str(tmp_path / "missing")))
    assert "not found" in host.unsupported("bhyveload")
    assert host.unsupported("bios") == "the bhyve backend has no bios firmware"


# Release awareness --------------------------------------------------------------------------------
@pytest.mark.parametrize("release, want", [
    ("13.2", dict(release=(13, 2), acpi_flag=True, destroy_flag=True, bootrom_vars=True)),
    ("14.1", dict(release=(14, 1), acpi_flag=True, destroy_flag=True, bootrom_vars=True)),
    ("15.0", dict(release=(15, 0), acpi_flag=False, destroy_flag=True, bootrom_vars=True)),
])
def test_probe_reads_each_release(release, want):
    calls = []
    got = BhyveCaps.probe(canned_runner(SAMPLES[release], calls), BHYVE, "freebsd-version",
                          "uname")
    assert {k: getattr(got, k) for k in want} == want
    assert {"hostbridge", "lpc", "nvme", "virtio-blk", "virtio-net"} <= got.emulations
    assert {"bootrom", "com1", "com2"} <= got.lpc_devices and got.config_options
    assert calls == [["freebsd-version", "-u"], [BHYVE, "-s", "help"], [BHYVE, "-l", "help"],
                     [BHYVE, "-h"], ["bhyvectl", "--help"]]
    assert not got.snapshot  # GENERIC's bhyve and bhyvectl: no BHYVE_SNAPSHOT


def test_probe_falls_back_to_uname_and_to_release_rules():
    calls = []
    got = BhyveCaps.probe(canned_runner(dict(SAMPLES["14.1"], usage="", version="12.2-RELEASE"),
                                        calls, freebsd_version_fails=True),
                          BHYVE, "freebsd-version", "uname")
    assert ["uname", "-r"] in calls and got.release == (12, 2)
    # no usage text: -A assumed before 15.0, -D and -o not before 13.0 / 13.1
    assert (got.acpi_flag, got.destroy_flag, got.config_options, got.bootrom_vars) == \
        (True, False, False, False)


def test_probe_refuses_a_bhyve_that_lists_nothing():
    broken = dict(SAMPLES["14.1"], pci="")
    with pytest.raises(InfraError, match="cannot list bhyve's PCI emulations"):
        BhyveCaps.probe(canned_runner(broken), BHYVE, "freebsd-version", "uname")


@pytest.mark.parametrize("text, release", [("14.1-RELEASE-p6", (14, 1)), ("15.0-CURRENT", (15, 0)),
                                           ("13.2-STABLE", (13, 2)), ("11.3-RELEASE-p14", (11, 3))])
def test_parse_release(text, release):
    assert parse_release(text) == release


# Planning on a machine without bhyve, and the registry -------------------------------------------
def test_plan_without_bhyve_assumes_a_release_and_cannot_start(tmp_path):
    planning = get_backend("bhyve", planning=True,
                           programs=Programs(bhyve=str(tmp_path / "no-bhyve")))
    assert "command lines assume FreeBSD 14.1's bhyve" in planning.describe()
    lines = planning.command_lines(refguest("uefi"))
    assert lines[-1][lines[-1].index("-U") - 1] == (
        "bootrom,/usr/local/share/edk2-bhyve/BHYVE_UEFI_CODE.fd,/w/uefi-vars.fd")
    with pytest.raises(InfraError, match="cannot start bhyve VMs here"):
        planning.start(refguest("uefi"))


def test_a_run_without_bhyve_skips_every_case_with_the_reason(tmp_path):
    running = get_backend("bhyve", programs=Programs(bhyve=str(tmp_path / "no-bhyve")))
    for firmware in ("uefi", "bhyveload"):
        assert running.unsupported(firmware) == \
            f"{tmp_path / 'no-bhyve'} not found: bhyve runs on FreeBSD hosts"


def test_cpu_topology_and_the_vcpu_limit_follow_each_release(firmware):
    """-c cpus=,sockets=,cores=,threads= came with 12.0 (D9930, in head from April 2018);
    at most 16 vCPUs (VM_MAXCPU) before 14.0, then the host's hw.vmm.maxcpu. Older releases
    take no topology: refused with the reason."""
    spec = replace(refguest(firmware), cpus=8, topology=(1, 4, 2))
    bhyve = backend(firmware, "13.2").command_lines(spec)[-1]
    assert bhyve[bhyve.index("-c") + 1] == "cpus=8,sockets=1,cores=4,threads=2"
    thirteen = backend(firmware, "13.2")
    assert thirteen.max_vcpus() == (16, "VM_MAXCPU of bhyve on FreeBSD 13.2-RELEASE-p11")
    assert thirteen.vcpu_problem(17, None) == (
        "17 vCPUs is above the maximum of 16 (VM_MAXCPU of bhyve on FreeBSD 13.2-RELEASE-p11)")
    twelve = backend(firmware, host_caps=BhyveCaps.for_release((12, 0)))
    assert twelve.vcpu_problem(4, (2, 2, 1)) is None
    assert twelve.command_lines(replace(spec, cpus=4, topology=(2, 2, 1)))[-1][2] == \
        "cpus=4,sockets=2,cores=2,threads=1"
    eleven = backend(firmware, host_caps=BhyveCaps.for_release((11, 4)))
    assert eleven.vcpu_problem(4, (2, 2, 1)) == (
        "bhyve on FreeBSD 11.4 takes no CPU topology (-c sockets=,cores=,threads= came with "
        "FreeBSD 12.0)")
    assert eleven.vcpu_problem(4, None) is None  # a plain count works everywhere
    assert "hw.vmm.maxcpu" in backend(firmware, "14.1").max_vcpus()[1]


def test_the_machine_needs_a_release_cannot_meet_are_named(firmware):
    assert backend(firmware, "14.1").lacks("vars-file", "uefi") is None
    twelve = backend(firmware, host_caps=BhyveCaps.for_release((12, 4)))
    assert twelve.lacks("vars-file", "uefi") == twelve.caps.vars_reason()
    assert "13.1" in twelve.caps.vars_reason()
    assert backend(firmware, "14.1").lacks("save-restore", "uefi") == (
        "bhyve on FreeBSD 14.1-RELEASE-p6 was built without snapshot support (BHYVE_SNAPSHOT: "
        "bhyve's usage explains no -r; bhyvectl's usage lists no --suspend)")


def test_save_restore_needs_a_snapshot_build_and_is_planned_as_suspend_then_r(firmware):
    """bhyve(8)'s -r and bhyvectl's --suspend exist only in BHYVE_SNAPSHOT builds, whose usage
    explains ``-r``; GENERIC's does not, and the scenario is skipped saying so."""
    assert "without snapshot support" in backend(firmware, "14.1").lacks("save-restore", "uefi")
    snap = backend(firmware, host_caps=caps("14.1", **SNAPSHOT_BUILD))
    assert snap.caps.snapshot and snap.lacks("save-restore", "uefi") is None
    # both halves are needed: a snapshot bhyve with a GENERIC bhyvectl cannot be suspended
    half = backend(firmware, host_caps=caps("14.1", usage=SNAPSHOT_BUILD["usage"]))
    assert half.lacks("save-restore", "uefi") == (
        "bhyve on FreeBSD 14.1-RELEASE-p6 was built without snapshot support (BHYVE_SNAPSHOT: "
        "bhyvectl's usage lists no --suspend)")
    spec = refguest("uefi")
    state = spec.workdir / "saved.state"
    suspend, destroy, restore = snap.save_restore_lines(spec, state)
    assert suspend == [BHYVECTL, f"--vm={spec.name}", f"--suspend={state}"]
    assert destroy == [BHYVECTL, f"--vm={spec.name}", "--destroy"]
    bhyve = snap.command_lines(spec)[-1]
    assert restore == bhyve[:-1] + ["-r", str(state), spec.name]  # same devices, then -r
