"""End to end through libvirtd: the reference guest boots under qemu:///system (TCG) and over
libvirt's remote protocol (qemu+tcp://127.0.0.1/system, set up by .ci/libvirt-setup), driven
by harness.runner.Run exactly as the plugin drives it, and leaves no domain behind: not even
when the harness is SIGKILLed (domains are started with auto-destroy). NVMe runs on libvirt 9.0,
whose domain capabilities have no nvme bus, as QEMU's own device through <qemu:commandline>.

Skipped, with the reason, when the libvirt binding is missing or libvirtd does not answer.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import contextlib
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.catalog import load_guests, load_scenarios
from harness.errors import GuestFailure, InfraError
from harness.images.cache import ImageCache
from harness.matrix import Case
from harness.paths import REPO_ROOT, cache_dir
from harness.backends.libvirt.origin import origin_of, this_machine
from harness.runner import Run
from tests.test_e2e_devices import flip_byte_before_verify

LOCAL = "qemu:///system"
REMOTE = "qemu+tcp://127.0.0.1/system"

pytestmark = [pytest.mark.vm]


def _reachable(uri: str) -> str | None:
    """None if ``uri`` answers, else why not (the skip reason)."""
    try:
        import libvirt
    except ImportError:
        return "libvirt-python is not installed (pip install libvirt-python)"
    from harness.backends.libvirt.connection import connect
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
    from harness.backends.libvirt.backend import LibvirtBackend
    return LibvirtBackend(uri, domain_type="qemu")  # TCG: /dev/kvm hangs guests here


def scenario(name: str):
    found, = [s for s in load_scenarios() if s.name == name]
    return found


def refvm_domains(uri: str = LOCAL) -> list[str]:
    out = subprocess.run(["virsh", "-c", uri, "list", "--all", "--name"], capture_output=True,
                         text=True, check=True).stdout
    return [line for line in out.split() if line.startswith("refvm-")]


def run_boot(tmp_path, refguest, firmware: str, uri: str = LOCAL, name: str = "boot",
             before_step=None) -> tuple[dict, Run]:
    """Boot the reference guest through libvirt and run one scenario's steps on it."""
    guest, image = refguest
    run = Run(backend(uri), tmp_path / "artifacts")
    case = Case(scenario(name), guest, firmware, "libvirt")
    recorded: dict = {}
    try:
        vm = run.boot(case, image)
        recorded["origin"] = origin_of(vm.machine.dom, vm.machine.libvirt)
        run.run_steps(case, vm, recorded.__setitem__, before_step)
    finally:
        run.close()
    return recorded, run


def assert_nothing_left(run: Run, uri: str = LOCAL) -> None:
    assert refvm_domains(uri) == [], "a refvm domain outlived its run"
    from harness.backends.libvirt.staging import STAGE_ROOT
    assert not list(STAGE_ROOT.glob(f"refvm-{run.run_id}-*")), "staged files outlived the run"
    assert not run.workroot.exists()


@pytest.mark.parametrize("firmware", ["uefi", "csm"])
def test_boot_scenario_passes_through_qemu_system(tmp_path, refguest, firmware):
    started = time.monotonic()
    recorded, run = run_boot(tmp_path, refguest, firmware)
    assert recorded["exit"] == "poweroff"
    assert recorded["guest_firmware"] == ("UEFI" if firmware == "uefi" else "BIOS")
    # libvirt kept the origin metadata that `refvm clean` judges domains by
    assert recorded["origin"] == {"machine": this_machine(), "run": run.run_id,
                                  "workroot": str(run.workroot)}
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
        vm.guest.reach_shell(guest.console.boot_timeout)
        vm.console.send_line("reboot -f")
        info = vm.machine.wait_exit(60)
    finally:
        run.close()
    assert info is not None and info.kind == "reboot", info
    assert "guest-reset" in str(info)
    assert_nothing_left(run)


def nvme_bus_offered() -> bool:
    from harness.backends.libvirt.domain_xml import offers_disk_bus
    return offers_disk_bus(backend().domain_capabilities(), "nvme")


