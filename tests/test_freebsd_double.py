"""FreeBSD guests through the real QEMU backend, against a TEST DOUBLE of QEMU running FreeBSD.

This machine cannot download a FreeBSD image, so no FreeBSD guest is booted here. What runs
for real is everything of refvm's: `refvm run`, the QEMU backend's argv, QMP and COM1 FIFOs,
the Unix-shell driver (login without a password, the resizewin query, the shell flavour, csh
replaced by /bin/sh, the loader stop) and the boot scenario's steps with the FreeBSD family's
commands. tests/fake_qemu_freebsd.py stands in for qemu-system-x86_64 and plays a FreeBSD
console from real transcripts (see its docstring). Only simulated: the FreeBSD guest itself.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

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

    def run(env=None, firmware="uefi", console_extra="", timeout=120):
        guest = tmp_path / "freebsd-double.yaml"
        guest.write_text(
            f"name: freebsd-double\nfamily: freebsd\nimage: {{path: {image}, sha256: "
            f"{hashlib.sha256(image.read_bytes()).hexdigest()}}}\nfirmware: [uefi, csm]\n"
            f"console:\n  user: root\n  boot_timeout: 20\n{console_extra}")
        return run_through_double(tmp_path, guest, qemu, "FAKE_FREEBSD_LOG", firmware, env,
                                  timeout=timeout)

    return run


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
    lines = [s["line"] for s in said if "line" in s]
    assert any("shutdown -p now" in line for line in lines)
    assert all(s["shell"] == "sh" for s in said if "shell" in s)


def test_freebsd_13_csh_login_shell_is_replaced_by_sh(freebsd):
    proc, root, said = freebsd(env={"FAKE_FREEBSD_SHELL": "csh", "FAKE_FREEBSD_RELEASE": "13.2"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    shells = [(s["shell"], s["line"]) for s in said if "line" in s]
    assert shells[0][0] == "csh" and "${SHELL}" in shells[0][1]  # asked which shell
    assert shells[1] == ("csh", "exec /bin/sh")
    assert all(shell == "posix" for shell, _ in shells[2:])  # every command ran in /bin/sh


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
