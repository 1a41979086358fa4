"""bhyve VM lifecycle against tests/fake_bhyve.py: order of programs, exits, clean-up.

The fake stands in for bhyve, bhyvectl, bhyveload and ifconfig and logs every call (its
`ifconfig bridge create` prints "bridge7"); the nmdm console is a FIFO (the backend's nmdm path
pattern is a constructor parameter). The tests at
the end need a real FreeBSD host and skip elsewhere.
"""
from __future__ import annotations

import os
import select
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import firmware as fw
from harness.backends.bhyve import backend as bhyve
from harness.backends.bhyve.backend import BhyveBackend, address_is_local, exit_info
from harness.backends.bhyve.ifaces import mark_for
from harness.backends.bhyve.argv import (BRIDGE_PLACEHOLDER, bridge_addresses, nmdm_pair,
                                         state_files, tap_names)
from harness.backends.bhyve.caps import BhyveCaps, run_quietly
from harness.catalog import load_guests, load_scenarios, select_scenarios
from harness.errors import GuestFailure, InfraError
from harness.matrix import Case, skip_reason
from harness.process import stop
from harness.runner import Run
from harness.steps import nvram
from harness.vmspec import Disk, Nic, SerialPort, VmSpec

from tests.doubles_bhyve import SAMPLES, SNAPSHOT_BUILD, FakeHost, canned_runner

NAME = "refvm-life-1"


def _freebsd_with_vmm() -> bool:
    if not sys.platform.startswith("freebsd") or shutil.which("bhyve") is None:
        return False
    return subprocess.run(["kldstat", "-q", "-n", "vmm"]).returncode == 0


needs_freebsd_vmm = pytest.mark.skipif(not _freebsd_with_vmm(),
                                       reason="needs a FreeBSD host with vmm.ko")


@pytest.fixture
def host(tmp_path, monkeypatch) -> FakeHost:
    fake = FakeHost(tmp_path / "fake")
    monkeypatch.setenv("FAKE_BHYVE_CONTROL", str(fake.control))
    # The bridge address is free on a FreeBSD host without a colliding VM; here, whatever the
    # test machine's own addresses are.
    monkeypatch.setattr(bhyve, "address_is_local", lambda address: False)
    return fake


def make_backend(host: FakeHost, tmp_path: Path, sample: dict = SAMPLES["14.1"],
                 **options) -> BhyveBackend:
    code, template = tmp_path / "CODE.fd", tmp_path / "VARS.fd"
    code.write_bytes(b"c" * 4096)
    template.write_bytes(b"v" * 8192)  # bhyve refuses a vars file under one page
    caps = BhyveCaps.probe(canned_runner(sample), "bhyve", "freebsd-version", "uname")
    return BhyveBackend(programs=host.programs, caps=caps, stop_grace=2.0,
                        nmdm_pattern=str(tmp_path / "nmdm{unit}.fifo"),
                        uefi=fw.FirmwareCandidates("uefi", "test", (fw.UefiPair(code, template),)),
                        **options)


def make_spec(tmp_path: Path, firmware="uefi", **extra) -> VmSpec:
    fields = dict(name=NAME, memory_mib=256, cpus=1, firmware=firmware,
                  uuid="00000000-0000-4000-8000-0000000000aa", utc_clock=True,
                  workdir=tmp_path / "w", logdir=tmp_path / "logs",
                  disks=(Disk(tmp_path / "freebsd.raw", boot=True),),
                  serials=(SerialPort("com1"),))
    return VmSpec(**{**fields, **extra})


def boot(backend: BhyveBackend, spec: VmSpec):
    """What Run.boot does: start, open COM1 (a FIFO here, nmdm on FreeBSD), then resume."""
    os.mkfifo(nmdm_pair(spec.name, "com1", backend.nmdm_pattern)[1])
    machine = backend.start(spec)
    console = machine.open_console("com1")
    machine.resume()
    return machine, console


def read_console(console, idle: float = 0.5) -> str:
    data = b""
    while select.select([console], [], [], idle)[0]:
        data += os.read(console.fileno(), 4096)
    return data.decode()


