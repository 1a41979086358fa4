"""``refvm repro CASE [--until STEP]``: a person at the console of exactly a case's VM.

The VM is booted the way ``refvm run`` boots it (the same Run.vm_spec, so the same command
line, devices, firmware and private vars copy), the scenario's steps run up to the one asked
for (by default all that leave the VM up: not the final poweroff, nor what needs the VM
stopped after it), and then the live console is handed to the person: raw keys in, the
guest's output out (and into the case's console.log as always), until they press the escape
key (Ctrl-]). The VM is destroyed when they leave, like any run's, and `refvm clean` removes
what a killed repro leaves. A step that fails still hands the console over: that is when a person wants it.

The hand-over loop is written here: pexpect's ``interact`` would need pexpect to own the
console, which the harness's ConsoleStream (log, failure scan) already does."""
from __future__ import annotations

import os
import re
import select
import shlex
import sys
import termios
import tty
from dataclasses import replace

from .backends import BACKENDS, DEFAULT_BACKEND
from .errors import ConfigError, Problem, show
from .backends.bhyve.argv import BRIDGE_PLACEHOLDER
from .matrix import build as build_matrix
from .steps import REGISTRY

ESCAPE = b"\x1d"  # Ctrl-], telnet's and virsh console's escape
ESCAPE_NAME = "Ctrl-]"


def backend_of(case_id: str, given: str | None) -> str:
    """The backend a case names (``boot[refguest-uefi-bhyve]``: bhyve, the last word of its
    brackets), else ``given``, else the default; a ``given`` one that disagrees is an error."""
    words = re.fullmatch(r"[^\[]*\[(.*)\]", case_id)
    named = words.group(1).rsplit("-", 1)[-1] if words else None
    if named not in BACKENDS:
        return given or DEFAULT_BACKEND
    if given is not None and given != named:
        raise ConfigError([Problem("(command line)", 0, "--backend", f"{show(given)}, but case "
                                   f"{show(case_id)} is one of the {named} backend's: leave "
                                   f"--backend out, or name a {given} case")])
    return named


def find_case(case_id: str, scenarios, guests, backend):
    """The case and its matrix skip reason (None: runnable), by the id `refvm plan` lists."""
    matrix = build_matrix(scenarios, guests, backend)
    for case, reason in matrix:
        if case.id == case_id:
            return case, reason
    known = ", ".join(case.id for case, _ in matrix[:12])
    raise ConfigError([Problem("(command line)", 0, "CASE", f"no case {show(case_id)} in the "
                               f"{backend.name} matrix; `refvm plan` lists them (e.g. {known})")])


def steps_until(scenario, until: str | None) -> int:
    """How many of the scenario's steps to run: up to and including ``until`` (a step number
    from 1, or the kind of a step: its first occurrence), or by default as many as leave the
    VM running (running_prefix)."""
    steps = scenario.steps
    if until is None:
        return running_prefix(steps)
    if until.isdigit() and 1 <= int(until) <= len(steps):
        return int(until)
    for number, step in enumerate(steps, 1):
        if step.kind == until:
            return number
    listed = ", ".join(f"{n} {s.kind}" for n, s in enumerate(steps, 1))
    raise ConfigError([Problem("(command line)", 0, "--until", f"{show(until)} is no step of "
                               f"scenario {scenario.name} (its steps: {listed})")])


def running_prefix(steps) -> int:
    """The most leading steps after which the VM still runs: every scenario ends with a
    poweroff, often followed by steps that need the VM stopped (disk_verify reads the disk on
    the host) or stop it for good (vars_size_refused), and a person wants a live console. A
    step's registry entry says what it leaves the VM as (``vm_after``: poweroff stopped,
    restart running); the VM runs from the boot on."""
    running, count = True, 0
    for number, step in enumerate(steps, 1):
        after = REGISTRY[step.kind].vm_after
        running = running if after is None else after == "running"
        if running:
            count = number
    return count


def held_back(steps, count: int) -> str:
    """The steps not run, for the line that says so: "6 poweroff, 7 disk_verify"."""
    return ", ".join(f"{n} {s.kind}" for n, s in enumerate(steps, 1) if n > count)


