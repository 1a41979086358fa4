"""The key figures of a case, from the properties its steps recorded.

Steps record raw facts (``net0_guest_to_host_bytes``, ``..._seconds``, ``login_seconds``);
a reader wants rates. A transfer's rate is its bytes over its seconds, in MB/s (10^6 bytes),
computed here and nowhere else; a transfer without a duration has no rate (never invented).
Disk steps time a direction as ``<disk>_read_seconds`` (host to guest: the guest reads what
the host wrote) and ``<disk>_write_seconds`` (guest to host)."""
from __future__ import annotations

import re

_BYTES = re.compile(r"(?P<dev>.+)_(?P<dir>host_to_guest|guest_to_host)_bytes")
_DISK_SECONDS = {"host_to_guest": "read", "guest_to_host": "write"}
_ARROWS = {"host_to_guest": "host\u2192guest", "guest_to_host": "guest\u2192host"}


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def transfers(props: dict) -> list[dict]:
    """Every timed transfer: device, direction, bytes, seconds and MB/s."""
    out = []
    for key in sorted(props):
        match = _BYTES.fullmatch(key)
        if not match:
            continue
        dev, direction = match.group("dev"), match.group("dir")
        nbytes = _number(props[key])
        seconds = _number(props.get(f"{dev}_{direction}_seconds",
                                    props.get(f"{dev}_{_DISK_SECONDS[direction]}_seconds")))
        if nbytes is None or not seconds or seconds <= 0:
            continue
        out.append({"device": dev, "direction": _ARROWS[direction], "bytes": int(nbytes),
                    "seconds": seconds, "mb_per_s": round(nbytes / seconds / 1e6, 2)})
    return out


def key_figures(props: dict, guest=None) -> dict:
    """Name -> value of the figures a report shows for a case (numbers, not text)."""
    figures = {}
    # What the case's VM had, as it recorded it; the guest file's only for a case that never
    # booted (a variant such as vcpus-8 differs from its guest file).
    for name, fallback in (("vcpus", guest and guest.cpus),
                           ("memory_mib", guest and guest.memory >> 20)):
        value = _number(props.get(name))
        if value is not None:
            figures[name] = int(value)
        elif fallback:
            figures[name] = fallback
    for name in ("login_seconds", "poweroff_seconds"):
        value = _number(props.get(name))
        if value is not None:
            figures[name] = value
    for move in transfers(props):
        figures[f"{move['device']} {move['direction']} MB/s"] = move["mb_per_s"]
    return figures


def describe(figures: dict) -> str:
    """One short line of a case's figures, for the markdown table and the progress line."""
    parts = []
    if "login_seconds" in figures:
        parts.append(f"login {figures['login_seconds']:g} s")
    if "vcpus" in figures:
        parts.append(f"{figures['vcpus']} vCPU")
    parts += [f"{name[:-5]} {value:g} MB/s" for name, value in figures.items()
              if name.endswith(" MB/s")]
    return ", ".join(parts)
