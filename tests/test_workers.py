"""The xdist controller's side of stopping workers: its pid directory is a claimed refvm-*
directory (live while the controller lives, reaped after it dies), and forward() signals the
processes that registered there."""
from __future__ import annotations

import os
import subprocess
import time

from harness.hostproc import start_time as process_start_time
from harness.pytest_plugin import workers
from harness.reaper import reap


def test_the_pid_directory_outlives_a_reap_while_its_controller_lives(tmp_path, monkeypatch):
    monkeypatch.setenv("REFVM_TMP", str(tmp_path))
    controller = workers.Controller()
    try:
        assert controller.directory.parent == tmp_path
        assert os.environ[workers.PIDS_ENV] == str(controller.directory)
        an_hour_ago = time.time() - 3600
        os.utime(controller.directory, (an_hour_ago, an_hour_ago))
        reap(log=lambda _text: None)  # what every run's start and `refvm clean` do
        assert controller.directory.is_dir()
    finally:
        controller.close()
    assert not controller.directory.exists()
    assert workers.PIDS_ENV not in os.environ


def test_forward_sends_sigterm_to_every_registered_worker(tmp_path, monkeypatch):
    monkeypatch.setenv("REFVM_TMP", str(tmp_path))
    controller = workers.Controller()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (controller.directory / f"{sleeper.pid}.pid").write_text(
            f"{sleeper.pid} {process_start_time(sleeper.pid)}")
        (controller.directory / "999999999.pid").write_text("999999999 1")  # long gone
        # a worker that died, its pid now another process's (same pid, other start time)
        (controller.directory / f"{os.getpid()}.pid").write_text(f"{os.getpid()} 1")
        assert controller.forward() == [sleeper.pid]
        assert sleeper.wait(timeout=10) == -15
    finally:
        sleeper.kill()
        sleeper.wait()
        controller.close()


def test_a_worker_registers_its_pid_and_start_time_and_unregisters(tmp_path, monkeypatch):
    import signal
    monkeypatch.setenv(workers.PIDS_ENV, str(tmp_path))
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        workers.register_worker()
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    pidfile = tmp_path / f"{os.getpid()}.pid"
    assert pidfile.read_text() == f"{os.getpid()} {process_start_time(os.getpid())}"
    workers.unregister_worker()
    assert not pidfile.exists()
