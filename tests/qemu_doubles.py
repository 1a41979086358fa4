"""Helpers for the tests that run `refvm run` against a TEST DOUBLE of qemu-system-x86_64
playing a guest's console (tests/fake_qemu_freebsd.py, tests/fake_qemu_windows.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def fake_qemu(tmp_path: Path, script: Path) -> Path:
    """An executable named like QEMU that runs the double ``script``."""
    qemu = tmp_path / "qemu-system-x86_64"
    qemu.write_text(f"#!/bin/sh\nexec {sys.executable} {script} \"$@\"\n")
    qemu.chmod(0o755)
    return qemu


def run_through_double(tmp_path: Path, guest: Path, qemu: Path, log_variable: str,
                       firmware: str, env=None, scenarios=("boot",), timeout: float = 120):
    """`refvm run` of ``scenarios`` for ``guest`` with the double as QEMU; returns (process,
    junit root, what the double wrote to the JSON-lines log named by ``log_variable``)."""
    log, junit = tmp_path / "double.jsonl", tmp_path / "junit.xml"
    log.unlink(missing_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--guest", str(guest),
         *(arg for name in scenarios for arg in ("--scenario", name)), "--firmware", firmware, "--accel", "tcg", "--qemu-binary", str(qemu),
         "--artifacts", str(tmp_path / "artifacts"), "--junitxml", str(junit),
         "-p", "no:cacheprovider"],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env=dict(os.environ, **{log_variable: str(log)}, **(env or {})))
    said = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, ET.parse(junit).getroot(), said


def properties(root, name=None) -> dict:
    """The recorded properties of the one test case (or the one whose id starts ``name``)."""
    case, = (c for c in root.iter("testcase") if name is None or c.get("name").startswith(name))
    return {p.get("name"): p.get("value") for p in case.iter("property")}


def start_double(tmp_path: Path, script: Path, family_name: str, secrets=(), **spec):
    """The real QEMU backend's machine for a small VM (CSM, unless ``spec`` changes that or
    other VmSpec fields) whose QEMU is the double ``script``, and a SerialConsole on its COM1
    with the family's failure patterns; returns (machine, console, log). The caller resumes
    the machine and destroys it."""
    from harness.backends.qemu.backend import QemuBackend
    from harness.console.log import ConsoleLog
    from harness.console.serial import SerialConsole
    from harness.families import family
    from harness.vmspec import Disk, SerialPort, VmSpec

    image = tmp_path / "disk.raw"
    image.write_bytes(b"\0" * 4096)
    spec = VmSpec(**dict(dict(
        name="refvm-0123abcd-1", memory_mib=256, cpus=1, firmware="csm",
        uuid="00000000-0000-4000-8000-000000000001", utc_clock=True, workdir=tmp_path / "w",
        logdir=tmp_path / "logs", disks=(Disk(image, ephemeral=True, boot=True),),
        serials=(SerialPort("com1"),)), **spec))
    machine = QemuBackend(accel="tcg", binary=str(fake_qemu(tmp_path, script))).start(spec)
    log = ConsoleLog(tmp_path / "console.log", secrets=secrets)
    console = SerialConsole(machine.open_console("com1"), log,
                            family(family_name).failure_patterns)
    return machine, console, log
