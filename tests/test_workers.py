"""The xdist controller's side of stopping workers: its pid directory is a claimed refvm-*
directory (live while the controller lives, reaped after it dies), and forward() signals the
processes that registered there."""
from __future__ import annotations

import os
import subprocess
import time

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
        (controller.directory / f"{sleeper.pid}.pid").write_text(str(sleeper.pid))
        (controller.directory / "999999999.pid").write_text("999999999")  # long gone
        assert controller.forward() == [sleeper.pid]
        assert sleeper.wait(timeout=10) == -15
    finally:
        sleeper.kill()
        sleeper.wait()
        controller.close()
