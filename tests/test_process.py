"""Child processes die with the harness: the parent-death request, prepared before fork."""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

import pytest

from harness import process


class FakeLibc:
    """Test double for libc: records the foreign calls a request makes."""

    def __init__(self):
        self.calls = []
        libc = self

        class Func:
            def __init__(self, name):
                self.name, self.argtypes = name, None

            def __call__(self, *args):
                libc.calls.append((self.name, self.argtypes, args))
                return 0

        self.procctl, self.prctl = Func("procctl"), Func("prctl")


@pytest.fixture
def fake_libc(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(ctypes, "CDLL", lambda *_a, **_k: libc)
    process.deathsig_request.cache_clear()
    yield libc
    process.deathsig_request.cache_clear()


def test_freebsd_asks_procctl_for_sigkill_on_parent_death(fake_libc):
    request = process.deathsig_request("freebsd14")
    assert fake_libc.calls == []  # nothing is called before fork, only prepared
    request()
    (name, argtypes, args), = fake_libc.calls
    assert name == "procctl"
    assert argtypes == [ctypes.c_int, ctypes.c_int64, ctypes.c_int, ctypes.c_void_p]
    assert args[:3] == (0, 0, 11)  # P_PID, this process, PROC_PDEATHSIG_CTL (sys/procctl.h)
    assert ctypes.cast(args[3], ctypes.POINTER(ctypes.c_int)).contents.value == signal.SIGKILL


def test_linux_asks_prctl(fake_libc):
    process.deathsig_request("linux")()
    assert fake_libc.calls[0][0] == "prctl" and fake_libc.calls[0][2] == (1, signal.SIGKILL, 0, 0, 0)


def test_other_systems_have_no_request(fake_libc):
    assert process.deathsig_request("darwin") is None


@pytest.mark.skipif(not sys.platform.startswith(("linux", "freebsd")), reason="needs pdeathsig")
def test_a_spawned_child_dies_when_its_parent_is_killed(tmp_path):
    """A parent (as the harness would be) spawns a sleeper and is SIGKILLed: the kernel kills
    the sleeper too."""
    parent = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from harness.process import spawn; p = spawn(['sleep', '300'], Path(sys.argv[1])); "
         "print(p.pid, flush=True); time.sleep(300)", str(tmp_path / "log")],
        stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the child outlived its SIGKILLed parent")
