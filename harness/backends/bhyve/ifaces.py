"""The taps and bridges refvm makes for bhyve VMs: marked as its own, and reaped only if so.

A tap or bridge outlives a killed run (they are kernel objects, like /dev/vmm entries). Its
unit number says nothing about who made it, so refvm marks each one at creation with an
ifconfig(8) ``description`` naming the run directory it belongs to (``refvm:/tmp/refvm-<run
id>``), and removes one only when that description is its mark and the run is dead
(harness/ownership.py). A tap somebody else made on a unit refvm wants is refused, not taken.
"""
from __future__ import annotations

import platform
import re
from pathlib import Path

from ...ownership import Verdict, run_directory_verdict
from .caps import run_quietly

MARK_PREFIX = "refvm:"
IFACE_HEADER = re.compile(r"^([A-Za-z][A-Za-z0-9_.]*[0-9]+): flags=")
DESCRIPTION = re.compile(r"^\s+description: (.*)$")
OURS = re.compile(r"(tap|bridge)[0-9]+")


def mark_for(workdir: Path) -> str:
    """The description a VM's taps and bridge carry: its run directory (workdir's parent)."""
    return MARK_PREFIX + str(Path(workdir).parent)


def parse_ifconfig(text: str) -> dict[str, str]:
    """``ifconfig [-a]`` output -> {interface: description ("" when it has none)}."""
    found: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        header = IFACE_HEADER.match(line)
        if header:
            current = header.group(1)
            found[current] = ""
            continue
        description = DESCRIPTION.match(line)
        if description and current is not None:
            found[current] = description.group(1).strip()
    return found


def verdict_for(description: str) -> Verdict | None:
    """Whose an interface is, from its description: None when it does not carry refvm's mark."""
    if not description.startswith(MARK_PREFIX):
        return None
    return run_directory_verdict(description[len(MARK_PREFIX):])


def describe(ifconfig: str, name: str) -> str | None:
    """``name``'s description ("" without one), or None when no such interface exists."""
    status, output = run_quietly([ifconfig, name])
    if status != 0:
        return None
    return parse_ifconfig(output).get(name, "")


def reap_interfaces(ifconfig: str = "ifconfig", log=lambda _text: None, dry_run: bool = False,
                    system: str | None = None) -> list[str]:
    """Destroy the taps and bridges of dead refvm runs on this (FreeBSD) host; return them.

    Taps first, then bridges (a bridge's members go with it, but a tap may be on none)."""
    if (system or platform.system()) != "FreeBSD":
        return []
    status, output = run_quietly([ifconfig, "-a"])
    if status != 0:
        log(f"cannot list network interfaces (exit {status}): {output.strip()[:200]}")
        return []
    removed = []
    interfaces = parse_ifconfig(output)
    for name in sorted(interfaces, key=lambda n: (not n.startswith("tap"), n)):
        verdict = verdict_for(interfaces[name])
        if verdict is None or not OURS.fullmatch(name):
            continue
        if not verdict.dead:
            if dry_run:
                log(f"kept {name}: {verdict.reason}")
            continue
        if dry_run:
            log(f"would destroy {name}: {verdict.reason}")
            removed.append(name)
            continue
        status, output = run_quietly([ifconfig, name, "destroy"])
        if status == 0:
            log(f"destroyed stale {name}: {verdict.reason}")
            removed.append(name)
        else:
            log(f"could not destroy stale {name} (exit {status}): {output.strip()[:200]}")
    return removed
