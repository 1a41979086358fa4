"""End to end through libvirtd: the reference guest boots under qemu:///system (TCG) and over
libvirt's remote protocol (qemu+tcp://127.0.0.1/system, set up by .ci/libvirt-setup), driven
by harness.runner.Run exactly as the plugin drives it, and leaves no domain behind.

Skipped, with the reason, when the libvirt binding is missing or libvirtd does not answer.
"""
from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from harness.catalog import load_guests, load_scenarios
from harness.errors import InfraError
from harness.images.cache import ImageCache
from harness.matrix import Case
from harness.paths import cache_dir
from harness.runner import Run

LOCAL = "qemu:///system"
REMOTE = "qemu+tcp://127.0.0.1/system"

pytestmark = [pytest.mark.vm]


def _reachable(uri: str) -> str | None:
    """None if ``uri`` answers, else why not (the skip reason)."""
    try:
        import libvirt
    except ImportError:
        return "libvirt-python is not installed (pip install libvirt-python)"
    from harness.backends.libvirt_connection import connect
    try:
        connect(uri).close()
    except InfraError as err:
        return str(err)  # says which URI, why, and to run .ci/libvirt-setup
    del libvirt
    return None


def need(uri: str) -> None:
    reason = _reachable(uri)
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def refguest():
    need(LOCAL)
    guest, = load_guests(["refguest"])
    return guest, ImageCache(cache_dir(), log=lambda _t: None).prepare(guest)


def backend(uri: str = LOCAL):
    from harness.backends.libvirt_backend import LibvirtBackend
    return LibvirtBackend(uri, domain_type="qemu")  # TCG: /dev/kvm hangs guests here


def scenario(name: str):
    found, = [s for s in load_scenarios() if s.name == name]
    return found


def refvm_domains(uri: str = LOCAL) -> list[str]:
    out = subprocess.run(["virsh", "-c", uri, "list", "--all", "--name"], capture_output=True,
                         text=True, check=True).stdout
    return [line for line in out.split() if line.startswith("refvm-")]


def run_boot(tmp_path, refguest, firmware: str, uri: str = LOCAL,
             name: str = "boot") -> tuple[dict, Run]:
    """Boot the reference guest through libvirt and run one scenario's steps on it."""
    guest, image = refguest
    run = Run(backend(uri), tmp_path / "artifacts")
    case = Case(scenario(name), guest, firmware, "libvirt")
    recorded: dict = {}
    try:
        vm = run.boot(case, image)
        run.run_steps(case, vm, recorded.__setitem__)
    finally:
        run.close()
    return recorded, run


def assert_nothing_left(run: Run, uri: str = LOCAL) -> None:
    assert refvm_domains(uri) == [], "a refvm domain outlived its run"
    from harness.backends.libvirt_staging import STAGE_ROOT
    assert not list(STAGE_ROOT.glob(f"refvm-{run.run_id}-*")), "staged files outlived the run"
    assert not run.workroot.exists()


@pytest.mark.parametrize("firmware", ["uefi", "csm"])
def test_boot_scenario_passes_through_qemu_system(tmp_path, refguest, firmware):
    started = time.monotonic()
    recorded, run = run_boot(tmp_path, refguest, firmware)
    assert recorded["exit"] == "poweroff"
    assert recorded["guest_firmware"] == ("UEFI" if firmware == "uefi" else "BIOS")
    case_dir, = (tmp_path / "artifacts").iterdir()
    xml = (case_dir / "domain.xml").read_text()
    assert "<on_reboot>destroy</on_reboot>" in xml and "refguest login:" in \
        (case_dir / "console.log").read_text()
    assert_nothing_left(run)
    print(f"libvirt {firmware} boot scenario: {time.monotonic() - started:.1f}s")


@pytest.mark.parametrize("name", ["uart", "virtio-blk", "virtio-net"])
def test_device_scenarios_pass_through_qemu_system(tmp_path, refguest, name):
    """COM2 as a raw data channel over a second libvirt console stream; writable scratch disks
    chowned to libvirt-qemu and back by libvirt's DAC driver; user-mode virtio-net."""
    recorded, run = run_boot(tmp_path, refguest, "uefi", name=name)
    assert recorded["exit"] == "poweroff"
    assert_nothing_left(run)


