"""Windows guests through the real QEMU backend, against a TEST DOUBLE of QEMU running Windows
Server 2022 with EMS on COM1.

The evaluation ISO cannot be downloaded on this machine, so no Windows guest is booted here.
What runs for real is everything of refvm's: `refvm run`, the QEMU backend's argv, QMP and COM1
FIFOs, the SAC driver (harness/guestos/sac.py: SAC's start and CMD event, the cmd channel, the
login, a swallowed first line, exit status read on its own line) and the boot scenario's steps
with the Windows family's commands. tests/fake_qemu_windows.py stands in for
qemu-system-x86_64 and plays SAC and cmd.exe with their real strings (see its docstring).
Only simulated: Windows itself.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from tests.qemu_doubles import REPO, fake_qemu, properties, run_through_double, start_double

FAKE = REPO / "tests" / "fake_qemu_windows.py"
PASSWORD = "Rv-Adm1n-7f3c9e21"
QUICK_LOGIN = {"FAKE_WINDOWS_SWALLOW": "0"}  # no swallowed line (tested by the boot test)


@pytest.fixture
def windows(tmp_path):
    """``run(env, firmware, password)`` -> (process, junit root, what the double was asked):
    the boot scenario for a Windows guest file pointing at an installed image (a small file
    here, as a user's own golden image would be)."""
    image = tmp_path / "windows.raw"
    image.write_bytes(b"\0" * 65536)
    qemu = fake_qemu(tmp_path, FAKE)

    def run(env=None, firmware="uefi", password=PASSWORD, timeout=120, scenarios=("boot",)):
        guest = tmp_path / "windows-double.yaml"
        guest.write_text(
            f"name: windows-double\nfamily: windows\nimage: {{path: {image}, sha256: "
            f"{hashlib.sha256(image.read_bytes()).hexdigest()}}}\nfirmware: [uefi, csm]\n"
            f"devices: [virtio-blk, nvme, virtio-net, uart]\n"
            f"utc_clock: false\nconsole:\n  user: Administrator\n  password: '{password}'\n"
            f"  boot_timeout: 30\n")
        return run_through_double(tmp_path, guest, qemu, "FAKE_WINDOWS_LOG", firmware,
                                  dict(env or {}, FAKE_WINDOWS_PASSWORD=PASSWORD),
                                  scenarios=scenarios, timeout=timeout)

    return run


@pytest.fixture
def sac(tmp_path, monkeypatch, request):
    """The SAC driver logged in to the double's cmd.exe (a small CSM VM of the real QEMU
    backend; indirect parameters go to start_double); destroyed after the test, whose console
    log must not hold the password."""
    from harness.families import family
    from harness.guestos import SacConsole
    from harness.model import ConsoleSpec

    monkeypatch.setenv("FAKE_WINDOWS_PASSWORD", PASSWORD)
    machine, console, log = start_double(tmp_path, FAKE, "windows", secrets=[PASSWORD],
                                         **getattr(request, "param", {}))
    try:
        machine.resume()
        driver = SacConsole(console, family("windows"), ConsoleSpec(
            "", "Administrator", PASSWORD, "", 20.0, "", type_delay=0.001))
        driver.reach_shell(20)
        yield driver
    finally:
        log.close()
        machine.destroy()
    assert PASSWORD not in (tmp_path / "console.log").read_text()  # masked in the log


def failure_text(root) -> str:
    """The failure of the one test case under ``root`` (or of ``root``, a test case)."""
    case, = [root] if root.tag == "testcase" else root.iter("testcase")
    failure = case.find("failure")
    return (failure.get("message") or "") + (failure.text or "")


def assert_password_nowhere(tmp_path: Path, *texts: str) -> None:
    """Neither the console log, the hypervisor's log, the results nor refvm's own output
    holds the administrator password."""
    for text in texts:
        assert PASSWORD not in text
    files = [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()]
    files.append(tmp_path / "junit.xml")
    assert any(p.name == "console.log" for p in files)
    for path in files:
        assert PASSWORD.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("firmware, reported", [("uefi", "UEFI"), ("csm", "BIOS")])
def test_windows_boot_scenario_passes_over_sac_through_the_qemu_backend(
        windows, tmp_path, firmware, reported):
    proc, root, said = windows(firmware=firmware)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    props = properties(root)
    assert props["guest_firmware"] == reported  # PEFirmwareType through powershell
    assert props["exit"] == "poweroff"  # shutdown /s /t 0, seen as QMP's guest-shutdown
    assert [s["sac"] for s in said if "sac" in s] == ["cmd", "ch -sn Cmd0001"]
    login, = [s for s in said if "user" in s]
    assert login == {"user": "Administrator", "domain": "", "password_ok": True}
    swallowed, = [s["swallowed"] for s in said if "swallowed" in s]
    assert swallowed.startswith("echo __RV^R")  # the probe was typed again after it
    lines = [s["cmd"] for s in said if "cmd" in s]
    # The exit status is read by a line of its own, after the command has returned.
    exit3 = next(i for i, line in enumerate(lines) if line.endswith("& cmd /c exit 3"))
    assert "%ERRORLEVEL%" not in lines[exit3]
    assert lines[exit3 + 1].startswith("echo __RV^E") and lines[exit3 + 1].endswith(
        ":%ERRORLEVEL%__")
    assert any(line.endswith("& shutdown /s /t 0") for line in lines)
    assert_password_nowhere(tmp_path, proc.stdout, proc.stderr)


def test_a_fresh_install_boots_twice_and_an_early_cmd_is_retried(windows, tmp_path):
    proc, _, said = windows(env={"FAKE_WINDOWS_FRESH": "1", "FAKE_WINDOWS_SLOW_CMD": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert {"sac": "reboot after specialize"} in said
    assert [s["sac"] for s in said if "sac" in s][1:] == ["cmd", "cmd", "ch -sn Cmd0001"]
    log = next((tmp_path / "artifacts").rglob("console.log")).read_text()
    assert log.count("Computer is booting, SAC started and initialized.") == 2
    assert "has not yet registered" in log and "cmd not available yet (attempt 1)" in log


def test_a_bugcheck_fails_the_case_at_once_quoting_the_stop_code(windows, tmp_path):
    started = time.monotonic()
    proc, root, _ = windows(env={"FAKE_WINDOWS_BUGCHECK": "1"})
    assert proc.returncode == 1
    text = failure_text(root)
    assert '<INSTANCE CLASSNAME="BLUESCREEN">' in text and '"0xD1"' in text
    assert properties(root)["category"] == "guest"
    assert time.monotonic() - started < 60  # not the command's 60 s timeout, plus boot
    assert_password_nowhere(tmp_path, proc.stdout, proc.stderr)


def test_a_wrong_password_is_a_login_failure_in_the_guests_words(windows, tmp_path):
    proc, root, said = windows(password="not-the-" + PASSWORD[::-1])
    assert proc.returncode == 1
    text = failure_text(root)
    assert "rejected the login of 'Administrator'" in text and "Unable to authenticate" in text
    assert [s["password_ok"] for s in said if "password_ok" in s] == [False]
    assert PASSWORD[::-1] not in text  # the wrong password is masked too


def test_errorlevel_on_the_command_line_is_stale_and_the_driver_reads_it_after(sac):
    """cmd.exe expands ``%ERRORLEVEL%`` when it parses a line: on the command's own line it is
    the status of the command before. The driver's status is the command's own."""
    result = sac.run("cmd /c exit 3& echo seen %ERRORLEVEL%", timeout=10)
    assert result.output == "seen 0"  # expanded before `cmd /c exit 3` ran
    assert result.status == 0  # the last command's (echo)
    assert sac.run("cmd /c exit 3", timeout=10).status == 3
    missing = sac.run("no-such-tool", timeout=10)
    assert missing.status == 9009 and "is not recognized" in missing.output


def test_windows_device_scripts_move_and_check_real_data_through_sac(windows, tmp_path):
    """The device scenarios with the Windows family's PowerShell scripts, typed through the SAC
    driver into the double's cmd.exe, whose stand-ins (tests/fake_windows_powershell.py, only
    simulated PowerShell) act on real data: the scratch images as \\\\.\\PhysicalDriveN (the
    guest's writes found in the image files after power-off, the read-only disk refusing),
    NVMe identity from the argv, 8 MiB each way over TCP to the host, 64 KiB each way on
    COM2's socket."""
    proc, root, said = windows(scenarios=("virtio-blk", "nvme", "virtio-net", "uart"),
                               env=QUICK_LOGIN, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    blk = properties(root, "virtio-blk")
    assert blk["scratch_device"] == "\\\\.\\PhysicalDrive1"
    assert blk["locked_device"] == "\\\\.\\PhysicalDrive2"
    assert int(blk["scratch_verified_regions"]) == 3  # found in the image file by the host
    assert "IOException" in blk["locked_write_refused"]
    nvme = properties(root, "nvme")
    assert nvme["ns512_model"] == "QEMU NVMe Ctrl" and nvme["ns4k_serial"] == "RVNVME-4K"
    assert int(nvme["ns4k_verified_regions"]) == 2
    net = properties(root, "virtio-net")
    assert net["net0_interface"] == "Ethernet" and net["net0_address"] == "10.0.2.15"
    assert int(net["net0_guest_to_host_bytes"]) == int(net["net0_host_to_guest_bytes"]) == 8 << 20
    uart = properties(root, "uart")
    assert int(uart["data_guest_to_host_bytes"]) == int(uart["data_host_to_guest_bytes"]) == 65536
    ran = [s for s in said if "powershell" in s]
    assert ran and all(s["status"] in (0, 1) for s in ran)
    # Only the read-only disk's probe failed: no script went unrecognised.
    assert [s["powershell"] for s in ran if s["status"]] == ["disk_write_probe"]
    assert {s["powershell"] for s in ran} == {
        "disk_by_serial", "disk_size", "disk_sector_size", "disk_read_sha256",
        "disk_write_random", "disk_write_probe", "nvme_identity", "nic_by_mac", "nic_state",
        "nic_ipv4", "tcp_send", "tcp_receive", "uart_receive_start", "uart_receive_finish",
        "uart_send"}
    assert_password_nowhere(tmp_path, proc.stdout, proc.stderr)


def test_windows_machine_scenarios_run_through_sac(windows, tmp_path):
    """vCPU count, topology and busy time per CPU, the local-time RTC, three guest reboots
    (shutdown /r: QMP's RESET each time, SAC and the login again, a new boot id) with the
    scratch disk's writes kept, a UEFI variable kept in the vars file over restarts (and not
    in a fresh one), through the double (simulated Windows: the stand-ins of
    tests/fake_windows_powershell.py answer from QEMU's argv and the host's clock)."""
    proc, root, said = windows(scenarios=("vcpus-4", "clock-localtime", "reboot",
                                          "nvram-persist"), env=QUICK_LOGIN, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    vcpus = properties(root, "vcpus-4")
    assert vcpus["vcpus_seen"] == "4"
    assert vcpus["topology_seen"] == "2 sockets x 2 cores x 1 threads"
    assert int(vcpus["busy_ticks_min"]) >= 5 * 10_000_000
    clock = properties(root, "clock-localtime")
    assert clock["rtc_mode"] == "local time" and float(clock["rtc_off_seconds"]) <= 2
    reboot = properties(root, "reboot")
    assert reboot["machine_resets"] == "1 1 1" and len(set(reboot["boot_ids"].split())) == 4
    assert reboot["scratch_verified_regions"] == "1"
    assert sum(1 for s in said if s.get("reboot")) == 3
    # UEFI variables through the firmware API scripts, in the VM's vars file (virt-firmware)
    nvram = properties(root, "nvram-persist")
    assert nvram["efi_var_after_restart"] == "refvm-nvram-1"
    assert nvram["boot_next"] == nvram["boot_current_after_restart"] == "Boot0004"
    assert nvram["efi_var_fresh"] == "absent" and "540672 bytes" in nvram["hypervisor_refused"]
    # one login per boot: vcpus-4, clock-localtime, reboot's first and three more, nvram's 3
    assert [s["sac"] for s in said if "sac" in s].count("ch -sn Cmd0001") == 1 + 1 + 4 + 3


@pytest.fixture
def reboot_at_once(monkeypatch):
    monkeypatch.setenv("FAKE_WINDOWS_REBOOT_AFTER", "0")  # cmd.exe answers nothing more


@pytest.mark.parametrize("sac", [{"survive_reboot": True}], indirect=True, ids=["resets"])
def test_a_reboot_before_the_status_line_is_answered_is_told_apart(reboot_at_once, sac):
    """When Windows goes down before cmd.exe answers the exit-status line, the driver says
    the guest rebooted (GuestRebooted: the reboot step takes it as done; any other step
    fails) and logs in again after it."""
    from harness.errors import GuestRebooted

    with pytest.raises(GuestRebooted, match="SAC started again"):
        sac.run("shutdown /r /t 0", timeout=10)
    sac.reach_shell(20)
    assert sac.run("hostname", timeout=10).output == "WIN-REFVM2022"


def test_a_transfer_corrupted_inside_the_guest_fails_the_case(windows):
    """One byte flipped by the guest's stand-in on its way to the disk, and on its way to
    the host over TCP: the host's checks catch both (one run, two cases)."""
    proc, root, _ = windows(env=dict(QUICK_LOGIN, FAKE_WINDOWS_CORRUPT="disk-write,tcp-send"),
                            scenarios=("virtio-blk", "virtio-net"))
    assert proc.returncode == 1
    failures = {case.get("name").split("[")[0]: failure_text(case)
                for case in root.iter("testcase")}
    assert "the image file holds" in failures["virtio-blk"]
    assert "the host received 8388608 bytes with sha256" in failures["virtio-net"]


@pytest.mark.parametrize("sac", [{"firmware": "uefi"}], indirect=True, ids=["uefi"])
def test_nvram_and_save_restore_scripts_run_through_sac(sac):
    """The scripts of the scenarios the double cannot play whole (nvram-persist needs the
    firmware to act on BootNext, save-restore a migration), each through SAC and the
    stand-ins: a UEFI variable written from nvram.py's octal form and read back as hex
    (attributes first), an absent one an empty line, BootCurrent there; the counter going
    on; the kept file's hash. Only simulated: Windows' firmware API is not seen."""
    from harness.families import family
    from harness.steps.nvram import GLOBAL_GUID, NV_BS_RT, REFVM_GUID, octal

    windows = family("windows")

    def op(which, **values):
        result = sac.run(windows.device_command(which, **values), timeout=30)
        assert result.status == 0, result.output
        return result.output.strip()

    assert op("efivar_read", name="BootCurrent", guid=GLOBAL_GUID) == "060000000400"
    assert op("efivar_read", name="RefvmPersist", guid=REFVM_GUID) == ""
    data = NV_BS_RT.to_bytes(4, "little") + b"refvm-nvram-1"
    op("efivar_write", name="RefvmPersist", guid=REFVM_GUID, octal=octal(data))
    assert op("efivar_read", name="RefvmPersist", guid=REFVM_GUID) == data.hex()
    op("counter_start")
    time.sleep(2.5)
    first = int(op("counter_read"))
    time.sleep(1.5)
    assert int(op("counter_read")) > first >= 1
    kept = op("keep_write")
    assert len(kept) == 64 and op("keep_sha") == kept


def test_a_script_the_double_does_not_know_fails_loudly(sac):
    """The stand-ins never succeed silently: an unknown script exits 1 with a message; and
    without $ErrorActionPreference='Stop' a refused write would exit 0 (why every device
    script sets it)."""
    from harness.families import family

    unknown = sac.run('powershell -NoProfile -Command "Get-Disk | Format-List"', 10)
    assert unknown.status == 1 and "NO STAND-IN" in unknown.output
    probe = family("windows").device_command("disk_write_probe", dev="\\\\.\\PhysicalDrive7")
    assert sac.run(probe, 10).status == 1  # no such disk: the script stopped
    lenient = probe.replace("$ErrorActionPreference='Stop'; ", "")
    assert sac.run(lenient, 10).status == 0  # the error printed, the script went on
