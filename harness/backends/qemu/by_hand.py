"""The commands that start a VM the QEMU backend ran again by hand (refvm repro, keep-failed).

The harness's VM lives in its run's workdir ($TMPDIR/refvm-<id>/N), which goes when refvm
ends, and is driven over QMP and FIFOs (it starts paused and is resumed over QMP). A person
pasting the commands into sh after refvm has gone has neither, so the commands make a
directory of their own (a fresh one from mktemp, or the person's: ``cd DIR`` instead of the
first line) and make in it what start() made in the workdir: the boot disk's qcow2 overlay
over the same cached image, a copy of the same UEFI vars template, the scenario's scratch
disks (blank, of the same size: refvm's test patterns go with its VM) and a cloud image's
seed disc (copied beside the case's logs for this). QEMU then runs with the same machine,
devices and firmware, its paths relative to that directory, at once (no -S), with COM1 and
QEMU's monitor on the terminal it was started from.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import replace
from pathlib import Path

from ...vmspec import SEED_DISC, VmSpec
from .backend import overlay_argv, overlays


def commands(backend, spec: VmSpec, _machine=None) -> tuple[list, list[str]]:
    """(lines in run order, notes). A line is an argv list, or a str given to sh as it is
    (only the first: the directory, which needs the shell's $TMPDIR and $(...))."""
    local = _in_current_directory(spec)
    lines: list = [fresh_directory(spec.name)]
    lines += [overlay_argv(image, overlay, fmt) for image, overlay, fmt in overlays(local)[1]]
    if spec.firmware == "uefi":
        template = backend.ovmf.find().vars_template
        lines += [["cp", str(template), local.vars_path.name],
                  ["chmod", "600", local.vars_path.name]]
    notes = ["the first line makes a fresh directory and enters it (for one of your own: "
             "cd DIR instead); the VM's files are made there, and rm -r of it removes them"]
    blank = []
    for disk, made in zip(spec.disks, local.disks):
        if disk.ephemeral or disk.path == made.path:
            continue  # an overlay (made above) or a file outside the workdir (used as it is)
        if made.path.name == SEED_DISC:
            kept = spec.logdir / SEED_DISC
            shutil.copyfile(disk.path, kept)  # the workdir's copy goes with the harness's VM
            os.chmod(kept, 0o600)  # a host key's private half: for the one who runs the lines
            lines.append(["cp", str(kept), SEED_DISC])
            notes.append(f"{SEED_DISC}: the cloud image's seed disc of this run (its console "
                         f"user, with the password hashed, and a throwaway host key), kept "
                         f"in {spec.logdir}, readable by its owner only")
            continue
        lines.append(["qemu-img", "create", "-q", "-f", "raw", str(made.path),
                      str(os.stat(disk.path).st_size)])
        blank.append(str(made.path))
    if blank:
        notes.append(f"scratch disks {', '.join(blank)}: blank, of the same size (the test "
                     f"patterns refvm wrote in its VM's go with it)")
    lines.append(backend.argv(local, person=True))
    notes.append("COM1 is this terminal: Ctrl-a x quits QEMU, Ctrl-a c switches to QEMU's "
                 "monitor and back; Ctrl-C goes to the guest")
    notes += [f"{port.name}: a socket, {port.name}.sock in that directory (e.g. socat - "
              f"UNIX-CONNECT:{port.name}.sock)" for port in spec.serials if port.role != "console"]
    return lines, notes


def fresh_directory(name: str) -> str:
    """``cd`` into a new directory under $TMPDIR (or /tmp), named after the VM, and print it.
    Not under refvm-*: the reaper's names, which it would report as foreign."""
    label = name if re.fullmatch(r"[A-Za-z0-9._-]+", name) else "vm"
    return f'cd "$(mktemp -d "${{TMPDIR:-/tmp}}/by-hand-{label}.XXXXXX")" && pwd'


def _in_current_directory(spec: VmSpec) -> VmSpec:
    """``spec`` with its workdir the current directory: the files made in the workdir are
    named relative to it; the cached image and firmware keep their absolute paths."""
    disks = tuple(replace(d, path=Path(d.path.name)) if d.path.parent == spec.workdir else d
                  for d in spec.disks)
    return replace(spec, workdir=Path("."), disks=disks)


def joined(line) -> str:
    return line if isinstance(line, str) else shlex.join(line)
