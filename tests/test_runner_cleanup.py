"""A run's clean-up gets through every VM and file when one step is interrupted (a second
Ctrl-C or SIGTERM during teardown): each close() runs once, so it must not stop half-way."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness.ownership import claim
from harness.runner import BootedVM, Run


class Closing:
    """Test double for a console, log, machine or VM: records its close, may be interrupted."""

    def __init__(self, name: str, record: list, interrupt: bool = False):
        self.name, self.record, self.interrupt = name, record, interrupt

    def close(self):
        self.record.append(self.name)
        if self.interrupt:
            raise KeyboardInterrupt(f"while closing {self.name}")

    destroy = close


def test_a_vm_closes_its_log_machine_and_workdir_even_when_its_console_close_is_interrupted(
        tmp_path):
    record: list = []
    workdir = tmp_path / "1"
    workdir.mkdir()
    vm = BootedVM(SimpleNamespace(workdir=workdir), Closing("machine", record),
                  Closing("console", record, interrupt=True), Closing("log", record))
    with pytest.raises(KeyboardInterrupt, match="while closing console"):
        vm.close()
    assert record == ["console", "log", "machine"] and not workdir.exists()
    vm.close()  # once only
    assert record == ["console", "log", "machine"]


def test_run_close_releases_every_vm_and_its_directory_when_one_release_is_interrupted(
        tmp_path, monkeypatch):
    monkeypatch.setenv("REFVM_TMP", str(tmp_path))
    run = Run(None, tmp_path / "artifacts")
    claim(run.workroot)
    run._claimed = True  # as its first boot does
    record: list = []
    run._live = [Closing("a", record), Closing("b", record, interrupt=True), Closing("c", record)]
    with pytest.raises(KeyboardInterrupt, match="while closing b"):
        run.close()
    assert record == ["c", "b", "a"]  # the last booted first
    assert run._live == [] and not run.workroot.exists()


def test_a_run_that_claimed_nothing_removes_nothing(tmp_path, monkeypatch):
    """A folder that happens to bear the run's name was not made by it (claim refuses to adopt
    one): closing the run leaves it alone."""
    monkeypatch.setenv("REFVM_TMP", str(tmp_path))
    run = Run(None, tmp_path / "artifacts")
    run.workroot.mkdir()
    (run.workroot / "mine.txt").write_text("a person's file")
    run.close()
    assert (run.workroot / "mine.txt").read_text() == "a person's file"
