"""``refvm run --keep-failed``: a failing case's VM stays up after the run, for a person.

Hypervisors die with the process that started them (process.py: PR_SET_PDEATHSIG), so a kept
VM lives only as long as ``refvm run`` itself: the run goes one case at a time in its own
process (no pytest-xdist worker to outlive), a case whose steps failed skips its teardown, and
once pytest has finished (results, report) each kept VM is handed over in turn, the way
``refvm repro`` does it: on a terminal, the live console (Ctrl-] leaves and destroys the VM);
elsewhere, the commands of that VM, where its console and its log are, and how to remove it,
and the run waits until it is stopped (SIGTERM, Ctrl-C) or the VMs exit.

A kept VM's run directory carries ``kept.json`` (ownership.KEPT_FILE) besides its owner.json.
While the ``refvm run`` holding it lives, it is a live run's and nothing removes it. If that run
is killed, its VMs die with it but their files stay for the person to look at: the reap at
the start of every run (and of repro) leaves a dead *kept* directory alone and says so; only an
explicit ``refvm clean`` removes it.
"""
from __future__ import annotations

import os
import signal
import time

import pytest

from . import repro
from .cleanup import run_all

KEEPER_KEY = pytest.StashKey["Keeper"]()


class Keeper:
    """A pytest plugin object given by ``refvm run --keep-failed``: it collects the VMs of
    failed cases (the refvm plugin asks it in each case's teardown) and hands them over after
    pytest has returned."""

    def __init__(self):
        self.kept: list[tuple[object, str]] = []  # (BootedVM, why its case failed)

    def pytest_configure(self, config):
        config.stash[KEEPER_KEY] = self

    def keep(self, item) -> bool:
        """In ``item``'s teardown: keep its VM if its steps failed and it still runs."""
        vm, reason = item.vm, getattr(item, "failed_because", None)
        if vm is None or reason is None or vm.machine.poll() is not None:
            return False
        vm.runner.keep(vm)
        vm.log.note(f"kept after the failure (refvm run --keep-failed): {reason}")
        self.kept.append((vm, reason))
        return True

    def hand_over_all(self, stdin_fd: int = 0) -> None:
        """Each kept VM to the person, one at a time on a terminal; then destroy them all."""
        runs = {id(vm.runner): vm.runner for vm, _ in self.kept}
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            if os.isatty(stdin_fd):
                for vm, reason in self.kept:
                    _console_for_person(vm, reason, stdin_fd)
            elif self.kept:
                for vm, reason in self.kept:
                    _instructions(vm, reason)
                _wait_until_stopped([vm for vm, _ in self.kept])
        except KeyboardInterrupt:
            repro.say("refvm: stopped; destroying the kept VM(s)")
        finally:
            signal.signal(signal.SIGTERM, previous)
            run_all(*[run.close_kept for run in runs.values()])


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _introduce(vm, reason: str) -> bool:
    repro.say(f"refvm: {vm.case.id} failed: {reason}")
    repro.say(f"refvm: its VM {vm.spec.name} was kept; console log {vm.log.path}")
    repro.say("refvm: to start the same VM by hand:\n"
              + "\n".join(repro.by_hand(vm.backend, vm.spec, vm.machine)))
    exited = vm.machine.poll()
    if exited is not None:
        repro.say(f"refvm: the VM has exited since ({exited}): no console to hand over")
    return exited is None


def _console_for_person(vm, reason: str, stdin_fd: int) -> None:
    if not _introduce(vm, reason):
        return
    repro.say(f"refvm: the console of {vm.case.id} is yours; press {repro.ESCAPE_NAME} to "
              f"leave (the VM is destroyed then)")
    why = repro.hand_over(vm.console, vm.machine, stdin_fd=stdin_fd)
    repro.say(f"\nrefvm: left the console: {why}; destroying {vm.spec.name}")
    vm.runner.release_kept(vm)


def _instructions(vm, reason: str) -> None:
    """No terminal to hand the console to: say where it is, and how the VM goes."""
    if not _introduce(vm, reason):
        return
    pid = os.getpid()
    for line in CONSOLE_WAYS.get(vm.backend.name, lambda _vm: [])(vm):
        repro.say(f"refvm: {line}")
    repro.say(f"refvm: it stays up while this refvm run (pid {pid}) waits; to remove it: "
              f"kill -TERM {pid} (or Ctrl-C). If this run is killed instead, the VM dies with "
              f"it and `refvm clean` removes its files.")


CONSOLE_WAYS = {
    "qemu": lambda vm: [f"console: type into {vm.spec.workdir}/com1.in (a FIFO: "
                        f"echo 'uname -a' > {vm.spec.workdir}/com1.in); its output goes on into "
                        f"the console log: tail -f {vm.log.path}"],
    "bhyve": lambda vm: [f"console: this run holds its nmdm B side "
                         f"{vm.machine.plan.consoles['com1']}; its output goes on into the "
                         f"console log: tail -f {vm.log.path}"],
    "libvirt": lambda vm: [f"console: virsh console --force {vm.spec.name} takes it over; "
                           f"until then its output goes on into {vm.log.path}"],
}


def _wait_until_stopped(vms: list, poll: float = 0.5) -> None:
    """Keep the consoles drained (into their logs) until a signal or every VM has exited."""
    while any(vm.machine.poll() is None for vm in vms):
        for vm in vms:
            reader = vm.console.reader
            reader.read(poll / max(1, len(vms)))
            if len(reader):
                reader.consume(len(reader))
        time.sleep(0.05)
    repro.say("refvm: every kept VM has exited")