@pytest.mark.parametrize("firmware", ["uefi", "csm"])
def test_nvme_scenario_passes_through_qemu_system(tmp_path, refguest, firmware):
    """Two controllers with the scenario's serials and 512/4096-byte sectors. Where libvirt
    lists no nvme disk bus (9.0 here), as QEMU's own -device nvme in <qemu:commandline>, its
    writable scratch files lent to libvirt-qemu for the run."""
    lent = {}

    def owners(step, vm):
        if step.kind == "disk_check" and not lent:
            lent.update({d.path.name: d.path.stat().st_uid for d in vm.spec.disks[1:]})

    recorded, run = run_boot(tmp_path, refguest, firmware, name="nvme", before_step=owners)
    assert recorded["exit"] == "poweroff"
    assert (recorded["ns512_serial"], recorded["ns4k_serial"]) == ("RVNVME-512", "RVNVME-4K")
    assert recorded["ns4k_model"] == "QEMU NVMe Ctrl"
    assert recorded["ns512_verified_regions"] == 2 and recorded["ns4k_verified_regions"] == 2
    case_dir, = (tmp_path / "artifacts").iterdir()
    domain = ET.fromstring((case_dir / "domain.xml").read_text())
    if nvme_bus_offered():
        assert len(domain.findall("devices/disk/target[@bus='nvme']")) == 2
    else:
        from harness.backends.libvirt.domain_xml import qemu_args
        assert domain.find("devices/disk/target[@bus='nvme']") is None
        assert [json.loads(a) for a in qemu_args(domain) if a.startswith("{")] == [
            {"driver": "nvme", "drive": "disk1", "serial": "RVNVME-512"},
            {"driver": "nvme", "drive": "disk2", "serial": "RVNVME-4K",
             "logical_block_size": 4096, "physical_block_size": 4096}]
        assert "-device nvme" in domain.findtext("description")
        qemu_user = int(subprocess.run(["id", "-u", "libvirt-qemu"], capture_output=True,
                                       text=True, check=True).stdout)
        assert lent == {"ns512.raw": qemu_user, "ns4k.raw": qemu_user}
    assert_nothing_left(run)


def test_plan_shows_the_nvme_domain_xml(tmp_path, capsys):
    """`refvm plan --backend libvirt --scenario nvme`: run, not skipped, with the XML."""
    need(LOCAL)
    from harness.cli import main

    assert main(["plan", "--backend", "libvirt", "--scenario", "nvme", "--guest", "refguest",
                 "--offline", "--artifacts", str(tmp_path), "--json"]) == 0
    cases = json.loads(capsys.readouterr().out)["cases"]
    assert [c["id"] for c in cases] == ["nvme[refguest-uefi-libvirt]",
                                        "nvme[refguest-csm-libvirt]"]
    for case in cases:
        assert case["skip"] is None
        domain = ET.fromstring(case["details"])
        if nvme_bus_offered():
            assert len(domain.findall("devices/disk/target[@bus='nvme']")) == 2
        else:
            from harness.backends.libvirt.domain_xml import qemu_args
            assert "<qemu:commandline>" in case["details"]
            assert json.loads(qemu_args(domain)[-1])["logical_block_size"] == 4096


def test_nvme_flipped_byte_in_the_image_fails_verify_through_libvirt(tmp_path, refguest):
    """The guest's writes are in the very file the host verifies (no copy in between)."""
    with pytest.raises(GuestFailure, match="disk ns4k: 8M at offset 4M in 1M blocks: the guest "
                                           "wrote sha256 [0-9a-f]{64}, the image file holds"):
        run_boot(tmp_path, refguest, "csm", name="nvme",
                 before_step=flip_byte_before_verify("ns4k", 0))
    assert refvm_domains() == []


