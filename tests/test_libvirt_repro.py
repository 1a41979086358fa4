"""`refvm repro` and `refvm run --keep-failed` through libvirtd (qemu:///system, TCG), driven
through a pty as a person would: the console is libvirt's console stream.

Three boots of the reference guest (about 15 s each under TCG): the repro's, the same VM
started again by hand with exactly the commands repro printed (virsh define/start/console),
and the kept VM of a failing case, whose run is then SIGKILLed to check that libvirt removes
the domain and `refvm clean` the files. Marked ``vm``; skipped, with the reason, when libvirtd
does not answer."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

from harness.ownership import KEPT_FILE
from harness.paths import REPO_ROOT
from tests.test_keep_failed import FAILING
from tests.test_libvirt_e2e import LOCAL, need

pytestmark = [pytest.mark.vm]

STAGE_ROOT = Path("/var/lib/libvirt/images")


def domains() -> list[str]:
    """The names of the domains libvirtd runs or has defined."""
    out = subprocess.run(["virsh", "-c", LOCAL, "list", "--all", "--name"], capture_output=True,
                         text=True, check=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def refvm(args: list[str], scratch: Path, **kw) -> pexpect.spawn:
    return pexpect.spawn(sys.executable, ["-m", "harness.cli", *args], cwd=str(REPO_ROOT),
                         env=dict(os.environ, REFVM_TMP=str(scratch)), encoding="utf-8", **kw)


def refvm_clean(scratch: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "clean"], cwd=REPO_ROOT,
                          env=dict(os.environ, REFVM_TMP=str(scratch)), capture_output=True,
                          text=True, timeout=120)


def by_hand_lines(child: pexpect.spawn) -> tuple[list[str], list[str]]:
    """The commands (and the comment lines) printed after "to start the same VM by hand:"."""
    child.expect(r"to start the same VM by hand:\r+\n((?:[^\r]*\r+\n)*?)refvm: ")
    lines = [line for line in child.match.group(1).splitlines() if line.strip()]
    return ([line for line in lines if not line.startswith("#")],
            [line for line in lines if line.startswith("#")])


def wait_for(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_repro_hands_over_the_console_stream_and_its_commands_start_the_same_vm(tmp_path):
    need(LOCAL)
    scratch, artifacts = tmp_path / "scratch", tmp_path / "artifacts"
    scratch.mkdir()
    child = refvm(["repro", "boot[refguest-csm-libvirt]", "--backend", "libvirt", "--until",
                   "login", "--artifacts", str(artifacts)], scratch, timeout=240)
    try:
        child.expect(r"booted as (refvm-[0-9a-f]{8}-\d+)")
        name = child.match.group(1)
        commands, notes = by_hand_lines(child)
        child.expect(r"running 1 of \d+ step\(s\): login")
        child.expect(r"press Ctrl-\] to leave")
        assert domains().count(name) == 1  # exactly that case's domain, while the person has it
        child.send("echo repro-$((6*7)); tty\r")
        child.expect("repro-42")
        child.expect("/dev/ttyS0")  # the guest's serial console, through libvirt's stream
        child.send("\x1d")
        child.expect(rf"left the console: you pressed Ctrl-\]; destroying {name}")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert name not in domains(), "repro left its domain behind"
    assert list(scratch.iterdir()) == [] and not (STAGE_ROOT / name).exists()
    xml = artifacts / "boot_refguest-csm-libvirt" / "domain.xml"
    assert f"virsh -c {LOCAL} define {xml}" in commands
    assert commands[-2:] == [f"virsh -c {LOCAL} start {name}", f"virsh -c {LOCAL} console {name}"]
    leave, = [note for note in notes if "leave virsh console with Ctrl-]" in note]
    # pytest's tmp_path is closed to libvirt's QEMU: the disk copy was staged by a link
    assert any(line.startswith(f"ln {scratch}/") and f" {STAGE_ROOT}/{name}/" in line
               for line in commands), commands

    # The same VM, by hand: the printed commands, run one by one as a person would paste them.
    try:
        for line in commands[:-1]:
            subprocess.run(shlex.split(line), check=True, capture_output=True, timeout=600)
        console = pexpect.spawn(*_split(commands[-1]), encoding="utf-8", timeout=120)
        try:
            console.expect(r"Escape character is \^\]")
            console.expect("refguest login: ")  # the same guest booted, on the same console
            console.send("\x1d")
            console.expect(pexpect.EOF)
        finally:
            console.close(force=True)
        clean = refvm_clean(scratch)
        assert clean.returncode == 0 and name in domains(), "refvm clean took a person's VM"
        removal = leave.split("then remove the VM: ", 1)[1]
        for line in removal.split("; "):
            subprocess.run(shlex.split(line), check=True, capture_output=True, timeout=60)
        assert name not in domains() and list(scratch.iterdir()) == []
    finally:  # whatever failed above: the domain the commands defined is this test's
        if name in domains():
            subprocess.run(["virsh", "-c", LOCAL, "destroy", name], capture_output=True)
            subprocess.run(["virsh", "-c", LOCAL, "undefine", name], capture_output=True)


def _split(line: str) -> tuple[str, list[str]]:
    argv = shlex.split(line)
    return argv[0], argv[1:]


def test_a_failed_cases_domain_is_kept_until_its_run_ends_then_cleaned(tmp_path):
    need(LOCAL)
    scratch, artifacts = tmp_path / "scratch", tmp_path / "artifacts"
    scratch.mkdir()
    scenario = tmp_path / "keepfail.yaml"
    scenario.write_text(FAILING)
    child = refvm(["run", "--keep-failed", "--backend", "libvirt", "--guest", "refguest",
                   "--firmware", "csm", "--artifacts", str(artifacts), "--", str(scenario),
                   "-k", "keepfail", "-p", "no:cacheprovider"], scratch, timeout=240)
    try:
        child.expect(r"refvm: keepfail\[refguest-csm-libvirt\] failed: ")
        child.expect(r"its VM (refvm-[0-9a-f]{8}-\d+) was kept")
        name = child.match.group(1)
        commands, _ = by_hand_lines(child)
        assert commands[-3:] == [
            f"virsh -c {LOCAL} define {artifacts / 'keepfail_refguest-csm-libvirt/domain.xml'}",
            f"virsh -c {LOCAL} start {name}", f"virsh -c {LOCAL} console {name}"]
        child.expect(r"press Ctrl-\] to leave")
        workroot, = scratch.iterdir()
        assert json.loads((workroot / KEPT_FILE).read_text())["vms"] == [name]
        assert name in domains()  # the failing case's domain stays up
        clean = refvm_clean(scratch)
        assert clean.returncode == 0, clean.stderr
        assert name in domains() and workroot.is_dir(), "refvm clean took a live run's VM"
        child.send("echo kept-$((6*7))\r")
        child.expect("kept-42")  # the console is the live one, through libvirt's stream
        os.kill(child.pid, signal.SIGKILL)  # the run dies without any clean-up of its own
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    # libvirt destroys the auto-destroy domain with the run's connection; the files stay for
    # the person, until an explicit refvm clean.
    assert wait_for(lambda: name not in domains()), "the killed run's domain is still there"
    assert workroot.is_dir() and (workroot / KEPT_FILE).is_file()
    clean = refvm_clean(scratch)
    assert clean.returncode == 0, clean.stderr
    assert not workroot.exists(), clean.stdout
    assert not (STAGE_ROOT / name).exists(), clean.stdout
    assert name not in domains()
