"""What the libvirt backend gives the machine scenarios (vcpus, queue-depth, restart, reboot,
save-restore) in its domain XML and its declared needs, per driver, against saved domain
capabilities and the connection test double (no libvirtd). The real boots are in
test_libvirt_e2e.py (test_machine_scenarios_pass_through_qemu_system)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from harness.backends.libvirt import domain_xml as lx
from harness.errors import Unsupported
from harness.vmspec import Disk
from tests.test_libvirt_xml import BHYVE, BHYVE_CAPS, BHYVE_UEFI, OVMF, QEMU_CAPS, spec

pytest.importorskip("libvirt")

from harness.backends.libvirt.backend import LibvirtBackend  # noqa: E402
from tests.test_libvirt_drivers import RecordingLibvirtConnection  # noqa: E402

# libvirt 9.0's q35 TCG capabilities list these (`virsh domcapabilities --virttype qemu`).
QEMU_CAPS_WITH_MODELS = QEMU_CAPS.replace(
    '<mode name="custom" supported="yes"/>',
    '<mode name="custom" supported="yes">'
    '<model usable="yes" vendor="unknown">qemu64</model>'
    '<model usable="no" vendor="Intel">Skylake-Client</model>'
    '<model usable="yes" vendor="Intel">Westmere</model>'
    '<model usable="yes" vendor="Intel">Nehalem</model></mode>').replace(
    "<arch>x86_64</arch>", "<arch>x86_64</arch>\n  <vcpu max='288'/>")


def shaped(topology, cpus: int):
    return replace(spec(), cpus=cpus, topology=topology)


def test_qemu_topology_without_threads_keeps_the_maximum_cpu():
    d = lx.build_domain(shaped((2, 2, 1), 4), "qemu", OVMF, lx.Options())
    assert d.findtext("vcpu") == "4"
    assert dict(d.find("cpu").attrib) == {"mode": "maximum"}
    assert dict(d.find("cpu/topology").attrib) == {"sockets": "2", "dies": "1", "cores": "2",
                                                   "threads": "1"}


def test_qemu_threads_under_tcg_take_a_named_intel_model():
    d = lx.build_domain(shaped((1, 4, 2), 8), "qemu", OVMF,
                        lx.Options(smt_model="Westmere"))
    assert dict(d.find("cpu").attrib) == {"mode": "custom", "match": "exact", "check": "none"}
    assert d.findtext("cpu/model") == "Westmere"
    assert d.find("cpu/topology").get("threads") == "2"
    with pytest.raises(Unsupported, match="AMD K8, which reports no SMT"):
        lx.build_domain(shaped((1, 4, 2), 8), "qemu", OVMF, lx.Options())
    # KVM: the host's CPU reports its threads itself
    kvm = lx.build_domain(shaped((1, 4, 2), 8), "qemu", OVMF,
                          lx.Options(domain_type="kvm", cpu_mode="host-passthrough"))
    assert kvm.find("cpu").get("mode") == "host-passthrough"


def test_a_cpu_model_the_host_cannot_run_is_refused_naming_the_usable_ones():
    d = lx.build_domain(shaped((1, 4, 2), 8), "qemu", OVMF,
                        lx.Options(smt_model="Skylake-Client"))
    with pytest.raises(Unsupported, match=r"<cpu><model>Skylake-Client</model>: not a CPU "
                                          r"model this host can run \(usable: qemu64, "
                                          r"Westmere, Nehalem\)"):
        lx.check_capabilities(d, QEMU_CAPS_WITH_MODELS, "libvirt 9.0.0 at qemu:///system")


def test_bhyve_topology_is_a_bare_topology_with_one_die():
    # bhyve_command.c: "-c cpus=%d,sockets=%d,cores=%d,threads=%d"; "Only 1 die per socket"
    d = lx.build_domain(shaped((1, 2, 2), 4), "bhyve", BHYVE_UEFI, BHYVE)
    assert dict(d.find("cpu").attrib) == {}
    assert dict(d.find("cpu/topology").attrib) == {"sockets": "1", "dies": "1", "cores": "2",
                                                   "threads": "2"}


def test_iops_limit_is_iotune_on_qemu_and_absent_on_bhyve():
    disks = (Disk(Path("/img/ref.raw"), readonly=True, boot=True),
             Disk(Path("/w/1/q.raw"), bus="virtio-blk", iops_limit=100),
             Disk(Path("/w/1/n.raw"), bus="nvme", iops_limit=100))
    d = lx.build_domain(spec(disks=disks), "qemu", OVMF, lx.Options())
    assert d.findtext("devices/disk[2]/iotune/total_iops_sec") == "100"
    assert d.find("devices/disk[1]/iotune") is None
    args = lx.qemu_args(lx.build_domain(spec(disks=disks), "qemu", OVMF,
                                        lx.Options(nvme_as_qemu_args=True)))
    assert args[1].endswith(",readonly=off,throttling.iops-total=100")
    # bhyve has no such limit and needs none: its guest is fast enough to fill the queue
    assert lx.build_domain(spec(disks=disks), "bhyve", BHYVE_UEFI, BHYVE).find(
        "devices/disk/iotune") is None


def test_reboot_scenarios_restart_the_domain_on_a_guest_reset():
    d = lx.build_domain(replace(spec(), survive_reboot=True), "qemu", OVMF, lx.Options())
    assert [d.findtext(e) for e in ("on_poweroff", "on_reboot", "on_crash")] == \
        ["destroy", "restart", "destroy"]


def test_max_vcpus_come_from_the_domain_capabilities_capped_at_the_apic_limit(tmp_path):
    conn = RecordingLibvirtConnection("qemu", QEMU_CAPS_WITH_MODELS, lib_version=9_000_000)
    backend = LibvirtBackend("qemu:///system", domain_type="qemu", conn=conn,
                             stage_root=tmp_path)
    limit, source = backend.max_vcpus()
    assert limit == 255
    assert source == ("libvirt 9.0.0 at qemu:///system: domain capabilities <vcpu max='288'/>,"
                      " 255 without an interrupt-remapping IOMMU")
    assert backend.vcpu_problem(256, None).startswith("256 vCPUs is above the maximum of 255")
    assert backend.smt_model() == "Westmere"
    assert backend.options().smt_model == "Westmere"


def test_each_driver_declares_what_it_can_do_and_says_why_not():
    qemu = LibvirtBackend("qemu:///system", conn=RecordingLibvirtConnection("qemu", QEMU_CAPS))
    assert all(qemu.lacks(need, "uefi") is None
               for need in ("restart", "reboot", "save-restore", "vars-file", "ssh"))
    remote = LibvirtBackend("qemu+ssh://root@build2/system",
                            conn=RecordingLibvirtConnection("qemu", QEMU_CAPS))
    assert remote.lacks("restart", "uefi") is None
    assert remote.lacks("ssh", "uefi") == (
        "the SSH forward of a user-network NIC listens on the loopback of the libvirt host of "
        "qemu+ssh://root@build2/system, which this host cannot reach")
    bhyve = LibvirtBackend("bhyve:///system",
                           conn=RecordingLibvirtConnection("bhyve", BHYVE_CAPS))
    assert bhyve.lacks("restart", "uefi") is None
    assert "bhyve_monitor.c" in bhyve.lacks("reboot", "uefi")
    assert bhyve.lacks("save-restore", "uefi") == \
        "libvirt's bhyve driver implements no virDomainSave/virDomainRestore"


def test_a_bhyve_host_in_a_pool_refuses_a_rebooting_vm_before_it_starts(tmp_path):
    """A pool asks the backend class, which cannot know a host's driver: the host refuses."""
    conn = RecordingLibvirtConnection("bhyve", BHYVE_CAPS)
    bhyve = LibvirtBackend("bhyve:///system", conn=conn, stage_root=tmp_path)
    with pytest.raises(Unsupported, match="bhyve_monitor.c"):
        bhyve.domain_xml(replace(spec(), survive_reboot=True), firmware=BHYVE_UEFI)
    with pytest.raises(Unsupported, match="no virDomainSave"):
        bhyve.restore(spec(), tmp_path / "saved.state")
    assert conn.created == []