# A child that boots one domain through Run, says its name and run id, then waits to be killed.
BOOT_AND_WAIT = """
import sys, time
from harness.backends.libvirt.backend import LibvirtBackend
from harness.catalog import load_guests, load_scenarios
from harness.matrix import Case
from harness.runner import Run

guest, = load_guests(["refguest"])
boot, = [s for s in load_scenarios() if s.name == "boot"]
run = Run(LibvirtBackend("qemu:///system", domain_type="qemu"), sys.argv[2])
vm = run.boot(Case(boot, guest, "csm", "libvirt"), sys.argv[1])
print(vm.spec.name, run.run_id, flush=True)
time.sleep(600)
"""


def test_domains_die_with_a_sigkilled_harness_without_reaping(tmp_path, refguest):
    """VIR_DOMAIN_START_AUTODESTROY: libvirtd destroys the domain when the connection that
    created it closes, and the kernel closes it when the harness dies, however it dies."""
    _guest, image = refguest
    # A scratch root libvirt's QEMU cannot enter (0700): the VM's files are staged (linked
    # into /var/lib/libvirt/images/<vm>), which the killed run leaves for the reaper.
    scratch = tmp_path / "scratch"
    scratch.mkdir(mode=0o700)
    child = subprocess.Popen([sys.executable, "-c", BOOT_AND_WAIT, str(image),
                              str(tmp_path / "artifacts")], cwd=REPO_ROOT,
                             env=dict(os.environ, REFVM_TMP=str(scratch)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    name = run_id = None
    try:
        ready, _, _ = select.select([child.stdout], [], [], 120)
        line = child.stdout.readline() if ready else ""
        assert line, f"the child booted nothing: {child.poll()=}, stderr: " \
                     f"{child.stderr.read() if child.poll() is not None else '(running)'}"
        name, run_id = line.split()
        assert name in refvm_domains()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        killed = time.monotonic()
        while name in refvm_domains() and time.monotonic() - killed < 10:
            time.sleep(0.2)
        gone_after = time.monotonic() - killed
        assert name not in refvm_domains(), "the domain outlived its SIGKILLed harness"
        print(f"domain gone {gone_after:.1f}s after SIGKILL")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if name and name in refvm_domains():
            subprocess.run(["virsh", "-c", LOCAL, "destroy", name], capture_output=True)
        if run_id:
            shutil.rmtree(scratch / f"refvm-{run_id}", ignore_errors=True)
    # The reaper still has the staging directory to remove, but no domain.
    from harness.backends.libvirt.connection import connect
    from harness.backends.libvirt.reap import reap_domains
    from harness.backends.libvirt.staging import STAGE_ROOT

    assert (STAGE_ROOT / name).exists()  # the killed run could not remove it itself
    conn = connect(LOCAL)
    try:
        reap_domains(conn)
    finally:
        conn.close()
    assert not (STAGE_ROOT / name).exists()


BARE_DOMAIN = ("<domain type='qemu'><name>{name}</name><uuid>{uuid}</uuid>{metadata}"
               "<memory unit='MiB'>32</memory><os><type arch='x86_64' machine='q35'>hvm</type>"
               "</os><devices><controller type='usb' model='none'/>"
               "<memballoon model='none'/></devices></domain>")


@contextlib.contextmanager
def bare_domains(*domains: tuple[str, str]):
    """Paused, diskless domains (name, <metadata> XML) to reap; yields the connection."""
    need(LOCAL)
    import libvirt

    from harness.backends.libvirt.connection import connect

    conn = connect(LOCAL)
    doms = [conn.createXML(BARE_DOMAIN.format(name=name, uuid=uuid.uuid4(), metadata=metadata),
                           libvirt.VIR_DOMAIN_START_PAUSED) for name, metadata in domains]
    try:
        yield conn
    finally:
        for dom in doms:
            try:
                dom.destroy()
            except libvirt.libvirtError:
                pass
        conn.close()
    assert refvm_domains() == []


def origin_xml(run: str, workroot: Path | None, machine: str | None = None) -> str:
    from harness.backends.libvirt.origin import NAMESPACE

    where = f" workroot='{workroot}'" if workroot else ""
    return (f"<metadata><refvm:origin xmlns:refvm='{NAMESPACE}' "
            f"machine='{machine or this_machine()}' run='{run}'{where}/></metadata>")


def test_reap_domains_removes_marked_dead_runs_only(tmp_path):
    """Only a domain carrying refvm's mark (origin metadata naming this machine and its run
    directory) whose run is dead goes; a domain merely named like refvm's stays, and so does
    one whose mark names no run directory (made by a refvm before the mark)."""
    from harness.backends.libvirt.reap import reap_domains
    from harness.ownership import claim

    claim(tmp_path / "refvm-0badf00d")  # this living process's run
    dead, live, unmarked, old = ("refvm-deadbeef-1", "refvm-0badf00d-1", "refvm-feedf00d-1",
                                 "refvm-0ddba11a-1")
    with bare_domains((dead, origin_xml("deadbeef", tmp_path / "refvm-deadbeef")),
                      (live, origin_xml("0badf00d", tmp_path / "refvm-0badf00d")),
                      (unmarked, ""), (old, origin_xml("0ddba11a", None))) as conn:
        said: list = []
        assert reap_domains(conn, stage_root=None, dry_run=True, log=said.append) == [dead]
        assert sorted(refvm_domains()) == sorted([dead, live, unmarked, old])  # dry: untouched
        assert f"would remove libvirt domain {dead}: its run directory " \
               f"{tmp_path / 'refvm-deadbeef'} is gone" in said
        assert reap_domains(conn, stage_root=None) == [dead]
        assert sorted(refvm_domains()) == sorted([live, unmarked, old])


def test_reaping_a_shared_host_touches_only_this_machines_dead_runs():
    """On a remote host other CI machines' runs may be alive: `refvm clean --hosts` there
    removes only domains whose origin metadata names this machine (and a dead run)."""
    from harness.backends.libvirt.reap import reap_domains

    ours, theirs = "refvm-deadbee1-1", "refvm-deadbee2-1"
    with bare_domains((ours, origin_xml("deadbee1", Path("/nonexistent/refvm-deadbee1"))),
                      (theirs, origin_xml("deadbee2", Path("/nonexistent/refvm-deadbee2"),
                                          "another-ci-machine"))) as conn:
        assert reap_domains(conn, stage_root=None, only_machine=this_machine()) == [ours]
        assert refvm_domains() == [theirs]


def test_a_live_run_under_another_temp_root_is_never_reaped(tmp_path):
    """A run's domains name its claimed directory: a run with another REFVM_TMP (a CI job
    beside a developer's run, `sudo refvm clean` without TMPDIR) is judged by its own owner
    file, not by whether the reaping process's temp root knows its run id."""
    from harness.backends.libvirt.origin import NAMESPACE
    from harness.backends.libvirt.reap import reap_domains
    from harness.ownership import claim

    def origin(run: str, workroot: Path) -> str:
        return (f"<metadata><refvm:origin xmlns:refvm='{NAMESPACE}' machine='{this_machine()}' "
                f"run='{run}' workroot='{workroot}'/></metadata>")

    live_root, dead_root = tmp_path / "refvm-11111111", tmp_path / "refvm-22222222"
    claim(live_root)  # owned by this (living) process; dead_root never existed
    live, dead = "refvm-11111111-1", "refvm-22222222-1"
    stages = tmp_path / "stages"
    for name, root in ((live, live_root), (dead, dead_root)):
        (stages / name).mkdir(parents=True)
        (stages / name / "workroot").write_text(str(root))
    with bare_domains((live, origin("11111111", live_root)),
                      (dead, origin("22222222", dead_root))) as conn:
        assert reap_domains(conn, stage_root=stages) == [dead]  # no run id known here
        assert refvm_domains() == [live]
    assert sorted(p.name for p in stages.iterdir()) == [live]


def test_another_machines_domain_on_this_host_is_left_to_it():
    """A domain another machine started here through the remote protocol is its to judge."""
    from harness.backends.libvirt.origin import NAMESPACE
    from harness.backends.libvirt.reap import reap_domains

    theirs = "refvm-deadbee3-1"
    metadata = (f"<metadata><refvm:origin xmlns:refvm='{NAMESPACE}' machine='another-machine' "
                f"run='deadbee3'/></metadata>")
    with bare_domains((theirs, metadata)) as conn:
        assert reap_domains(conn, stage_root=None) == []  # a local URI, no live runs
        assert refvm_domains() == [theirs]


MACHINE_CASES = ["vcpus-8[refguest-uefi-libvirt]", "reboot[refguest-csm-libvirt]",
                 "nvram-persist[refguest-uefi-libvirt]", "save-restore[refguest-uefi-libvirt]"]


def test_machine_scenarios_pass_through_qemu_system(tmp_path):
    """`refvm run --backend libvirt -n 2` on four machine scenarios (about 3 minutes): the guest
    sees 1 socket x 4 cores x 2 threads (<cpu><topology>, a named Intel model under TCG); it
    reboots three times in a domain with <on_reboot>restart</on_reboot>, each reset counted
    from QEMU's RESET event; its UEFI variable survives a restart of the same domain
    definition in the vars file and is absent from a fresh one; saved with virDomainSave and
    restored with virDomainRestoreFlags it goes on counting, its disk and network work. Every
    domain, staged file and scratch directory is gone afterwards."""
    from harness.backends.libvirt.staging import STAGE_ROOT
    need(LOCAL)
    scratch = tmp_path / "scratch"
    scratch.mkdir(mode=0o755)
    os.chmod(tmp_path, 0o755)  # libvirt's QEMU reaches scratch disks in place
    junit = tmp_path / "junit.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--guest", "refguest", "--backend",
         "libvirt", "--accel", "tcg",
         *(a for name in ("vcpus", "reboot", "nvram-persist", "save-restore")
           for a in ("--scenario", name)),
         "--artifacts", str(tmp_path / "a"), "--junitxml", str(junit),
         "-p", "no:cacheprovider", "-n", "2",
         "-k", " or ".join(f"({c.split('[')[0]} and {c.split('-')[-2]})"
                           for c in MACHINE_CASES)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
        env=dict(os.environ, REFVM_TMP=str(scratch)))
    ran = {c.get("name"): {p.get("name"): p.get("value") for p in c.iter("property")}
           for c in ET.parse(junit).getroot().iter("testcase") if c.find("skipped") is None}
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert set(ran) == set(MACHINE_CASES)
    eight = ran["vcpus-8[refguest-uefi-libvirt]"]
    assert eight["vcpus_seen"] == "8"
    assert eight["topology_seen"] == "1 sockets x 4 cores x 2 threads"
    reboot = ran["reboot[refguest-csm-libvirt]"]
    assert reboot["reboots"] == "3" and len(set(reboot["boot_ids"].split())) == 4
    assert all(int(n) >= 1 for n in reboot["machine_resets"].split())
    assert reboot["scratch_verified_regions"] == "1"
    nvram = ran["nvram-persist[refguest-uefi-libvirt]"]
    assert nvram["efi_var_after_restart"] == "refvm-nvram-1"
    assert nvram["boot_current_after_restart"] == nvram["boot_next"]
    assert nvram["efi_var_fresh"] == "absent"
    saved = ran["save-restore[refguest-uefi-libvirt]"]
    assert int(saved["state_bytes"]) > 1 << 20 and float(saved["suspend_seconds"]) > 0
    assert int(saved["counter_after_restore"]) >= int(saved["counter_before_save"])
    assert saved["scratch_verified_regions"] == "1" and saved["net0_address"] == "10.0.2.15"
    names = {ET.parse(x).findtext("name") for x in (tmp_path / "a").glob("*/domain*.xml")}
    assert len(names) == 4 and not names & set(refvm_domains())
    assert not [name for name in names if (STAGE_ROOT / name).exists()]
    assert list(scratch.iterdir()) == []
