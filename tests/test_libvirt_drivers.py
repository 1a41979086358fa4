"""What LibvirtBackend asks of each libvirt driver, checked against a test double of the driver.

RecordingLibvirtConnection stands in for a connection to libvirtd: it answers with saved
capabilities, records what virDomainCreateXML was given, and rejects the flags the real driver
rejects (virCheckFlags in qemuDomainCreateXML and bhyveDomainCreateXML), with libvirt's own
message. No libvirtd and no bhyve needed; the libvirt binding is (for its constants).
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import firmware as fw
from harness.errors import InfraError, Unsupported
from harness.vmspec import Disk, SerialPort, VmSpec
from tests.test_libvirt_xml import BHYVE_CAPS, HOST_CAPS, QEMU_CAPS

libvirt = pytest.importorskip("libvirt")

from harness.backends.libvirt import domain_xml as lx  # noqa: E402
from harness.backends.libvirt.backend import LibvirtBackend  # noqa: E402
from harness.backends.libvirt.console import StreamBridge  # noqa: E402

# virCheckFlags(...) of each driver's virDomainCreateXML (src/qemu/qemu_driver.c
# qemuDomainCreateXML; src/bhyve/bhyve_driver.c bhyveDomainCreateXML).
ACCEPTED_FLAGS = {
    "qemu": ("qemuDomainCreateXML", libvirt.VIR_DOMAIN_START_PAUSED
             | libvirt.VIR_DOMAIN_START_AUTODESTROY | libvirt.VIR_DOMAIN_START_VALIDATE),
    "bhyve": ("bhyveDomainCreateXML", libvirt.VIR_DOMAIN_START_AUTODESTROY
              | libvirt.VIR_DOMAIN_START_VALIDATE),
}
QEMU_CAPS_WITH_NVME = QEMU_CAPS.replace("<value>sata</value>",
                                        "<value>sata</value><value>nvme</value>")
APPARMOR_HOST_CAPS = HOST_CAPS.replace("<model>none</model>", "<model>apparmor</model>")


class RejectedByDriver(libvirt.libvirtError):
    """The libvirtError a driver raises, carrying its message without a libvirt call."""

    def __init__(self, message: str):
        Exception.__init__(self, message)
        self.err = None
        self.message = message

    def get_error_message(self):
        return self.message

    def get_error_code(self):
        return libvirt.VIR_ERR_INVALID_ARG


class RecordingStream:
    """A console stream that is at its end at once."""

    def recv(self, _size):
        return b""

    def send(self, data):
        return len(data)

    def finish(self):
        pass

    def abort(self):
        pass


class RecordingDomain:
    """The domain createXML returned: its XML (as libvirt would echo it) and what was asked."""

    def __init__(self, xml: str):
        self.xml = xml
        self.calls: list[tuple] = []
        self.active = True

    def XMLDesc(self, _flags=0):
        return self.xml

    def openConsole(self, dev, stream, flags):
        self.calls.append(("openConsole", dev))

    def resume(self):
        self.calls.append(("resume",))

    def state(self):
        return libvirt.VIR_DOMAIN_RUNNING, 0

    def isActive(self):
        return self.active

    def destroy(self):
        self.calls.append(("destroy",))
        self.active = False

    def isPersistent(self):
        return False


class RecordingLibvirtConnection:
    """A test double of a connection to one libvirt driver ('qemu' or 'bhyve')."""

    def __init__(self, driver: str, domain_caps: str, host_caps: str = HOST_CAPS,
                 lib_version: int = 11_009_000):
        self.driver = driver
        self.domain_caps, self.host_caps = domain_caps, host_caps
        self.lib_version = lib_version
        self.created: list[tuple[str, int]] = []
        self.domains: list[RecordingDomain] = []

    def getLibVersion(self):
        return self.lib_version

    def getVersion(self):
        return 7_002_000

    def getType(self):
        return self.driver.upper()

    def getDomainCapabilities(self, *_args):
        return self.domain_caps

    def getCapabilities(self):
        return self.host_caps

    def createXML(self, xml: str, flags: int):
        function, accepted = ACCEPTED_FLAGS[self.driver]
        if flags & ~accepted:
            raise RejectedByDriver(f"unsupported flags (0x{flags & ~accepted:x}) in function "
                                   f"{function}")
        self.created.append((xml, flags))
        self.domains.append(RecordingDomain(xml))
        return self.domains[-1]

    def domainEventRegisterAny(self, *_args):
        return 1

    def domainEventDeregisterAny(self, _callback):
        pass

    def newStream(self, _flags):
        return RecordingStream()


@pytest.fixture(autouse=True)
def no_qemu_monitor_events(monkeypatch):
    """libvirt_qemu's monitor events need a real connection; the double has none."""
    libvirt_qemu = pytest.importorskip("libvirt_qemu")
    monkeypatch.setattr(libvirt_qemu, "qemuMonitorEventRegister", lambda *_a: 7)
    monkeypatch.setattr(libvirt_qemu, "qemuMonitorEventDeregister", lambda *_a: 0)


