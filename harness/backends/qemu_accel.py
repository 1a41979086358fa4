"""Choose QEMU's accelerator by *booting* with it, not by looking at /dev/kvm.

On some hosts /dev/kvm opens fine but guests hang under it (nested virtualisation gone wrong).
So ``auto`` boots a 512-byte probe that prints a line on COM1 and halts; if that line does not
arrive under KVM within a few seconds, the harness falls back to TCG and says so. The verdict
is cached per host boot, so only the first run after a reboot pays for the probe.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import InfraError
from ..process import _die_with_parent

PROBE_MESSAGE = b"REFVM-ACCEL-OK"
PROBE_TIMEOUT = 8.0
IMAGE_PROBE_TIMEOUT = 30.0  # a healthy KVM boots the reference guest in a few seconds
LOGIN_MARKER = b"login:"


def probe_boot_sector() -> bytes:
    """A BIOS boot sector: print PROBE_MESSAGE on port 0x3f8 (COM1), then halt forever."""
    code = bytes([
        0xFA,                    # cli
        0x31, 0xC0,              # xor ax, ax
        0x8E, 0xD8,              # mov ds, ax
        0xBA, 0xF8, 0x03,        # mov dx, 0x3f8
        0xBE, 0x17, 0x7C,        # mov si, 0x7c17 (the message, right after this code)
        0xFC,                    # cld
        0xAC,                    # next: lodsb
        0x84, 0xC0,              # test al, al
        0x74, 0x03,              # jz halt
        0xEE,                    # out dx, al
        0xEB, 0xF8,              # jmp next
        0xF4,                    # halt: hlt
        0xEB, 0xFD,              # jmp halt
    ])
    assert len(code) == 0x17
    sector = code + PROBE_MESSAGE + b"\r\n\0"
    return sector.ljust(510, b"\0") + b"\x55\xaa"


@dataclass(frozen=True)
class AccelChoice:
    name: str  # kvm | tcg
    reason: str


def probe(qemu: str, accel: str, image: Path | None = None,
          timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
    """Boot under ``accel``; return (works, what happened).

    With ``image`` (the reference guest), the probe is a real Linux boot to its login prompt:
    the only test that catches a KVM that runs real-mode code but hangs a kernel. Without it,
    the 512-byte probe sector still catches a KVM that cannot run anything at all.
    """
    with tempfile.TemporaryDirectory(prefix="refvm-probe-") as tmp:
        if image is None:
            disk, marker, fmt = Path(tmp) / "probe.img", PROBE_MESSAGE, "if=ide"
            disk.write_bytes(probe_boot_sector())
        else:
            disk, marker, fmt = image, LOGIN_MARKER, "if=virtio,readonly=on"
            timeout = max(timeout, IMAGE_PROBE_TIMEOUT)
        argv = [qemu, "-accel", accel, "-machine", "pc", "-m", "256", "-nodefaults",
                "-no-user-config", "-display", "none", "-serial", "stdio",
                "-drive", f"file={disk},format=raw,{fmt}"]
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        except OSError as err:
            return False, f"cannot run {qemu}: {err}"
        seen = b""
        started = time.monotonic()
        try:
            while marker not in seen and time.monotonic() - started < timeout:
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
        what = "a Linux guest booted to its login prompt" if image else "a probe sector ran"
        if marker in seen:
            return True, f"{what} under {accel} in {time.monotonic() - started:.1f}s"
        said = [line for line in seen.decode("utf-8", "replace").splitlines() if line.strip()]
        why = said[-1].strip() if said and image is None else \
            f"no {marker.decode()!r} within {timeout:.0f}s (the guest hangs)"
        return False, f"{accel} probe failed: {why}"


def choose(qemu: str, requested: str, cache_dir: Path | None,
           probe_image: Path | None = None) -> AccelChoice:
    """Resolve ``auto``/``kvm``/``tcg`` into the accelerator to use, with the reason."""
    if requested == "tcg":
        return AccelChoice("tcg", "tcg requested")
    key = _cache_key(qemu, probe_image)
    cached = _read_cache(cache_dir, key)
    if cached is None:
        works, why = probe(qemu, "kvm", probe_image) if os.access("/dev/kvm", os.R_OK | os.W_OK) \
            else (False, "/dev/kvm is missing or not accessible")
        cached = {"kvm": works, "why": why}
        _write_cache(cache_dir, key, cached)
    if cached["kvm"]:
        return AccelChoice("kvm", cached["why"])
    if requested == "kvm":
        raise InfraError(f"KVM was requested but is not usable here: {cached['why']}")
    return AccelChoice("tcg", f"KVM not usable ({cached['why']}); using TCG")


def _cache_key(qemu: str, probe_image: Path | None) -> str:
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = "unknown"
    try:
        stamp = os.stat(subprocess.check_output(["which", qemu], text=True).strip()).st_mtime
    except (OSError, subprocess.CalledProcessError):
        stamp = 0
    return f"{boot_id}:{qemu}:{stamp}:{probe_image or 'sector'}"


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
