"""Choose QEMU's accelerator by *booting Linux* with it, not by looking at /dev/kvm.

On some hosts /dev/kvm opens and even runs real-mode code, yet a Linux kernel under it prints
nothing at all (seen on our CI machines: nested virtualisation without basic CPUID features).
So ``auto`` boots the reference guest under KVM and waits for its login prompt; if it does not
come within a few times a healthy boot, the harness uses TCG and says why. Without a built
reference guest there is nothing honest to probe with, and ``auto`` picks TCG, saying so.
The verdict is cached per host boot, QEMU binary and probe image.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ... import hostproc
from ...errors import InfraError
from ...process import deathsig_request

PROBE_TIMEOUT = 30.0  # a healthy KVM boots the reference guest to its prompt in a few seconds
LOGIN_MARKER = b"login:"


@dataclass(frozen=True)
class AccelChoice:
    name: str  # kvm | tcg
    reason: str


def probe(qemu: str, accel: str, image: Path, timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
    """Boot ``image`` (legacy BIOS, serial console) under ``accel``; (works, what happened)."""
    argv = [qemu, "-accel", accel, "-machine", "pc", "-m", "256", "-nodefaults",
            "-no-user-config", "-display", "none", "-serial", "stdio",
            "-drive", f"file={image},format=raw,if=virtio,readonly=on"]
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, preexec_fn=deathsig_request())
    except OSError as err:
        return False, f"cannot run {qemu}: {err}"
    seen = b""
    started = time.monotonic()
    try:
        while LOGIN_MARKER not in seen and time.monotonic() - started < timeout:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                seen = (seen + chunk)[-65536:]
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    if LOGIN_MARKER in seen:
        return True, f"the reference guest booted under {accel} in " \
                     f"{time.monotonic() - started:.1f}s"
    return False, f"the reference guest printed no login prompt under {accel} " \
                  f"within {timeout:.0f}s ({len(seen)} bytes of console output)"


def choose(qemu: str, requested: str, cache_dir: Path | None,
           probe_image: Path | None = None) -> AccelChoice:
    """Resolve ``auto``/``kvm``/``tcg`` into the accelerator to use, with the reason."""
    if requested == "tcg":
        return AccelChoice("tcg", "tcg requested")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        verdict = {"kvm": False, "why": "/dev/kvm is missing or not accessible"}
    elif probe_image is None:
        verdict = {"kvm": False, "why": "KVM untested: no reference guest image to probe with "
                                        "yet (run: refvm images fetch)"}
    else:
        key = _cache_key(qemu, probe_image)
        verdict = _read_cache(cache_dir, key)
        if verdict is None:
            works, why = probe(qemu, "kvm", probe_image)
            verdict = {"kvm": works, "why": why}
            _write_cache(cache_dir, key, verdict)
    if verdict["kvm"]:
        return AccelChoice("kvm", verdict["why"])
    if requested == "kvm":
        raise InfraError(f"KVM was requested but is not usable here: {verdict['why']}")
    return AccelChoice("tcg", f"KVM not used: {verdict['why']}; using TCG")


def _cache_key(qemu: str, probe_image: Path) -> str:
    boot_id = hostproc.boot_id()
    binary = shutil.which(qemu)
    stamp = os.stat(binary).st_mtime_ns if binary else 0
    return f"{boot_id}:{binary}:{stamp}:{probe_image}"


def _read_cache(cache_dir: Path | None, key: str):
    if cache_dir is None:
        return None
    try:
        data = json.loads((cache_dir / "accel.json").read_text())
        return data if data.get("key") == key else None
    except (OSError, ValueError):
        return None


def _write_cache(cache_dir: Path | None, key: str, verdict: dict) -> None:
    if cache_dir is None:
        return
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f"accel.json.{os.getpid()}"
    tmp.write_text(json.dumps(dict(verdict, key=key)))
    tmp.replace(cache_dir / "accel.json")