def vm(tmp_path: Path, firmware: str, disks=(), serials=(SerialPort("com1"),)) -> VmSpec:
    image = tmp_path / "ref.raw"
    image.write_bytes(b"\0" * 4096)
    return VmSpec(name="refvm-0123abcd-1", memory_mib=256, cpus=1, firmware=firmware,
                  uuid="6f9619ff-8b86-d011-b42d-00c04fc964ff", utc_clock=True,
                  workdir=tmp_path / "w", logdir=tmp_path / "logs",
                  disks=(Disk(image, readonly=True, boot=True), *disks),
                  serials=tuple(serials))


def qemu_backend(tmp_path: Path, conn) -> LibvirtBackend:
    seabios = tmp_path / "bios-256k.bin"
    seabios.write_bytes(b"bios")
    return LibvirtBackend("qemu:///system", domain_type="qemu", stage_root=tmp_path / "stage",
                          seabios=fw.FirmwareCandidates("SeaBIOS", "test", (seabios,)),
                          conn=conn)


def bhyve_backend(tmp_path: Path, conn, uri: str = "bhyve:///system") -> LibvirtBackend:
    return LibvirtBackend(uri, stage_root=tmp_path / "stage", conn=conn)


# Start flags ----------------------------------------------------------------------------------

def test_the_double_rejects_what_each_driver_rejects():
    bhyve = RecordingLibvirtConnection("bhyve", BHYVE_CAPS)
    with pytest.raises(libvirt.libvirtError, match=r"unsupported flags \(0x1\) in function "
                                                   r"bhyveDomainCreateXML"):
        bhyve.createXML("<domain/>", libvirt.VIR_DOMAIN_START_PAUSED)
    qemu = RecordingLibvirtConnection("qemu", QEMU_CAPS)
    qemu.createXML("<domain/>", libvirt.VIR_DOMAIN_START_PAUSED)
    assert bhyve.created == [] and len(qemu.created) == 1


def test_qemu_driver_starts_paused_and_auto_destroyed_then_resumes(tmp_path):
    conn = RecordingLibvirtConnection("qemu", QEMU_CAPS)
    machine = qemu_backend(tmp_path, conn).start(vm(tmp_path, "csm"))
    try:
        (_xml, flags), = conn.created
        assert flags == libvirt.VIR_DOMAIN_START_PAUSED | libvirt.VIR_DOMAIN_START_AUTODESTROY
        machine.resume()
        assert ("resume",) in conn.domains[0].calls
    finally:
        machine.destroy()


def test_bhyve_driver_starts_auto_destroyed_not_paused_and_resume_is_a_no_op(tmp_path):
    conn = RecordingLibvirtConnection("bhyve", BHYVE_CAPS)
    backend = bhyve_backend(tmp_path, conn)
    spec = vm(tmp_path, "bhyveload")
    machine = backend.start(spec)  # PAUSED would be RejectedByDriver -> InfraError
    try:
        (_xml, flags), = conn.created
        assert flags == libvirt.VIR_DOMAIN_START_AUTODESTROY
        machine.resume()
        assert conn.domains[0].calls == []  # the bhyve driver has no resume to call
        assert machine.poll() is None
    finally:
        machine.destroy()
    assert backend.command_lines(spec) == [
        ["virsh", "-c", "bhyve:///system", "create", str(spec.logdir / "domain.xml")]]


def test_a_driver_refusing_the_flags_is_an_infra_error_quoting_it(tmp_path, monkeypatch):
    conn = RecordingLibvirtConnection("bhyve", BHYVE_CAPS)
    backend = bhyve_backend(tmp_path, conn)
    monkeypatch.setattr(backend, "start_flags", lambda: libvirt.VIR_DOMAIN_START_PAUSED)
    with pytest.raises(InfraError, match=r"refused to start refvm-0123abcd-1: unsupported "
                                         r"flags \(0x1\) in function bhyveDomainCreateXML"):
        backend.start(vm(tmp_path, "bhyveload"))
    assert not (tmp_path / "stage" / "refvm-0123abcd-1").exists()


# NVMe: the bus where libvirt has it, QEMU's own device where it has not ----------------------

