"""FreeBSD guests through the real QEMU backend, against a TEST DOUBLE of QEMU running FreeBSD.

This machine cannot download a FreeBSD image, so no FreeBSD guest is booted here. What runs
for real is everything of refvm's: `refvm run`, the QEMU backend's argv, QMP, the COM1 FIFOs
and COM2's socket, the Unix-shell driver (login without a password, the resizewin query, the
shell flavour, csh replaced by /bin/sh, the loader stop) and every scenario's steps with the
FreeBSD family's command lines, which a real shell (dash, tcsh, bash) parses and runs with real
dd, head, awk and sed on the scratch disks the harness checks. tests/fake_qemu_freebsd.py
stands in for qemu-system-x86_64 and plays FreeBSD's console from real transcripts; the FreeBSD
tools themselves (diskinfo, nvmecontrol, ifconfig, sha256, sysctl, nc, stty -f) are stand-ins
(tests/fake_freebsd_userland.py). Only simulated: the FreeBSD kernel and its userland.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from tests.qemu_doubles import REPO, fake_qemu, properties, run_through_double, start_double

FAKE = REPO / "tests" / "fake_qemu_freebsd.py"


@pytest.fixture
def freebsd(tmp_path):
    """(run, guest file) for a FreeBSD guest whose 'image' is a small file, booted by the
    double. ``run(env, **guest_console)`` returns (exit status, junit root, double's log)."""
    image = tmp_path / "freebsd.raw"
    image.write_bytes(b"\0" * 65536)
    qemu = fake_qemu(tmp_path, FAKE)

    def run(env=None, firmware="uefi", console_extra="", timeout=120, scenarios=("boot",)):
        guest = tmp_path / "freebsd-double.yaml"
        guest.write_text(
            f"name: freebsd-double\nfamily: freebsd\nimage: {{path: {image}, sha256: "
            f"{hashlib.sha256(image.read_bytes()).hexdigest()}}}\nfirmware: [uefi, csm]\n"
            f"devices: [virtio-blk, nvme, virtio-net, uart]\n"
            f"console:\n  user: root\n  boot_timeout: 20\n{console_extra}")
        return run_through_double(tmp_path, guest, qemu, "FAKE_FREEBSD_LOG", firmware, env,
                                  timeout=timeout, scenarios=scenarios)

    return run


def typed(said) -> list[str]:
    return [s["line"] for s in said if "line" in s]


@pytest.mark.parametrize("firmware, reported", [("uefi", "UEFI"), ("csm", "BIOS")])
def test_freebsd_14_boot_scenario_passes_through_the_qemu_backend(freebsd, firmware, reported):
    proc, root, said = freebsd(firmware=firmware)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    props = properties(root)
    assert props["guest_firmware"] == reported  # sysctl -n machdep.bootmethod
    assert props["exit"] == "poweroff"  # shutdown -p now, seen as QMP's guest-shutdown
    answer, = [s for s in said if "resizewin_answer" in s]
    assert answer["resizewin_answer"] == "\x1b[24;80R"
    assert answer["answered_after"] < 1.0  # unanswered, resizewin waits ~2 s per login
    lines = typed(said)
    assert "=$0=__" in lines[0]  # the shell asked for its own name
    assert "exec /bin/sh" not in lines  # sh is FreeBSD 14's root shell: nothing to replace
    assert any("shutdown -p now" in line for line in lines)


def test_freebsd_13_csh_login_shell_is_replaced_by_sh(freebsd):
    """A real tcsh (FreeBSD's /bin/csh) as root's login shell: asked by name, replaced by
    /bin/sh, asked again (``$SHELL`` would still say /bin/csh there), then every command runs
    framed for sh: tcsh would read the sh framing's ``$?__`` as a variable test and never end."""
    proc, root, said = freebsd(env={"FAKE_FREEBSD_SHELL": "csh", "FAKE_FREEBSD_RELEASE": "13.2"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    lines = typed(said)
    assert "=$0=__" in lines[0] and lines[1] == "exec /bin/sh" and "=$0=__" in lines[2]
    assert all("${status}" not in line for line in lines)


def test_bash_as_root_shell_runs_the_boot_scenario(freebsd):
    """bash (a package on FreeBSD, some users' root shell): its bracketed-paste switches around
    every prompt do not disturb the prompt, the framing or the output."""
    proc, _, said = freebsd(env={"FAKE_FREEBSD_SHELL": "bash"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "exec /bin/sh" not in typed(said)


def test_a_plain_images_loader_is_stopped_to_use_the_serial_console(freebsd):
    proc, _, said = freebsd(env={"FAKE_FREEBSD_LOADER": "menu"},
                            console_extra="  stop_loader: true\n")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert {"loader_key": "3"} in said  # "3. Escape to loader prompt"
    assert [s["loader"] for s in said if "loader" in s] == ["set console=comconsole", "boot"]


def test_without_the_loader_stop_such_an_image_is_silent_and_fails_at_its_timeout(freebsd):
    proc, root, _ = freebsd(env={"FAKE_FREEBSD_LOADER": "menu"})
    assert proc.returncode == 1
    case, = root.iter("testcase")
    assert "no login prompt within 20s" in (case.find("failure").get("message") or "")


def test_a_freebsd_panic_fails_the_case_at_once_quoting_it(freebsd):
    proc, root, _ = freebsd(env={"FAKE_FREEBSD_PANIC": "1"})
    assert proc.returncode == 1
    case, = root.iter("testcase")
    failure = case.find("failure")
    text = (failure.get("message") or "") + (failure.text or "")
    assert "panic: vm_fault_lookup: fault on nofault entry" in text
    assert "KDB: stack backtrace" in text  # the lines after it are quoted too
    assert properties(root)["category"] == "guest"


def test_csh_frames_status_with_status_and_sh_framing_would_never_end(tmp_path, monkeypatch):
    """Without the switch to /bin/sh, the driver frames commands for csh (``${status}``); the
    sh framing (``$?__``) is what tcsh reads as "is variable __ set", so its marker never
    comes (the wait times out)."""
    from harness.errors import ConsoleTimeout
    from harness.families import family
    from harness.guestos import UnixShell
    from harness.model import DEFAULT_LOGIN_PROMPT, DEFAULT_SHELL_PROMPT, ConsoleSpec

    monkeypatch.setenv("FAKE_FREEBSD_SHELL", "csh")
    machine, console, log = start_double(tmp_path, FAKE, "freebsd")
    try:
        machine.resume()
        shell = UnixShell(console, family("freebsd"), ConsoleSpec(
            DEFAULT_LOGIN_PROMPT, "root", "", DEFAULT_SHELL_PROMPT, 20.0, "Login incorrect"))
        shell._wait_for_login_prompt(__import__("time").monotonic() + 20, 20, 10)
        shell._log_in()
        assert shell._ask_flavour() == "csh"
        shell.flavour = "csh"
        result = shell.run("sh -c 'exit 3'", timeout=10)
        assert result.status == 3
        assert shell.run("no-such-tool", timeout=10).output == "no-such-tool: Command not found."
        shell.flavour = "sh"  # the old framing, in a csh
        with pytest.raises(ConsoleTimeout):
            shell.run("uname -s", timeout=2)
    finally:
        log.close()
        machine.destroy()


def test_plan_for_a_freebsd_guest_on_bhyve_follows_bhyveload_8_and_bhyve_8():
    """bhyveload(8): ``-c cons-dev -m mem-size -d disk-path vmname`` with bhyve's own -m, on
    the VM's private copy of the image (the cached image is never written); then bhyve(8)
    with no bootrom. UEFI: bhyve's ``-l bootrom,CODE,VARS`` on a private vars copy."""
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "plan", "--backend", "bhyve",
                           "--guest", "freebsd-14.3", "--scenario", "boot", "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    cases = {c["id"]: c for c in json.loads(proc.stdout)["cases"]}
    load = cases["boot[freebsd-14.3-bhyveload-bhyve]"]["commands"]
    destroy, copy, loader, bhyve = load
    assert destroy[1:] == [f"--vm={bhyve[-1]}", "--destroy"]
    assert copy[0] == "cp" and copy[1].endswith(
        "ec0f5a4bbe63aa50a725d9fee0f1931f850e9a21cbebdadb991df00f168d6805.raw")
    private = copy[2]
    assert loader[0].endswith("/bhyveload")
    assert loader[1:] == ["-c", loader[2], "-m", "1024M", "-d", private, bhyve[-1]]
    assert loader[2].startswith("/dev/nmdm") and loader[2].endswith("A")
    assert bhyve[bhyve.index("-m") + 1] == "1024M" and f"2,virtio-blk,{private}" in bhyve
    assert not any(a.startswith("bootrom,") for a in bhyve)
    assert f"com1,{loader[2]}" in bhyve  # the loader and the kernel share COM1
    uefi = cases["boot[freebsd-14.3-uefi-bhyve]"]["commands"][-1]
    bootrom = next(a for a in uefi if a.startswith("bootrom,"))
    code, vars_copy = bootrom.split(",")[1:]
    assert code.endswith("BHYVE_UEFI_CODE.fd") and vars_copy.endswith("/uefi-vars.fd")


@pytest.mark.parametrize("nvme_driver", ["nvd", "nda"])
def test_freebsd_device_command_sets_move_and_check_real_data(freebsd, nvme_driver):
    """Every device scenario that runs on refguest, with the FreeBSD family's command lines run
    by a real sh: the scratch disks as /dev/vtbdN and nvdN or ndaN (``hw.nvme.use_nvd``), data
    written by the host read back and the guest's writes found in the image files, the
    read-only disk refusing; the NVMe identity from ``nvmecontrol identify``; 8 MiB each way
    over TCP on vtnet0; 64 KiB each way on COM2 as /dev/cuau1."""
    proc, root, _ = freebsd(env={"FAKE_FREEBSD_NVME": nvme_driver}, timeout=300,
                            scenarios=("virtio-blk", "nvme", "virtio-net", "uart"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    blk = properties(root, "virtio-blk")
    assert blk["scratch_device"] == "/dev/vtbd1" and blk["locked_device"] == "/dev/vtbd2"
    assert int(blk["scratch_verified_regions"]) >= 3
    assert "Read-only file system" in blk["locked_write_refused"]
    nvme = properties(root, "nvme")
    assert {nvme["ns512_device"], nvme["ns4k_device"]} == {f"/dev/{nvme_driver}0",
                                                           f"/dev/{nvme_driver}1"}
    assert nvme["ns512_model"] == "QEMU NVMe Ctrl" and nvme["ns4k_serial"] == "RVNVME-4K"
    net = properties(root, "virtio-net")
    assert net["net0_interface"] == "vtnet0" and net["net0_address"] == "10.0.2.15"
    assert int(net["net0_guest_to_host_bytes"]) == int(net["net0_host_to_guest_bytes"]) == 8 << 20
    uart = properties(root, "uart")
    assert uart["data_line"].startswith("/dev/cuau1 115200 8N1")
    assert int(uart["data_guest_to_host_bytes"]) == int(uart["data_host_to_guest_bytes"]) == 65536


def test_plan_for_a_freebsd_guest_on_libvirts_bhyve_driver_prints_its_domain_xml():
    """`refvm plan --backend libvirt` with a bhyve:// URI prints the bhyve driver's domain XML
    for each firmware even where no such host can be reached (this Linux machine): facts
    assumed, and said so. UEFI: bhyve's code ROM read-only plus a per-VM vars file made from
    the template; CSM: the CSM ROM alone; bhyveload: no loader at all (the driver then runs
    bhyveload on the first disk, drvbhyve). The disk is the VM's private copy of the image."""
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "plan", "--backend", "libvirt",
                           "--libvirt-uri", "bhyve:///system", "--guest", "freebsd-14.3",
                           "--scenario", "boot", "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    if sys.platform == "linux":
        assert "not reached" in plan["backend"] and "assumes libvirt 11.9.0" in plan["backend"]
    domains = {c["id"]: ET.fromstring(c["details"]) for c in plan["cases"]}
    uefi = domains["boot[freebsd-14.3-uefi-libvirt]"]
    assert uefi.get("type") == "bhyve"
    loader, nvram = uefi.find("os/loader"), uefi.find("os/nvram")
    assert loader.get("readonly") == "yes" and loader.text.endswith("BHYVE_UEFI_CODE.fd")
    assert nvram.get("template").endswith("BHYVE_UEFI_VARS.fd")
    assert nvram.text.endswith("/uefi-vars.fd")
    csm = domains["boot[freebsd-14.3-csm-libvirt]"]
    assert csm.find("os/loader").text.endswith("BHYVE_UEFI_CSM.fd")
    assert csm.find("os/nvram") is None
    load = domains["boot[freebsd-14.3-bhyveload-libvirt]"]
    assert load.find("os/loader") is None and load.find("os/type").text == "hvm"
    for domain in domains.values():
        disk, = domain.findall("devices/disk")
        assert "/private-0-ec0f5a4b" in disk.find("source").get("file")
        assert domain.find("devices/serial").get("type") == "nmdm"


def test_a_freebsd_image_without_dhcp_at_boot_gets_its_lease_from_dhclient(freebsd):
    """An image whose rc.conf leases nothing: the harness runs the family's nic_dhcp, which
    finds no address and no dhclient running and starts dhclient(8) on vtnet0."""
    proc, root, said = freebsd(env={"FAKE_FREEBSD_NODHCP": "1"}, scenarios=("virtio-net",))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    net = properties(root, "virtio-net")
    assert net["net0_dhcp"] == "dhclient" and net["net0_address"] == "10.0.2.15"
    assert any("dhclient" in line for line in typed(said))


MACHINE_CASES = ["vcpus-8[freebsd-double-uefi-qemu]", "vcpus-4[freebsd-double-csm-qemu]",
                 "clock-utc[freebsd-double-uefi-qemu]", "clock-localtime[freebsd-double-csm-qemu]",
                 "reboot[freebsd-double-csm-qemu]", "nvram-persist[freebsd-double-uefi-qemu]"]


def test_the_machine_scenarios_run_the_freebsd_commands_through_the_qemu_backend(tmp_path):
    """vcpus, clock, reboot and nvram-persist through `refvm run` and the real QEMU backend,
    the FreeBSD family's commands run by a real sh against the double's machine (simulated:
    no FreeBSD kernel). The topology comes from the kernel's FreeBSD/SMP line and kern.smp.*;
    every vCPU's kern.cp_times grew because cpuset(1) pinned real work to it; the RTC read
    through debug.clock_do_io holds UTC or the local time of the run's zone (five and a half
    hours off UTC); `shutdown -r now` three times, each a QMP RESET and a new kern.boottime;
    efivar(8) and efibootmgr(8) write the vars file (read back on the host with
    virt-firmware), the variable survives a restart and is absent from a fresh vars file, and
    a vars file of the wrong size is refused with QEMU's words. Not played by the double:
    save-restore and queue-depth (see its docstring; their commands are run below)."""
    image = tmp_path / "freebsd.raw"
    image.write_bytes(b"\0" * 65536)
    guest = tmp_path / "freebsd-double.yaml"
    guest.write_text(
        f"name: freebsd-double\nfamily: freebsd\nimage: {{path: {image}, sha256: "
        f"{hashlib.sha256(image.read_bytes()).hexdigest()}}}\nfirmware: [uefi, csm]\n"
        f"devices: [virtio-blk, nvme, virtio-net, uart]\nconsole:\n  user: root\n"
        f"  boot_timeout: 20\n")
    junit, log = tmp_path / "junit.xml", tmp_path / "double.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--guest", str(guest),
         *(a for s in ("vcpus", "clock", "reboot", "nvram-persist") for a in ("--scenario", s)),
         "--accel", "tcg", "--qemu-binary", str(fake_qemu(tmp_path, FAKE)),
         "--artifacts", str(tmp_path / "a"), "--junitxml", str(junit), "-p", "no:cacheprovider",
         "-k", " or ".join(f"({c.split('[')[0]} and {c.split('-')[-2]})"
                           for c in MACHINE_CASES)],
        cwd=REPO, capture_output=True, text=True, timeout=400,
        env=dict(__import__("os").environ, TZ="Asia/Kolkata", FAKE_FREEBSD_LOG=str(log)))
    root = ET.parse(junit).getroot()
    ran = {c.get("name"): {p.get("name"): p.get("value") for p in c.iter("property")}
           for c in root.iter("testcase") if c.find("skipped") is None}
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert set(ran) == set(MACHINE_CASES)
    eight = ran["vcpus-8[freebsd-double-uefi-qemu]"]
    assert eight["vcpus_seen"] == "8"
    assert eight["topology_seen"] == "1 sockets x 4 cores x 2 threads"
    assert int(eight["busy_ticks_min"]) > 0
    four = ran["vcpus-4[freebsd-double-csm-qemu]"]
    assert four["topology_seen"] == "2 sockets x 2 cores x 1 threads"
    assert abs(int(ran["clock-utc[freebsd-double-uefi-qemu]"]["rtc_minus_utc_seconds"])) <= 2
    assert abs(int(ran["clock-localtime[freebsd-double-csm-qemu]"]["rtc_minus_utc_seconds"])
               - 19800) <= 2
    reboot = ran["reboot[freebsd-double-csm-qemu]"]
    assert reboot["reboots"] == "3" and len(set(reboot["boot_ids"].split())) == 4
    assert all(n == "1" for n in reboot["machine_resets"].split())
    assert reboot["scratch_verified_regions"] == "1"
    nvram = ran["nvram-persist[freebsd-double-uefi-qemu]"]
    assert nvram["efi_var_after_restart"] == "refvm-nvram-1" and nvram["efi_var_fresh"] == "absent"
    assert nvram["boot_current_after_restart"] == nvram["boot_next"] == "Boot0001"
    assert "multiple of 0x1000" in nvram["hypervisor_refused"]
    typed = [json.loads(line).get("line", "") for line in log.read_text().splitlines()]
    assert any("efibootmgr -n -b 0001" in line for line in typed)
    assert any("cpuset -l $i" in line for line in typed)


def test_the_save_restore_and_queue_commands_move_real_data_in_the_doubles_shell(tmp_path):
    """What the double cannot play as a scenario (a save carried into a new process; a device
    queue) still runs as the FreeBSD family's command lines in its real sh: the counter counts,
    the kept file's hash is stable; concurrent readers of /dev/vtbd1 read the host's bytes
    slice by slice, concurrent writers' hashes are what lands in the image file; the NVMe
    queue size is dev.nvme.0.ioq0.num_entries, vtblk's is said to be not exported."""
    import os
    import time

    from harness.backends.qemu.backend import QemuBackend
    from harness.console.log import ConsoleLog
    from harness.console.serial import SerialConsole
    from harness.families import family
    from harness.guestos import UnixShell
    from harness.model import DEFAULT_LOGIN_PROMPT, DEFAULT_SHELL_PROMPT, ConsoleSpec
    from harness.vmspec import Disk, SerialPort, VmSpec

    boot, scratch, nvme = (tmp_path / name for name in ("boot.raw", "scratch.raw", "nvme.raw"))
    boot.write_bytes(b"\0" * 4096)
    scratch.write_bytes(os.urandom(256 << 10))
    nvme.write_bytes(b"\0" * (256 << 10))
    spec = VmSpec(name="refvm-0123abcd-2", memory_mib=256, cpus=2, firmware="csm",
                  uuid="00000000-0000-4000-8000-000000000002", utc_clock=True,
                  workdir=tmp_path / "w", logdir=tmp_path / "logs",
                  disks=(Disk(boot, ephemeral=True, boot=True), Disk(scratch, serial="Q1"),
                         Disk(nvme, bus="nvme", serial="Q2")),
                  serials=(SerialPort("com1"),))
    machine = QemuBackend(accel="tcg", binary=str(fake_qemu(tmp_path, FAKE))).start(spec)
    log = ConsoleLog(tmp_path / "console.log")
    fam = family("freebsd")
    try:
        console = SerialConsole(machine.open_console("com1"), log, fam.failure_patterns)
        machine.resume()
        shell = UnixShell(console, fam, ConsoleSpec(
            DEFAULT_LOGIN_PROMPT, "root", "", DEFAULT_SHELL_PROMPT, 20.0, "Login incorrect"))
        shell.reach_shell(30)

        def op(operation, **values):
            result = shell.run(fam.device_command(operation, **values), timeout=120)
            assert result.status == 0, result.output
            return result.output

        jobs, count, block = 16, 2, 4096
        out = op("queue_read", dev="/dev/vtbd1", name="vtbd1", jobs=jobs, count=count,
                 block=block)
        data = scratch.read_bytes()
        want = [hashlib.sha256(data[i * count * block:(i + 1) * count * block]).hexdigest()
                for i in range(jobs)]
        lines = out.split()
        assert lines[:1] == ["inflight_max"] and 0 <= int(lines[1]) <= jobs
        assert lines[2:] == want
        out = op("queue_write", dev="/dev/nvd0", name="nvd0", jobs=jobs, count=count,
                 block=block).split()
        written = nvme.read_bytes()
        assert out[2:] == [hashlib.sha256(written[i * count * block:(i + 1) * count * block])
                           .hexdigest() for i in range(jobs)]
        assert len(set(out[2:])) == jobs  # random data, one slice per job
        assert op("queue_size", name="nvd0").split() == ["256"]
        assert op("queue_size", name="vtbd1").strip() == "not exported by vtblk(4)"
        # last: the counter's loop stays in the background (the queue ops wait for theirs)
        op("counter_start")
        time.sleep(2.5)
        first = int(op("counter_read").split()[-1])
        time.sleep(1.5)
        assert int(op("counter_read").split()[-1]) > first >= 1
        kept = op("keep_write").split()[-1]
        assert len(kept) == 64 and op("keep_sha").split()[-1] == kept
    finally:
        log.close()
        machine.destroy()


def test_bhyve_plans_the_machine_scenarios_for_a_freebsd_guest():
    """bhyve(8) for FreeBSD guests: -u only where the RTC holds UTC; -c with the vCPU count;
    the bootrom's own vars file for nvram-persist; bhyveload before bhyve for a reboot case
    (run again at each relaunch: tests/test_bhyve_lifecycle.py)."""
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "plan", "--backend", "bhyve",
                           "--guest", "freebsd-14.3", "--scenario", "clock", "--scenario",
                           "reboot", "--scenario", "nvram-persist", "--scenario", "vcpus-2",
                           "--json"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    cases = {c["id"]: c for c in json.loads(proc.stdout)["cases"]}
    bhyve = {name: case["commands"][-1] for name, case in cases.items() if case.get("commands")}
    assert "-u" in bhyve["clock-utc[freebsd-14.3-uefi-bhyve]"]
    assert "-u" not in bhyve["clock-localtime[freebsd-14.3-uefi-bhyve]"]
    two = bhyve["vcpus-2[freebsd-14.3-bhyveload-bhyve]"]
    assert two[two.index("-c") + 1] == "2"  # no topology asked: the count alone
    bootrom = next(a for a in bhyve["nvram-persist[freebsd-14.3-uefi-bhyve]"]
                   if a.startswith("bootrom,"))
    assert bootrom.split(",")[2].endswith("/uefi-vars.fd")
    loader = cases["reboot[freebsd-14.3-bhyveload-bhyve]"]["commands"][-2]
    assert loader[0].endswith("/bhyveload")


def test_the_topology_step_reads_freebsds_summary_line_and_linuxs_per_cpu_lines():
    from harness.errors import GuestFailure
    from harness.steps.cpus import topology_seen

    assert topology_seen("sockets 2 cores 2 threads 1\n") == (2, 2, 1)
    assert topology_seen("0 0 0\n1 0 0\n2 0 1\n3 0 1\n") == (1, 2, 2)
    with pytest.raises(GuestFailure):
        topology_seen("sockets: no FreeBSD/SMP line in /var/run/dmesg.boot\n")


def test_the_doubles_cp_times_count_only_work_pinned_to_each_vcpu(tmp_path):
    """kern.cp_times in the double is not free: a vCPU no cpuset(1) work ran on stays idle."""
    import os

    userland = REPO / "tests" / "fake_freebsd_userland.py"
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"cpu": {"cpus": 2, "sockets": 1, "cores": 2, "threads": 1},
                                 "boottime": __import__("time").time() - 10,
                                 "cp_ticks": str(tmp_path / "ticks.json"), "disks": [],
                                 "bootmethod": "BIOS", "release": "14.3",
                                 "nvme_driver": "nvd"}))
    env = dict(os.environ, FAKE_FREEBSD_STATE=str(state))

    def tool(*args):
        return subprocess.run(["/usr/bin/python3", str(userland), *args], env=env,
                              capture_output=True, text=True, timeout=60)

    assert tool("cpuset", "-l", "1", "sh", "-c", "e=$(($(date +%s) + 2)); "
                "while [ $(date +%s) -lt $e ]; do :; done").returncode == 0
    times = [int(n) for n in tool("sysctl", "-n", "kern.cp_times").stdout.split()]
    assert times[0] == 0 and times[5] > 10  # vCPU 0 never ran it; vCPU 1 busy up to 2 s (127 Hz)
    refused = tool("cpuset", "-l", "2", "true")
    assert refused.returncode == 1 and "Resource deadlock avoided" in refused.stderr


def test_under_no_reboot_a_freebsd_reboot_ends_the_double_as_it_ends_qemu(tmp_path):
    """A VM that may not reboot (QEMU's -no-reboot: every scenario without needs: [reboot]):
    `shutdown -r now` returns 0 at once (shutdown(8) forks), then the machine is gone with
    QMP's SHUTDOWN reason guest-reset, which the backend reports as a reboot."""
    from harness.families import family
    from harness.guestos import UnixShell
    from harness.model import DEFAULT_LOGIN_PROMPT, DEFAULT_SHELL_PROMPT, ConsoleSpec

    machine, console, log = start_double(tmp_path, FAKE, "freebsd")
    try:
        machine.resume()
        shell = UnixShell(console, family("freebsd"), ConsoleSpec(
            DEFAULT_LOGIN_PROMPT, "root", "", DEFAULT_SHELL_PROMPT, 20.0, "Login incorrect"))
        shell.reach_shell(30)
        result = shell.run(family("freebsd").device_command("reboot"), timeout=10)
        assert result.status == 0 and "Shutdown NOW!" in result.output
        info = machine.wait_exit(15)
        assert info is not None and info.kind == "reboot" and "guest-reset" in info.detail
    finally:
        log.close()
        machine.destroy()


def test_save_restore_is_not_played_by_the_double_and_says_so_at_once(freebsd):
    """The double has no machine state to write: QMP's migrate fails with its reason, and the
    case is an infrastructure error in seconds, never a pass (and never a 300 s wait)."""
    proc, root, _ = freebsd(firmware="csm", scenarios=("save-restore",))
    assert proc.returncode == 1
    props = properties(root)
    assert props["category"] == "infra" and "no guest state to save" in props["reason"]
