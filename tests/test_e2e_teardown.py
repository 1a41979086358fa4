"""Nothing is left behind: real runs interrupted mid-boot, and a hypervisor killed under a run.

Each test starts `refvm run` in a subprocess with its own scratch root (REFVM_TMP), waits until
QEMU is booting the guest, then interferes, and checks that no process or file of that run
remains (after SIGKILL: once `refvm clean` ran, which must spare a live run's directory).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.ownership import make_owned
from tests.decoys import intact, make_decoys

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU not installed"),
]


def start_run(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = dict(os.environ, REFVM_TMP=str(scratch))
    with open(tmp_path / "out.log", "w") as out:  # the child keeps its own copy of the fd
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "run", "--scenario", "boot", "--guest",
             "refguest", "--firmware", "csm", "--accel", "tcg", "--artifacts", str(tmp_path / "artifacts"),
             "--junitxml", str(tmp_path / "junit.xml"), "-p", "no:cacheprovider"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, scratch


def kill_run(proc: subprocess.Popen, scratch: Path) -> None:
    """SIGKILL a run: its QEMU (in a session of its own) and the run's process group."""
    for pidfile in scratch.glob("refvm-*/*/qemu.pid"):
        try:
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def wait_for_qemu(scratch: Path, timeout: float = 120) -> int:
    """The pid of the run's QEMU once the guest is booting (its console has output)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pidfile in scratch.glob("refvm-*/*/qemu.pid"):
            logs = list(scratch.parent.glob("artifacts/*/console.log"))
            if logs and logs[0].stat().st_size > 500:
                return int(pidfile.read_text())
        time.sleep(0.2)
    raise AssertionError("QEMU never started booting the guest")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def processes_mentioning(path: Path) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if str(path) in line and "ps -eo" not in line]


def wait_gone(pid: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pid), f"pid {pid} still alive"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_run_leaves_nothing(tmp_path, signum):
    proc, scratch = start_run(tmp_path)
    try:
        qemu = wait_for_qemu(scratch)
        proc.send_signal(signum)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            kill_run(proc, scratch)
    wait_gone(qemu)
    assert processes_mentioning(scratch) == []
    assert list(scratch.iterdir()) == [], "scratch files left behind"
    assert proc.returncode != 0


def test_sigkilled_run_is_reaped_by_clean_which_spares_live_runs(tmp_path):
    proc, scratch = start_run(tmp_path)
    try:
        qemu = wait_for_qemu(scratch)
    except BaseException:
        kill_run(proc, scratch)
        raise
    proc.kill()  # the harness alone: QEMU must go by itself
    proc.wait(timeout=30)
    wait_gone(qemu)  # PR_SET_PDEATHSIG: QEMU does not outlive a killed harness
    stale = list(scratch.glob("refvm-*"))
    assert stale, "the killed run's scratch directory should still be there"
    live = make_owned("run", scratch)  # owned by this (live) test process
    decoys = make_decoys(scratch)  # and one more dead run, refvm-aaaaaaaa
    env = dict(os.environ, REFVM_TMP=str(scratch))
    dry = subprocess.run([sys.executable, "-m", "harness.cli", "clean", "--dry-run"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert f"would remove stale {stale[0]}: its owner, pid {proc.pid}, has exited" in dry.stdout
    assert "2 stale run(s) would be cleaned (dry run)" in dry.stdout
    assert stale[0].is_dir()
    out = subprocess.run([sys.executable, "-m", "harness.cli", "clean"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "2 stale run(s) cleaned" in out.stdout
    assert intact(decoys) and live.is_dir()
    assert sorted(scratch.iterdir()) == sorted(decoys + [live])


def test_a_run_keeps_what_it_did_not_make_and_reaps_a_dead_runs_leftovers(tmp_path):
    """Folders named like refvm's (a person's, a copy, one without refvm's marker, an hour old)
    survive a real `refvm run`; a dead run's directory (refvm-aaaaaaaa) does not."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    decoys = make_decoys(scratch)
    dead = scratch / "refvm-aaaaaaaa"
    assert dead.is_dir()
    out = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--scenario", "boot", "--firmware", "csm",
         "--guest", "refguest", "--accel", "tcg", "--artifacts", str(tmp_path / "artifacts"), "-p", "no:cacheprovider"],
        env=dict(os.environ, REFVM_TMP=str(scratch)), capture_output=True, text=True,
        timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert intact(decoys) and not dead.exists()
    assert sorted(scratch.iterdir()) == sorted(decoys)


def test_killed_hypervisor_is_noticed_at_once_and_named(tmp_path):
    proc, scratch = start_run(tmp_path)
    try:
        qemu = wait_for_qemu(scratch)
        os.kill(qemu, signal.SIGKILL)
        killed_at = time.monotonic()
        proc.wait(timeout=120)
        noticed = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            kill_run(proc, scratch)
    assert noticed < 30, f"took {noticed:.0f}s to notice (the boot timeout is 240s)"
    case, = ET.parse(tmp_path / "junit.xml").getroot().iter("testcase")
    failure = case.find("failure")
    assert failure is not None
    assert "the hypervisor exited: killed (QEMU killed by signal 9" in failure.get("message", "") \
        + (failure.text or "")
    assert list(scratch.glob("refvm-*/*")) == []

