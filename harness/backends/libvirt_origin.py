"""Which machine and run a refvm domain belongs to, written into the domain's own metadata.

A remote libvirt host can be shared by several CI machines, each running refvm. A domain's
name says which run started it (refvm-<run id>-<n>), but whether that run is still alive is
known only on the machine that started it. So every domain carries, in its ``<metadata>``,
the id of the machine whose harness started it, and reaping on a remote host touches only
domains of this machine's dead runs; on a local URI every refvm domain's run is one of ours.
"""
from __future__ import annotations

import functools
import socket
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

NAMESPACE = "https://refvm.invalid/xmlns/origin/1"  # an identifier, never fetched
PREFIX = "refvm"


@functools.cache
def this_machine() -> str:
    """A stable id of this machine: systemd's machine-id, FreeBSD's host UUID, or the name."""
    for path in (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id")):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text:
            return text
    try:
        out = subprocess.run(["sysctl", "-n", "kern.hostuuid"], capture_output=True,
                             text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return socket.gethostname()


def origin_element(run_id: str, machine: str | None = None) -> ET.Element:
    """``<refvm:origin machine=... run=.../>``, for a domain's ``<metadata>``."""
    ET.register_namespace(PREFIX, NAMESPACE)
    return ET.Element(f"{{{NAMESPACE}}}origin",
                      {"machine": machine or this_machine(), "run": run_id})


def origin_of(dom, libvirt) -> dict | None:
    """The origin a domain carries ({'machine', 'run'}), or None (none, or unreadable)."""
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, 0)
    except libvirt.libvirtError:
        return None
    try:
        element = ET.fromstring(text)
    except ET.ParseError:
        return None
    return {"machine": element.get("machine"), "run": element.get("run")}