def truncated(case, count: int):
    return replace(case, scenario=replace(case.scenario, steps=case.scenario.steps[:count]))


def by_hand(backend, spec, machine=None) -> list[str]:
    """The commands that start the same VM by hand, then notes (how to reach its console,
    leave it and remove it). ``machine``, the running VM, lets a backend name what it made
    at start (libvirt: what it staged). A backend's line is an argv, joined here, or a line
    of its own for sh (QEMU's first: the directory it makes)."""
    lines, notes = HAND_LINES[backend.name](backend, spec, machine)
    return [line if isinstance(line, str) else shlex.join(line) for line in lines] \
        + [f"# {note}" for note in notes]


def _qemu_lines(backend, spec, machine):
    from .backends.qemu.by_hand import commands
    return commands(backend, spec, machine)


def _bhyve_lines(backend, spec, _machine):
    """bhyve has the A side of each COM port's nmdm(4) pair; a person reaches the console on
    the B side with cu(1). bhyve runs in the foreground of the shell that started it, and the
    kernel VM, taps and bridge stay until destroyed, so the way out is spelled out too."""
    plan = backend.launch_plan(spec)
    ifconfig = backend.programs.ifconfig
    leave = [shlex.join(plan.destroy)] + [shlex.join([ifconfig, tap, "destroy"])
                                          for tap in plan.taps]
    if plan.taps:
        leave.append(shlex.join([ifconfig, BRIDGE_PLACEHOLDER, "destroy"]))
    notes = [f"console, from another terminal: cu -l {plan.consoles['com1']} -s 115200 "
             f"(bhyve holds the A side; leave cu with ~. at the start of a line)"]
    notes += [f"{port}: its B side is {side}" for port, side in plan.consoles.items()
              if port != "com1"]
    notes.append("to leave: " + "; ".join(leave) + " (bhyve exits with its VM)")
    return backend.command_lines(spec), notes


def _libvirt_lines(backend, spec, machine):
    from .backends.libvirt.by_hand import commands
    return commands(backend, spec, machine)


HAND_LINES = {"qemu": _qemu_lines, "bhyve": _bhyve_lines, "libvirt": _libvirt_lines}


def hand_over(console, machine, stdin_fd: int = 0, stdout_fd: int = 1,
              poll: float = 0.5) -> str:
    """Give the console to the person until the escape key, the end of their input or the
    hypervisor's exit; return which, in words."""
    reader = console.reader
    if len(reader):  # what the guest printed since the last step read: the prompt, usually
        os.write(stdout_fd, reader.tail(4096).encode("utf-8", "replace"))
        reader.consume(len(reader))
    saved = termios.tcgetattr(stdin_fd) if os.isatty(stdin_fd) else None
    if saved is not None:
        tty.setraw(stdin_fd)
    try:
        while True:
            ready, _, _ = select.select([stdin_fd, reader.fd], [], [], poll)
            if reader.fd in ready:
                text = reader.read(0.0)
                if len(reader):
                    os.write(stdout_fd, reader.consume(len(reader)).encode("utf-8", "replace"))
                if reader.eof and not text:
                    info = machine.wait_exit(5)
                    return f"the VM's console closed ({info or 'hypervisor still running'})"
            if stdin_fd in ready:
                keys = os.read(stdin_fd, 1024)
                if not keys:
                    return "your input ended"
                if ESCAPE in keys:
                    before = keys.split(ESCAPE, 1)[0]
                    if before:
                        reader.write(before.decode("utf-8", "replace"))
                    return f"you pressed {ESCAPE_NAME}"
                reader.write(keys.decode("utf-8", "replace"))
            info = machine.poll()
            if info is not None:
                return f"the VM exited: {info}"
    finally:
        if saved is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)


def say(text: str) -> None:
    """A line for the person, readable in a raw terminal too."""
    sys.stdout.write(text.replace("\n", "\r\n") + "\r\n")
    sys.stdout.flush()