def test_boot_through_the_remote_protocol(tmp_path, refguest):
    need(REMOTE)
    started = time.monotonic()
    recorded, run = run_boot(tmp_path, refguest, "uefi", REMOTE)
    assert recorded["exit"] == "poweroff" and recorded["guest_firmware"] == "UEFI"
    assert_nothing_left(run, REMOTE)
    print(f"remote ({REMOTE}) uefi boot scenario: {time.monotonic() - started:.1f}s")


def test_destroy_mid_boot_leaves_no_domain(tmp_path, refguest):
    guest, image = refguest
    run = Run(backend(), tmp_path / "artifacts")
    case = Case(scenario("boot"), guest, "csm", "libvirt")
    vm = run.boot(case, image)
    vm.console.expect([r"SeaBIOS|Booting|Linux version"], 120, "early boot output")
    assert vm.spec.name in refvm_domains()
    machine = vm.machine
    run.close()  # what the plugin does on SIGTERM / session end
    info = machine.poll()
    assert info is not None and info.kind == "killed", info
    assert_nothing_left(run)


def test_guest_reboot_is_reported_as_reboot(tmp_path, refguest):
    """<on_reboot>destroy</on_reboot>: the domain ends, and the harness says reboot, not
    poweroff (libvirt's own lifecycle events cannot tell them apart; QEMU's SHUTDOWN can)."""
    guest, image = refguest
    run = Run(backend(), tmp_path / "artifacts")
    case = Case(scenario("boot"), guest, "csm", "libvirt")
    try:
        vm = run.boot(case, image)
        c = guest.console
        vm.console.login(c.user, c.password, c.login_prompt, c.shell_prompt,
                         c.login_incorrect, c.boot_timeout)
        vm.console.send_line("reboot -f")
        info = vm.machine.wait_exit(60)
    finally:
        run.close()
    assert info is not None and info.kind == "reboot", info
    assert "guest-reset" in str(info)
    assert_nothing_left(run)


def test_host_without_nvme_bus_is_an_infra_error_naming_it(tmp_path, refguest):
    """Checked against the connected libvirt's domain capabilities before anything starts."""
    from xml.etree import ElementTree as ET

    b = backend()
    caps = ET.fromstring(b.domain_capabilities())
    if "nvme" in [v.text for v in caps.findall("devices/disk/enum[@name='bus']/value")]:
        pytest.skip("this libvirt supports NVMe disks")
    guest, image = refguest
    run = Run(b, tmp_path / "artifacts")
    case = Case(scenario("nvme"), guest, "csm", "libvirt")
    try:
        with pytest.raises(InfraError, match=r"<target dev='nvme0n1' bus='nvme'>: disk bus "
                                             r"'nvme' is not supported"):
            run.boot(case, image)
    finally:
        run.close()
    assert refvm_domains() == []


def test_reap_domains_removes_dead_runs_only():
    need(LOCAL)
    import libvirt

    from harness.backends.libvirt_connection import connect
    from harness.backends.libvirt_reap import reap_domains

    conn = connect(LOCAL)
    xml = ("<domain type='qemu'><name>{}</name><uuid>{}</uuid><memory unit='MiB'>32</memory>"
           "<os><type arch='x86_64' machine='q35'>hvm</type></os><devices>"
           "<controller type='usb' model='none'/><memballoon model='none'/></devices></domain>")
    dead, live = "refvm-deadbeef-1", "refvm-0badf00d-1"
    doms = [conn.createXML(xml.format(n, uuid.uuid4()), libvirt.VIR_DOMAIN_START_PAUSED)
            for n in (dead, live)]
    try:
        reaped = reap_domains(conn, {"0badf00d"}, stage_root=None)
        assert reaped == [dead]
        assert refvm_domains() == [live]
    finally:
        for dom in doms:
            try:
                dom.destroy()
            except libvirt.libvirtError:
                pass
        conn.close()
    assert refvm_domains() == []