NVME_DISKS = (Disk(Path("/w/ns512.raw"), bus="nvme", serial="RVNVME-512"),
              Disk(Path("/w/ns4k.raw"), bus="nvme", serial="RVNVME-4K", sector_size=4096))


def test_qemu_driver_without_the_nvme_bus_falls_back_to_qemu_args(tmp_path):
    backend = qemu_backend(tmp_path, RecordingLibvirtConnection("qemu", QEMU_CAPS))
    domain = ET.fromstring(backend.domain_xml(vm(tmp_path, "csm", NVME_DISKS)))
    assert domain.find("devices/disk/target[@bus='nvme']") is None
    assert lx.qemu_args(domain)[3] == '{"driver":"nvme","drive":"disk1","serial":"RVNVME-512"}'
    assert "NVMe disks as QEMU's -device nvme" in backend.describe()


def test_qemu_driver_with_the_nvme_bus_uses_it(tmp_path):
    backend = qemu_backend(tmp_path, RecordingLibvirtConnection("qemu", QEMU_CAPS_WITH_NVME))
    domain = ET.fromstring(backend.domain_xml(vm(tmp_path, "csm", NVME_DISKS)))
    assert [t.get("dev") for t in domain.findall("devices/disk/target[@bus='nvme']")] == \
        ["nvme0n1", "nvme1n1"]
    assert lx.qemu_args(domain) == [] and "NVMe" not in backend.describe()


def test_qemu_args_fallback_is_refused_where_apparmor_confines_qemu(tmp_path):
    conn = RecordingLibvirtConnection("qemu", QEMU_CAPS, APPARMOR_HOST_CAPS)
    spec = vm(tmp_path, "csm", NVME_DISKS)
    with pytest.raises(Unsupported, match="this host confines QEMU with AppArmor"):
        qemu_backend(tmp_path, conn).plan_details(spec)
    conn = RecordingLibvirtConnection("qemu", QEMU_CAPS, APPARMOR_HOST_CAPS)
    scratch = tmp_path / "ns512.raw"
    scratch.write_bytes(b"\0" * 4096)
    with pytest.raises(Unsupported, match="this host confines QEMU with AppArmor"):
        qemu_backend(tmp_path, conn).start(vm(tmp_path, "csm", (Disk(scratch, bus="nvme"),)))
    assert conn.created == [] and not (tmp_path / "stage" / spec.name).exists()
    assert scratch.stat().st_uid == os.getuid()


def test_bhyve_driver_keeps_the_nvme_bus_gated_on_its_version(tmp_path):
    nvme = (Disk(Path("/w/a.raw"), bus="nvme"),)
    old = RecordingLibvirtConnection("bhyve", BHYVE_CAPS, lib_version=11_008_000)
    with pytest.raises(Unsupported, match=r"<target bus='nvme'> \(NVMe disk\) needs libvirt "
                                          r"11.9.0 or later"):
        bhyve_backend(tmp_path, old).domain_xml(vm(tmp_path, "bhyveload", nvme))
    new = RecordingLibvirtConnection("bhyve", BHYVE_CAPS, lib_version=11_009_000)
    domain = ET.fromstring(bhyve_backend(tmp_path, new).domain_xml(vm(tmp_path, "bhyveload",
                                                                      nvme)))
    assert domain.find("devices/disk/target[@bus='nvme']") is not None
    assert lx.qemu_args(domain) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="chowning to QEMU's user needs root")
def test_writable_nvme_file_is_lent_to_qemus_user_for_the_run(tmp_path):
    scratch = tmp_path / "w" / "ns512.raw"
    scratch.parent.mkdir()
    scratch.write_bytes(b"\0" * 4096)
    conn = RecordingLibvirtConnection("qemu", QEMU_CAPS)
    machine = qemu_backend(tmp_path, conn).start(
        vm(tmp_path, "csm", (Disk(scratch, bus="nvme", serial="RVNVME-512"),)))
    try:
        (xml, _flags), = conn.created
        path = lx.qemu_args(ET.fromstring(xml))[1].split(",")[0][len("file="):]
        assert (os.stat(path).st_uid, os.stat(path).st_gid) == (64055, 64055)  # HOST_CAPS
    finally:
        machine.destroy()
    assert (scratch.stat().st_uid, scratch.stat().st_gid) == (os.getuid(), os.getgid())


# bhyve consoles -------------------------------------------------------------------------------