def wait_console(console, text: str, timeout: float = 15.0) -> str:
    """What the console shows until ``text`` is in it (a busy host starts programs slowly)."""
    seen, deadline = "", time.monotonic() + timeout
    while text not in seen and time.monotonic() < deadline:
        seen += read_console(console, 0.2)
    return seen


def destroy_call():
    return ["bhyvectl", f"--vm={NAME}", "--destroy"]


def bhyve_call(backend, spec):
    return ["bhyve"] + backend.launch_plan(spec).bhyve[1:]


# Exits ------------------------------------------------------------------------------------------
def test_power_off(host, tmp_path):
    host.set(exits={"bhyve": [1]}, console="FreeBSD/amd64 (guest) login:")
    backend, spec = make_backend(host, tmp_path), make_spec(tmp_path)
    machine, console = boot(backend, spec)
    info = machine.wait_exit(10)
    assert (info.kind, info.code) == ("poweroff", 1)
    assert "bhyve: FreeBSD/amd64 (guest) login: (run 1)" in read_console(console)
    assert (spec.workdir / "uefi-vars.fd").read_bytes() == b"v" * 8192  # private vars copy
    machine.destroy()
    # the stale VM is destroyed first, the VM again at the end
    assert host.calls() == [destroy_call(), bhyve_call(backend, spec), destroy_call()]
    assert "bhyve" in (spec.logdir / "command.txt").read_text()


def test_reboot_relaunches_like_vmrun_sh(host, tmp_path):
    host.set(exits={"bhyve": [0, 1]}, console="boot")
    backend = make_backend(host, tmp_path, relaunch_on_reboot=True)
    spec = make_spec(tmp_path, firmware="bhyveload")
    machine, console = boot(backend, spec)
    info = machine.wait_exit(10)
    assert (info.kind, info.code) == ("poweroff", 1)
    assert "after 1 guest reboot" in info.detail and machine.reboots == 1
    # one console across the relaunch: the loader's and both boots' output, in order
    assert read_console(console).split("\r\n")[:4] == [
        "bhyveload: boot (run 1)", "bhyve: boot (run 1)",
        "bhyveload: boot (run 2)", "bhyve: boot (run 2)"]
    machine.destroy()
    loader = ["bhyveload"] + backend.launch_plan(spec).loader[1:]
    bhyve = bhyve_call(backend, spec)
    assert host.calls() == [destroy_call(), loader, bhyve, loader, bhyve, destroy_call()]


def test_reboot_is_the_exit_unless_relaunch_was_asked_for(host, tmp_path):
    host.set(exits={"bhyve": [0, 1]})
    backend, spec = make_backend(host, tmp_path), make_spec(tmp_path)
    machine, _ = boot(backend, spec)
    assert machine.wait_exit(10) == exit_info(0)
    assert machine.wait_exit(10).kind == "reboot"
    machine.destroy()
    assert [c[0] for c in host.calls()] == ["bhyvectl", "bhyve", "bhyvectl"]


@pytest.mark.parametrize("code, kind", [(2, "halt"), (3, "triple-fault"), (4, "error"),
                                        (9, "error")])
def test_other_exits_in_words(host, tmp_path, code, kind):
    host.set(exits={"bhyve": [code]})
    machine, _ = boot(make_backend(host, tmp_path), make_spec(tmp_path))
    info = machine.wait_exit(10)
    machine.destroy()
    assert (info.kind, info.code) == (kind, code)
    assert host.calls()[-1] == destroy_call()


def test_exit_status_table_is_bhyve_8s():
    assert [exit_info(c).kind for c in (0, 1, 2, 3, 4)] == [
        "reboot", "poweroff", "halt", "triple-fault", "error"]
    assert exit_info(-9).kind == "killed"
    assert "signal 9" in exit_info(-9).detail


def test_bhyveload_failure_is_an_error_and_bhyve_never_runs(host, tmp_path):
    host.set(exits={"bhyveload": [1]})
    machine, _ = boot(make_backend(host, tmp_path), make_spec(tmp_path, firmware="bhyveload"))
    info = machine.wait_exit(10)
    machine.destroy()
    assert (info.kind, info.code) == ("error", 1) and "bhyveload exited 1" in info.detail
    assert [c[0] for c in host.calls()] == ["bhyvectl", "bhyveload", "bhyvectl"]


