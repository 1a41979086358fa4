"""The commands that start a libvirt VM the harness ran again by hand (refvm repro, keep-failed).

The domain XML the harness created the domain from is kept in the case's log directory
(domain.xml). It names files that live only as long as the harness's VM: the private copy of
each ephemeral disk and the UEFI vars copy in the VM's workdir, and the links (or copies) in
libvirt's image directory that staging made for files libvirt's QEMU could not reach. So the
commands first make those again, the way start() made them, then ``virsh define`` the same XML
(a persistent domain: the person's ``virsh`` connection does not hold it, unlike the
harness's auto-destroyed transient one), ``virsh start`` and ``virsh console``; the last lines
say how to leave the console and remove what the commands made.

The defined domain keeps the XML's name and refvm's origin mark, which names the run directory
the commands make again with ``mkdir -p``; without refvm's owner.json that directory is not a
run refvm can judge, so ``refvm clean`` leaves the hand-started domain alone while it exists
(and would remove the domain, as a dead run's, only once the directory is gone).
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path

from ...vmspec import private_copies
from .reap import run_directory

ESCAPE_NAME = "Ctrl-]"  # virsh console's escape


def commands(backend, spec, machine=None) -> tuple[list[list[str]], list[str]]:
    """(argv lists in run order, notes) for ``spec`` as ``backend`` started it; ``machine``
    (the running LibvirtMachine) adds what staging did for it."""
    virsh = ["virsh", "-c", backend.uri]
    view, copies = private_copies(spec)
    lines: list[list[str]] = [["mkdir", "-p", str(spec.workdir)]]
    sparse = ["--sparse=always"] if backend.driver == "qemu" else []  # GNU cp (Linux hosts)
    lines += [["cp", *sparse, str(image), str(copy)] for image, copy in copies]
    nvram = getattr(machine, "_nvram", None)
    if nvram is not None:
        template = backend.firmware_for(view).vars_template
        lines.append(["cp", str(template), str(nvram)])
    stage = getattr(machine, "_stage", None)
    lines += list(getattr(stage, "by_hand", []))
    name = spec.name
    lines += [[*virsh, "define", str(spec.logdir / "domain.xml")],
              [*virsh, "start", name],
              [*virsh, "console", name]]
    undefine = [*virsh, "undefine", *(["--nvram"] if nvram is not None else []), name]
    made = [str(run_directory(name, spec.workdir) or spec.workdir)]  # what mkdir -p made
    if stage is not None and stage.by_hand:
        made.append(str(stage.root))
    notes = [f"leave virsh console with {ESCAPE_NAME}; then remove the VM: "
             f"{_join([*virsh, 'destroy', name])}; {_join(undefine)}; "
             f"{_join(['rm', '-r', *made])}",
             f"run them once refvm has let go of {name} (a domain of that name runs until "
             f"then); meanwhile its console: {_join([*virsh, 'console', '--force', name])}"]
    scratch = [disk.path for disk in view.disks if _inside(disk.path, spec.workdir)
               and disk.path not in {copy for _, copy in copies}]
    if scratch:
        notes.append("the scenario's scratch disks (" + ", ".join(map(str, scratch)) + ") "
                     "were written by refvm and go with its VM: copy them while it runs")
    return lines, notes


def _inside(path: Path, directory: Path) -> bool:
    return os.path.commonpath([os.path.abspath(path), os.path.abspath(directory)]) == \
        os.path.abspath(directory)


def _join(argv: list[str]) -> str:
    return shlex.join(argv)
