"""What `refvm repro` and `refvm run --keep-failed` tell a person about a bhyve VM: the nmdm B
side to reach its console with cu(1), the exact bhyve/bhyvectl/ifconfig commands to start the
same VM by hand, and the ones to leave it.

Simulated: bhyve cannot run here. The plan test uses the backend's real nmdm names
(/dev/nmdmNA, /dev/nmdmNB) with canned capabilities; the others start the VM through
tests/fake_bhyve.py (tests/doubles_bhyve.py), then run the printed commands, as a person
pasting them would, through the same fake, and compare the calls with the backend's own."""
from __future__ import annotations

import os
import shlex
import subprocess
import time
from types import SimpleNamespace

from harness import keep, repro
from harness.backends.bhyve.argv import (BRIDGE_PLACEHOLDER, NMDM_PATTERN, nmdm_pair, tap_names,
                                         vm_number)
from harness.backends.bhyve.backend import Programs
from harness.vmspec import Nic, SerialPort

from tests.test_bhyve_lifecycle import (NAME, boot, host, make_backend,  # noqa: F401 (fixture)
                                        make_spec, read_console)


def _read_until(console, text: str, timeout: float = 30.0) -> str:
    """The console's output until ``text`` (the fake bhyve is a Python start-up away, which
    a loaded machine can stretch past read_console's idle half second)."""
    seen, deadline = "", time.monotonic() + timeout
    while text not in seen and time.monotonic() < deadline:
        seen += read_console(console, idle=0.2)
    return seen


def _split(lines: list[str]) -> tuple[list[str], list[str]]:
    return [l for l in lines if not l.startswith("#")], [l for l in lines if l.startswith("#")]


def test_the_plan_names_the_nmdm_b_side_and_how_to_leave(tmp_path):
    backend = make_backend(SimpleNamespace(programs=Programs()), tmp_path)  # FreeBSD's paths
    backend.nmdm_pattern = NMDM_PATTERN  # /dev/nmdm{unit}{side}, not the tests' FIFOs
    spec = make_spec(tmp_path, nics=(Nic(mac="52:54:00:00:00:07"),),
                     serials=(SerialPort("com1"), SerialPort("com2", "data")))
    commands, notes = _split(repro.by_hand(backend, spec))
    unit = vm_number(NAME) * 4
    destroy = f"/usr/sbin/bhyvectl --vm={NAME} --destroy"
    assert commands[0] == destroy  # a stale VM of that name goes first
    assert commands == [shlex.join(argv) for argv in backend.command_lines(spec)]
    assert f"-l com1,/dev/nmdm{unit}A" in commands[-1] and commands[-1].endswith(NAME)
    assert f"-l com2,/dev/nmdm{unit + 1}A" in commands[-1]
    console, com2, leave = notes
    assert f"cu -l /dev/nmdm{unit}B -s 115200" in console and "~." in console
    assert f"com2: its B side is /dev/nmdm{unit + 1}B" in com2
    tap, = tap_names(spec)
    assert leave == (f"# to leave: {destroy}; /sbin/ifconfig {tap} destroy; "
                     f"/sbin/ifconfig {BRIDGE_PLACEHOLDER} destroy (bhyve exits with its VM)")


def test_the_printed_commands_make_the_same_calls_as_the_backend(host, tmp_path):
    host.set(hang=True, console="login: ")
    backend = make_backend(host, tmp_path)
    spec = make_spec(tmp_path, nics=(Nic(mac="52:54:00:00:00:07"),))
    machine, console = boot(backend, spec)
    try:
        assert "login: " in _read_until(console, "login: ")  # the B side the harness reads
        lines = repro.by_hand(backend, spec, machine)
    finally:
        machine.destroy()
    ran = [call for call in host.calls() if call != ["ifconfig", tap_names(spec)[0]]]
    commands, notes = _split(lines)
    b_side = nmdm_pair(NAME, "com1", backend.nmdm_pattern)[1]
    assert f"cu -l {b_side} -s 115200" in notes[0]

    host.log.unlink()
    host.set(console="login: ")  # by hand, bhyve runs until its VM is destroyed
    env = dict(os.environ, FAKE_BHYVE_CONTROL=str(host.control))
    leave = notes[-1].removeprefix("# to leave: ").removesuffix(" (bhyve exits with its VM)")
    bridge = None
    for line in commands + leave.split("; "):
        argv = [bridge if arg == BRIDGE_PLACEHOLDER else arg for arg in shlex.split(line)]
        out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
        if argv[1:3] == ["bridge", "create"]:
            bridge = out.stdout.strip()  # as a person would: the name it printed
    assert bridge == "bridge7"
    assert host.calls() == ran  # the same programs, arguments and order as the backend's


def test_keep_failed_without_a_terminal_names_the_b_side(host, tmp_path, capsys):
    host.set(hang=True, console="login: ")
    backend = make_backend(host, tmp_path)
    spec = make_spec(tmp_path)
    machine, _ = boot(backend, spec)
    vm = SimpleNamespace(case=SimpleNamespace(id="boot[fake-uefi-bhyve]"), spec=spec,
                         backend=backend, machine=machine,
                         log=SimpleNamespace(path=tmp_path / "logs" / "console.log"))
    try:
        keep._instructions(vm, "a step failed")
    finally:
        machine.destroy()
    said = capsys.readouterr().out
    b_side = nmdm_pair(NAME, "com1", backend.nmdm_pattern)[1]
    assert f"its VM {NAME} was kept" in said
    assert f"this run holds its nmdm B side {b_side}" in said
    assert f"# console, from another terminal: cu -l {b_side} -s 115200" in said
    assert f"bhyvectl --vm={NAME} --destroy" in said