# Clean-up ---------------------------------------------------------------------------------------
HOST_CIDR, GUEST_CIDR = bridge_addresses(NAME)  # 10.210.N.1/24, 10.210.N.2/24


def ifconfig_lines(backend, spec, bridge="bridge7"):
    """The ifconfig lines of the plan, with the bridge name the fake printed pasted in."""
    return [["ifconfig"] + [bridge if a == BRIDGE_PLACEHOLDER else a for a in line[1:]]
            for line in backend.command_lines(spec) if line[0].endswith("/ifconfig")]


def test_a_bridge_of_its_own_with_the_taps_made_and_removed(host, tmp_path):
    host.set(exits={"bhyve": [1]})
    backend = make_backend(host, tmp_path)
    spec = make_spec(tmp_path, nics=(Nic(mac="52:54:00:00:00:07"),))
    tap, = tap_names(spec)
    machine, _ = boot(backend, spec)
    machine.wait_exit(10)
    host_ip = HOST_CIDR.split("/")[0]
    assert machine.host_address_for_guest() == machine.host_listen_address() == host_ip == "10.210.45.1"  # crc32(NAME) % 254 + 1
    assert machine.guest_static_ipv4() == GUEST_CIDR == host_ip[:-1] + "2/24"
    # SSH (simulated: no bhyve here): the guest's own address on the bridge, port 22.
    assert machine.ssh_endpoint() == (GUEST_CIDR.split("/")[0], 22)
    assert machine.bridge == "bridge7"
    machine.destroy()
    mark = mark_for(spec.workdir)
    assert mark == f"refvm:{spec.workdir.parent}"
    setup = [
        ["ifconfig", "bridge", "create", "description", mark],  # prints bridge7
        ["ifconfig", "bridge7", "inet", HOST_CIDR],       # the host's end of the VM's /24
        ["ifconfig", tap, "create", "description", mark], ["ifconfig", "bridge7", "addm", tap],
        ["ifconfig", tap, "up"],
        ["ifconfig", "bridge7", "up"]]
    assert host.calls() == [
        destroy_call(),
        ["ifconfig", tap],                                # is a stale tap there? (no)
        *setup,
        bhyve_call(backend, spec),
        destroy_call(), ["ifconfig", tap, "destroy"], ["ifconfig", "bridge7", "destroy"]]
    assert ifconfig_lines(backend, spec) == setup         # what `refvm plan` shows, in order
    assert f"{tap},mac=52:54:00:00:00:07" in " ".join(bhyve_call(backend, spec))
    assert "bridge7 destroy -> 0" in (spec.logdir / "bhyve.log").read_text()


def test_the_bridge_name_is_whatever_ifconfig_printed(host, tmp_path):
    host.set(bridge="bridge12")
    spec = make_spec(tmp_path, nics=(Nic(), Nic()))
    taps = tap_names(spec)
    machine = make_backend(host, tmp_path).start(spec)
    machine.destroy()
    calls = host.calls()
    assert [["ifconfig", "bridge12", "addm", tap] in calls for tap in taps] == [True, True]
    assert calls[-3:] == [["ifconfig", taps[1], "destroy"], ["ifconfig", taps[0], "destroy"],
                          ["ifconfig", "bridge12", "destroy"]]


def test_a_failed_start_still_destroys_the_vm_its_taps_and_its_bridge(host, tmp_path):
    host.set(exits={"ifconfig:up": [1]})
    spec = make_spec(tmp_path, nics=(Nic(),))
    tap, = tap_names(spec)
    with pytest.raises(InfraError, match=f"ifconfig {tap} up.* failed"):
        make_backend(host, tmp_path).start(spec)
    assert host.calls()[-3:] == [destroy_call(), ["ifconfig", tap, "destroy"],
                                 ["ifconfig", "bridge7", "destroy"]]
    assert not any(c[0] == "bhyve" for c in host.calls())


def test_a_failed_bridge_address_destroys_the_bridge_and_makes_no_tap(host, tmp_path):
    host.set(exits={f"ifconfig:{HOST_CIDR}": [1]})
    spec = make_spec(tmp_path, nics=(Nic(),))
    tap, = tap_names(spec)
    with pytest.raises(InfraError, match=f"ifconfig bridge7 inet {HOST_CIDR}.* failed"):
        make_backend(host, tmp_path).start(spec)
    assert host.calls()[-3:] == [["ifconfig", "bridge7", "inet", HOST_CIDR], destroy_call(),
                                 ["ifconfig", "bridge7", "destroy"]]
    assert ["ifconfig", tap, "create"] not in host.calls()


