"""Which machine and run a refvm domain belongs to, written into the domain's own metadata.

A remote libvirt host can be shared by several CI machines, each running refvm. A domain's
name says which run started it (refvm-<run id>-<n>), but whether that run is still alive is
known only on the machine that started it. So every domain carries, in its ``<metadata>``,
the id of the machine whose harness started it, and reaping, on any host, touches only
domains of this machine's dead runs (a local libvirtd may hold another machine's domains,
started here through the remote protocol).

It also carries the run's claimed directory (``workroot``, /tmp/refvm-<run id>): whether the
run lives is read from that directory's owner file, wherever it is. Judging by the reaping
process's own temp root instead would take a live run with another REFVM_TMP (a CI job beside
a developer's run, or `sudo refvm clean`, which drops TMPDIR) for a dead one.
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


def origin_element(run_id: str, machine: str | None = None,
                   workroot: str | None = None) -> ET.Element:
    """``<refvm:origin machine=... run=... workroot=.../>``, for a domain's ``<metadata>``."""
    ET.register_namespace(PREFIX, NAMESPACE)
    attributes = {"machine": machine or this_machine(), "run": run_id}
    if workroot:
        attributes["workroot"] = workroot
    return ET.Element(f"{{{NAMESPACE}}}origin", attributes)


def origin_of(dom, libvirt) -> dict | None:
    """The origin a domain carries ({'machine', 'run', 'workroot'}), or None (none, or
    unreadable). ``workroot`` is None on domains of refvm versions that did not write it."""
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, 0)
    except libvirt.libvirtError:
        return None
    try:
        element = ET.fromstring(text)
    except ET.ParseError:
        return None
    return {"machine": element.get("machine"), "run": element.get("run"),
            "workroot": element.get("workroot")}