def test_bhyve_data_port_is_its_nmdm_b_side_opened_directly(tmp_path):
    """bhyveDomainOpenConsole always opens serials[0]: COM2 must not go through it."""
    conn = RecordingLibvirtConnection("bhyve", BHYVE_CAPS)
    spec = vm(tmp_path, "bhyveload", serials=(SerialPort("com1"), SerialPort("com2", "data")))
    machine = bhyve_backend(tmp_path, conn).start(spec)
    controller, device = os.openpty()  # a pty pair stands in for nmdm's A and B sides
    try:
        dom = conn.domains[0]
        com2_b = f"/dev/nmdm{lx.nmdm_unit(spec.name) + 1}B"
        assert f'slave="{com2_b}"' in dom.xml
        dom.xml = dom.xml.replace(com2_b, os.ttyname(device))
        stream = machine.open_console("com2")
        os.write(controller, b"from the guest\n")
        assert stream.read(15) == b"from the guest\n"  # raw: nothing cooked or echoed
        stream.write(b"to the guest")
        assert os.read(controller, 64) == b"to the guest"
        assert dom.calls == []  # virDomainOpenConsole never asked for com2
        machine.open_console("com1")
        assert dom.calls == [("openConsole", "serial0")]
    finally:
        machine.destroy()
        os.close(controller)
        os.close(device)


def test_remote_bhyve_data_port_is_unsupported_before_the_domain_exists(tmp_path):
    conn = RecordingLibvirtConnection("bhyve", BHYVE_CAPS)
    backend = bhyve_backend(tmp_path, conn, "bhyve+ssh://freebsd.example/system")
    spec = vm(tmp_path, "bhyveload", serials=(SerialPort("com1"), SerialPort("com2", "data")))
    with pytest.raises(Unsupported) as err:
        backend.plan_details(spec)
    assert "com2: libvirt's bhyve driver opens only the first serial port through " \
           "virDomainOpenConsole (bhyveDomainOpenConsole ignores the device name)" \
        in str(err.value)
    with pytest.raises(Unsupported):
        backend.start(spec)
    assert conn.created == []
    backend.plan_details(vm(tmp_path, "bhyveload"))  # COM1 alone is reachable remotely


def test_a_host_that_cannot_list_its_domains_is_an_infra_error():
    """`refvm clean --hosts` reports such a host and goes on to the next one, which it can
    only do for an InfraError (anything else is a harness bug)."""
    from harness.backends.libvirt.reap import reap_domains

    class DroppedConnection:  # test double: the connection breaks at the first request
        def listAllDomains(self, _flags):
            raise RejectedByDriver("End of file while reading data: Input/output error")

    with pytest.raises(InfraError, match="cannot list the domains: End of file while reading"):
        reap_domains(DroppedConnection(), stage_root=None)


def test_an_interrupt_while_a_console_closes_still_removes_domain_and_staged_files(tmp_path):
    """A second Ctrl-C or SIGTERM during teardown lands where it waits (a console thread's
    join): destroy() runs once, so its other steps must still run, and the interrupt comes
    out at the end. (The image under 0700 tmp_path is staged, so there is a stage to remove.)"""
    conn = RecordingLibvirtConnection("qemu", QEMU_CAPS)
    machine = qemu_backend(tmp_path, conn).start(vm(tmp_path, "csm"))
    stage = tmp_path / "stage" / "refvm-0123abcd-1"
    assert stage.is_dir()
    machine.open_console("com1")
    bridge, = machine._bridges
    closed = []

    def close_then_interrupted():
        StreamBridge.close(bridge)
        closed.append(bridge)
        raise KeyboardInterrupt("second signal")
    bridge.close = close_then_interrupted
    with pytest.raises(KeyboardInterrupt):
        machine.destroy()
    machine.destroy()  # a no-op: the first call did everything
    assert closed == [bridge]
    assert conn.domains[0].calls.count(("destroy",)) == 1 and not conn.domains[0].active
    assert not stage.exists()


def test_a_host_that_cannot_be_reached_is_tried_once_per_run(monkeypatch):
    from harness.backends.libvirt import backend as libvirt_backend

    attempts = []

    def refused(uri):
        attempts.append(uri)
        raise InfraError(f"cannot connect to libvirt at {uri}: Connection refused")
    monkeypatch.setattr(libvirt_backend, "connect", refused)
    backend = LibvirtBackend("qemu+tcp://build9/system")
    for _case in range(3):
        with pytest.raises(InfraError, match="cannot connect to libvirt at qemu\\+tcp://build9"):
            backend.conn
    assert attempts == ["qemu+tcp://build9/system"]
    with pytest.raises(InfraError, match=r"Connection refused \(not tried again in this run\)"):
        backend.conn