@pytest.mark.parametrize("exits, printed", [({"ifconfig:create": [1]}, "bridge7"),
                                            ({}, ""), ({}, "bridge7\nbridge8")])
def test_when_bridge_create_fails_nothing_more_is_made_or_destroyed(host, tmp_path, exits,
                                                                    printed):
    host.set(exits=exits, bridge=printed)
    spec = make_spec(tmp_path, nics=(Nic(),))
    tap, = tap_names(spec)
    with pytest.raises(InfraError, match="ifconfig bridge create"):
        make_backend(host, tmp_path).start(spec)
    assert host.calls() == [destroy_call(), ["ifconfig", tap],
                            ["ifconfig", "bridge", "create", "description",
                             mark_for(spec.workdir)], destroy_call()]


def test_a_host_address_already_in_use_refuses_before_making_anything(host, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setattr(bhyve, "address_is_local", lambda address: True)
    with pytest.raises(InfraError, match=f"{HOST_CIDR.split('/')[0]} is already on an interface"
                                         ".*1 in 254"):
        make_backend(host, tmp_path).start(make_spec(tmp_path, nics=(Nic(),)))
    assert host.calls() == [destroy_call(), destroy_call()]


def test_address_is_local_binds_to_see():
    assert address_is_local("127.0.0.1")
    assert not address_is_local("192.0.2.1")  # TEST-NET-1 (RFC 5737): on no host


def test_no_nics_no_bridge(host, tmp_path):
    machine = make_backend(host, tmp_path).start(make_spec(tmp_path))
    with pytest.raises(InfraError, match="no NIC on a bridge, so no way to its sshd"):
        machine.ssh_endpoint()
    machine.destroy()
    assert not any(c[0] == "ifconfig" for c in host.calls())


def test_destroy_stops_a_running_guest_once(host, tmp_path):
    host.set(hang=True)
    machine, _ = boot(make_backend(host, tmp_path), make_spec(tmp_path))
    time.sleep(0.5)
    assert machine.poll() is None and machine.wait_exit(0.2) is None
    started = time.monotonic()
    machine.destroy()
    machine.destroy()
    assert time.monotonic() - started < 5  # SIGTERM was enough: no SIGKILL grace spent
    assert machine.poll().kind == "poweroff"  # the fake honours SIGTERM as an ACPI power-off
    assert [c[0] for c in host.calls()] == ["bhyvectl", "bhyve", "bhyvectl"]


def test_destroy_before_resume_runs_nothing_but_the_clean_up(host, tmp_path):
    backend, spec = make_backend(host, tmp_path), make_spec(tmp_path)
    machine = backend.start(spec)
    machine.destroy()
    machine.resume()  # too late: nothing starts
    assert machine.wait_exit(0.5) is None
    assert host.calls() == [destroy_call(), destroy_call()]


@pytest.mark.parametrize("failing", ["stop", "bhyvectl", "first tap"])
def test_every_clean_up_step_runs_even_when_an_earlier_one_raised(host, tmp_path, monkeypatch,
                                                                  failing):
    """A second SIGTERM during stop()'s grace is a KeyboardInterrupt in the middle of
    destroy(); the kernel VM, the taps, the bridge and the consoles must still go, because a
    later destroy() does nothing."""
    host.set(hang=True)
    spec = make_spec(tmp_path, nics=(Nic(), Nic()))
    taps = tap_names(spec)
    machine, console = boot(make_backend(host, tmp_path), spec)
    time.sleep(0.5)
    proc = machine._proc
    assert proc is not None and proc.poll() is None
    before = len(host.calls())

    def interrupted(*_args):
        raise KeyboardInterrupt

    argv_that_fails = None
    if failing == "stop":
        monkeypatch.setattr(bhyve, "stop", interrupted)
    else:
        real_run = bhyve.run_quietly
        argv_that_fails = destroy_call() if failing == "bhyvectl" \
            else ["ifconfig", taps[1], "destroy"]  # the last tap made is removed first

        def run_quietly(argv, timeout=15.0):
            if [Path(argv[0]).name] + argv[1:] == argv_that_fails:
                raise KeyboardInterrupt
            return real_run(argv, timeout)
        monkeypatch.setattr(bhyve, "run_quietly", run_quietly)
    try:
        with pytest.raises(KeyboardInterrupt):
            machine.destroy()
        machine.destroy()  # a no-op now: the first call did everything
    finally:
        stop(proc, 2.0)  # the fake bhyve the interrupted stop() left running
    cleanup = host.calls()[before:]
    expected = [destroy_call(), ["ifconfig", taps[1], "destroy"],
                ["ifconfig", taps[0], "destroy"], ["ifconfig", "bridge7", "destroy"]]
    assert cleanup == [c for c in expected if c != argv_that_fails]  # it raised before running
    assert console.closed and machine.bridge is None


# On a real FreeBSD host --------------------------------------------------------------------------
@needs_freebsd_vmm
def test_real_probe_reads_this_host():
    caps = BhyveCaps.probe(run_quietly, "bhyve", "freebsd-version", "uname")
    assert {"hostbridge", "lpc", "virtio-blk"} <= caps.emulations
    assert {"bootrom", "com1"} <= caps.lpc_devices and caps.release >= (11, 3)


@needs_freebsd_vmm
def test_real_bhyve_accepts_our_command_line(tmp_path):
    """bhyve_config(5): with config.dump=1 bhyve parses everything, prints it and exits; no VM
    is created, so this checks our syntax against the real parser."""
    backend = BhyveBackend()
    if not backend.caps.config_options:
        pytest.skip("this bhyve has no -o config.dump")
    spec = make_spec(tmp_path, firmware="bhyveload", disks=(
        Disk(tmp_path / "boot.raw", boot=True, readonly=True),
        Disk(tmp_path / "n.raw", bus="nvme", sector_size=4096, serial="SN1")))
    argv = backend.launch_plan(spec).bhyve
    done = subprocess.run(argv[:-1] + ["-o", "config.dump=1", argv[-1]], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "sectsz=4096" in done.stdout and "ser=SN1" in done.stdout


# The machine scenarios' lifecycle -----------------------------------------------------------
def test_a_restart_relaunches_the_same_vm_on_its_own_vars_file_and_disk_copy(host, tmp_path):
    """restart (nvram-persist): the second start copies nothing: the vars file the guest
    wrote and the boot disk's private copy are the first run's; the plan says the same."""
    host.set(exits={"bhyve": [1, 1]})
    image = tmp_path / "freebsd.raw"
    image.write_bytes(b"i" * 4096)
    backend = make_backend(host, tmp_path)
    spec = make_spec(tmp_path, disks=(Disk(image, boot=True, ephemeral=True),))
    machine, _ = boot(backend, spec)
    assert machine.wait_exit(10).kind == "poweroff"
    machine.destroy()
    spec.vars_path.write_bytes(b"w" * 8192)  # what the guest's firmware wrote
    copy = next(spec.workdir.glob("private-0-*"))
    copy.write_bytes(b"g" * 4096)  # what the guest wrote to its root file system
    again = backend.command_lines(spec, again=True)
    assert not any(argv[0] == "cp" for argv in again)
    assert [a for a in again[-1] if a.startswith("bootrom,")] == [
        a for a in backend.command_lines(spec)[-1] if a.startswith("bootrom,")]
    os.unlink(nmdm_pair(spec.name, "com1", backend.nmdm_pattern)[1])
    os.mkfifo(nmdm_pair(spec.name, "com1", backend.nmdm_pattern)[1])
    machine = backend.start(spec, again=True)
    machine.resume()
    assert machine.wait_exit(10).kind == "poweroff"
    machine.destroy()
    assert spec.vars_path.read_bytes() == b"w" * 8192 and copy.read_bytes() == b"g" * 4096
    assert (spec.logdir / "command-again.txt").is_file()


def test_a_scenario_that_lets_the_guest_reboot_gets_relaunches_counted_as_resets(host, tmp_path):
    host.set(exits={"bhyve": [0, 0, 1]})
    backend = make_backend(host, tmp_path)  # relaunch_on_reboot not set: the spec asks
    spec = make_spec(tmp_path, survive_reboot=True)
    machine, _ = boot(backend, spec)
    info = machine.wait_exit(10)
    assert info.kind == "poweroff" and machine.resets() == 2
    machine.destroy()


def test_a_rebooting_vm_that_triple_faults_ends_there_named_as_such(host, tmp_path):
    """bhyve(8): exit 3 is a triple fault. A VM the reboot scenario relaunches on exit 0 is not
    relaunched on 3: it ends, and the reboot step reports the hypervisor's exit in these words."""
    host.set(exits={"bhyve": [0, 3]})
    machine, _ = boot(make_backend(host, tmp_path), make_spec(tmp_path, survive_reboot=True))
    info = machine.wait_exit(10)
    machine.destroy()
    assert (info.kind, info.code) == ("triple-fault", 3) and machine.resets() == 1
    assert str(info).startswith("triple-fault (bhyve: the guest triple-faulted after 1 "
                                "guest reboot")
    assert [c[0] for c in host.calls()].count("bhyve") == 2  # the first boot, one relaunch


# save-restore: bhyvectl --suspend, then bhyve -r (the fake plays snapshot.c's side) ----------
def snapshot_backend(host, tmp_path, **options) -> BhyveBackend:
    """A host whose bhyve and bhyvectl were built with BHYVE_SNAPSHOT (their usage texts)."""
    return make_backend(host, tmp_path, dict(SAMPLES["14.1"], **SNAPSHOT_BUILD), **options)


def reopen_console(backend, spec):
    """A new nmdm B side for the next bhyve (here: the FIFO again, emptied)."""
    fifo = nmdm_pair(spec.name, "com1", backend.nmdm_pattern)[1]
    os.unlink(fifo)
    os.mkfifo(fifo)


@pytest.mark.parametrize("firmware", ["uefi", "bhyveload"])
def test_suspend_then_restore_relaunches_with_the_exact_argv_and_removes_its_files(
        host, tmp_path, firmware):
    """save(): bhyvectl asks, bhyve writes FILE, FILE.kern, FILE.meta and exits 0 (not a
    reboot: never relaunched, even for a VM that survives reboots). restore(): the VM's own
    command line plus -r, no bhyveload, its bridge and tap made again; the guest goes on with
    the console it had. Its destroy() removes the three files."""
    host.set(hang=True, console="FreeBSD/amd64 (guest) login:")
    backend = snapshot_backend(host, tmp_path)
    spec = make_spec(tmp_path, firmware=firmware, survive_reboot=True,
                     nics=(Nic(mac="52:54:00:00:00:07"),))
    tap, = tap_names(spec)
    machine, console = boot(backend, spec)
    text = "bhyve: FreeBSD/amd64 (guest) login: (run 1)"
    assert text in wait_console(console, text)
    state = spec.workdir / "saved.state"
    files = machine.save(state)
    assert files == [state, spec.workdir / "saved.state.kern", spec.workdir / "saved.state.meta"]
    assert all(path.is_file() for path in files)
    assert state.stat().st_size == 256 << 20  # the guest's memory (-m 256M)
    info = machine.poll()
    assert (info.kind, info.code) == ("suspended", 0) and machine.resets() == 0
    machine.destroy()
    console.close()
    before = len(host.calls())

    reopen_console(backend, spec)
    restored = backend.restore(spec, state)
    console = restored.open_console("com1")
    restored.resume()
    assert "resumed: " + text in wait_console(console, "resumed: " + text)
    assert restored.poll() is None  # running on from the snapshot
    restored.destroy()
    console.close()
    assert not any(path.exists() for path in files)

    plan = backend.launch_plan(spec)
    bhyve_argv = ["bhyve"] + plan.bhyve[1:]
    restore_argv = bhyve_argv[:-1] + ["-r", str(state), NAME]
    mark = mark_for(spec.workdir)
    network = [["ifconfig", tap], ["ifconfig", "bridge", "create", "description", mark],
               ["ifconfig", "bridge7", "inet", HOST_CIDR],
               ["ifconfig", tap, "create", "description", mark],
               ["ifconfig", "bridge7", "addm", tap], ["ifconfig", tap, "up"],
               ["ifconfig", "bridge7", "up"]]
    teardown = [destroy_call(), ["ifconfig", tap, "destroy"], ["ifconfig", "bridge7", "destroy"]]
    loader = [["bhyveload"] + plan.loader[1:]] if firmware == "bhyveload" else []
    assert host.calls()[:before] == [destroy_call(), *network, *loader, bhyve_argv,
                                     ["bhyvectl", f"--vm={NAME}", f"--suspend={state}"],
                                     *teardown]
    assert host.calls()[before:] == [destroy_call(), *network, restore_argv, *teardown]
    shown = (spec.logdir / "command-restore.txt").read_text()
    assert shlex.join(backend.save_restore_lines(spec, state)[-1]) in shown
    assert "bhyveload" not in shown


def test_the_run_records_the_state_size_and_times_of_a_bhyve_save_restore(host, tmp_path,
                                                                           monkeypatch):
    """Run.save_restore over the bhyve machine: the state's size is all three files', the
    suspend and resume seconds are measured; the new console replaces the old one."""
    host.set(hang=True, console="login:")
    backend = snapshot_backend(host, tmp_path)
    spec = make_spec(tmp_path)
    machine, console = boot(backend, spec)
    wait_console(console, "login:")
    notes = []
    vm = SimpleNamespace(spec=spec, machine=machine, console=console, backend=backend,
                         case=None, log=SimpleNamespace(note=notes.append),
                         guest=SimpleNamespace(console=None))

    def new_console(_case, new_machine, _log):
        reopen_console(backend, spec)
        return new_machine.open_console("com1")

    figures = Run.save_restore(SimpleNamespace(_console=new_console), vm)
    files = state_files(spec.workdir / "saved.state")
    assert figures["state_bytes"] == sum(path.stat().st_size for path in files) > 256 << 20
    assert figures["suspend_seconds"] > 0 and figures["resume_seconds"] >= 0
    assert vm.machine is not machine and vm.guest.console is vm.console
    assert "resumed: bhyve: login: (run 1)" in wait_console(vm.console, "resumed:")
    assert "suspended to saved.state, saved.state.kern, saved.state.meta" in notes[0]
    vm.machine.destroy()
    vm.console.close()
    assert not any(path.exists() for path in files)


def test_a_failed_checkpoint_is_an_infra_error_and_leaves_the_vm_running(host, tmp_path):
    host.set(hang=True, checkpoint_fails=True)
    backend = snapshot_backend(host, tmp_path)
    spec = make_spec(tmp_path)
    machine, _ = boot(backend, spec)
    time.sleep(0.5)
    state = spec.workdir / "saved.state"
    asked = time.monotonic()
    with pytest.raises(InfraError, match="did not suspend .* still running after .*"
                                         "Unable to perform the requested operation"):
        machine.save(state, timeout=60)
    assert time.monotonic() - asked < 10  # bhyve's words end the wait, not the 60 s
    assert machine.poll() is None and not any(p.exists() for p in state_files(state))
    machine.destroy()
    assert machine.poll().kind == "poweroff"  # SIGTERM, not a "suspended" exit


def test_a_suspend_never_overwrites_a_file_it_did_not_make(host, tmp_path):
    host.set(hang=True)
    machine, _ = boot(snapshot_backend(host, tmp_path), make_spec(tmp_path))
    time.sleep(0.5)
    kern = tmp_path / "w" / "saved.state.kern"
    kern.write_text("someone's")
    with pytest.raises(InfraError, match="saved.state.kern already exists"):
        machine.save(tmp_path / "w" / "saved.state")
    assert kern.read_text() == "someone's" and machine.poll() is None
    machine.destroy()
    assert not any(c[0] == "bhyvectl" and "--suspend" in c[1] for c in host.calls())


def test_a_bhyve_without_snapshots_skips_save_restore_with_the_reason(host, tmp_path):
    """GENERIC: neither usage text shows snapshot options. The scenario is skipped with the
    reason; were it driven anyway, bhyvectl would refuse --suspend (the fake's GENERIC mode)."""
    backend = make_backend(host, tmp_path)  # 14.1's GENERIC usage texts
    reason = ("bhyve on FreeBSD 14.1-RELEASE-p6 was built without snapshot support "
              "(BHYVE_SNAPSHOT: bhyve's usage explains no -r; bhyvectl's usage lists no "
              "--suspend)")
    assert backend.lacks("save-restore", "uefi") == reason
    guest, = load_guests(["refguest"])
    scenario, = select_scenarios(load_scenarios(), ["save-restore"])
    assert skip_reason(Case(scenario, guest, "uefi", "bhyve"), backend).endswith(reason)
    host.set(hang=True, snapshot=False)
    machine, _ = boot(backend, make_spec(tmp_path))
    time.sleep(0.5)
    with pytest.raises(InfraError, match="unrecognized option `--suspend="):
        machine.save(tmp_path / "w" / "saved.state", timeout=2)
    machine.destroy()


# nvram-persist's wrong-size vars file: bhyve's refusal is its exit at start ------------------
def scenario_vars_size() -> int:
    """The size nvram-persist's vars_size_refused hands the hypervisor."""
    scenario, = select_scenarios(load_scenarios(), ["nvram-persist"])
    return next(step.args["size"] for step in scenario.steps if step.kind == "vars_size_refused")


@pytest.mark.parametrize("size, accepted", [(scenario_vars_size(), False), (65537, True)])
def test_bhyve_refuses_a_vars_file_under_a_page_and_the_step_records_its_words(
        host, tmp_path, monkeypatch, size, accepted):
    """bootrom.c refuses a vars file under one page ("Invalid bootrom variable size N", exit
    4) but maps 65537 bytes as they are. The step sees bhyve's exit at start as the refusal
    (bhyve's start and resume only spawn a thread, so no exception comes), with its stderr."""
    import harness.runner as runner_module

    host.set(exits={"bhyve": [1, 1]}, console="login:")
    backend = make_backend(host, tmp_path)
    spec = make_spec(tmp_path)
    machine, console = boot(backend, spec)
    assert machine.wait_exit(10).kind == "poweroff"
    monkeypatch.setattr(runner_module, "driver_for", lambda *_: None)
    monkeypatch.setattr(runner_module, "family", lambda _name: None)
    monkeypatch.setattr(nvram, "REFUSAL_SECONDS", 5.0)

    def new_console(_case, new_machine, _log):
        reopen_console(backend, spec)
        return new_machine.open_console("com1")

    vm = SimpleNamespace(spec=spec, machine=machine, console=console, backend=backend,
                         case=SimpleNamespace(guest=SimpleNamespace(family="freebsd")),
                         log=SimpleNamespace(note=lambda _text: None), restarts=0,
                         runner=None)
    vm.runner = SimpleNamespace(restart=lambda v: Run.restart(
        SimpleNamespace(_console=new_console), v))
    recorded = {}
    ctx = SimpleNamespace(vm=vm, record=recorded.__setitem__)
    try:
        if accepted:
            with pytest.raises(GuestFailure, match="started the VM with a 65537-byte vars file "
                                                   "and it ended as poweroff"):
                nvram.vars_size_refused(ctx, {"size": size})
        else:
            nvram.vars_size_refused(ctx, {"size": size})
            assert recorded == {"hypervisor_refused": "bhyve: bhyve exited due to an error: "
                                                      f"Invalid bootrom variable size {size}"}
            assert vm.machine.poll().code == 4
    finally:
        vm.machine.destroy()
        vm.console.close()
    assert spec.vars_path.stat().st_size == 0  # never left half right


def test_only_a_failure_naming_the_size_counts_as_the_vars_files_refusal():
    from harness.steps.nvram import size_refusal
    assert size_refusal("bhyve exited 4: Invalid bootrom variable size 2048") == \
        "bhyve exited 4: Invalid bootrom variable size 2048"
    qemu = ("QEMU failed to start: ...; its log says:\nqemu-system-x86_64: -drive if=pflash: "
            "device /w/uefi-vars.fd: its size must be a non-zero multiple of 0x1000")
    assert "multiple of 0x1000" in size_refusal(qemu)
    pflash = "qemu-system-x86_64: device requires 540672 bytes, block backend provides 2048 bytes"
    assert size_refusal(pflash) == pflash
    with pytest.raises(InfraError, match="not over the vars file's size: .*bootrom not found"):
        size_refusal("bhyve exited 4: bootrom not found: /usr/local/share/uefi-firmware/X.fd")
