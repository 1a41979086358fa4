"""QEMU user networking's monitor output, read where the harness forwards the guest's sshd.

Why this exists: the QEMU backend forwards a loopback port to port 22 at launch, and the
libvirt backend (whose ``<interface type='user'>`` takes no forward) adds the same forward to the
running domain with HMP's ``hostfwd_add``; both ask QEMU which port it bound (port 0: the host
picks, so no other run can take it between choosing and binding) from ``info usernet``.
"""
from __future__ import annotations

import re

_FORWARD = re.compile(r"TCP\[HOST_FORWARD\]\s+\d+\s+127\.0\.0\.1\s+(\d+)\s+\S+\s+22\b")
# "info network": a NIC line with its MAC, then its backend indented under it:
#   net0: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:5a:00:22
#    \ hostnet0: index=0,type=user,net=10.0.2.0,restrict=off
_NIC_THEN_USER = r"macaddr={mac}\s*\n\s*\\ ([A-Za-z0-9_.-]+): index=\d+,type=user"
SSH_FORWARD = "tcp:127.0.0.1:0-:22"  # hostfwd's syntax: loopback, a port the host picks


def forwarded_ssh_port(info_usernet: str) -> int | None:
    """The loopback port forwarded to the guest's port 22, if there is one."""
    found = _FORWARD.search(info_usernet)
    return int(found.group(1)) if found else None


def user_netdev_of(info_network: str, mac: str) -> str | None:
    """The id of the user-networking backend of the NIC with ``mac`` (libvirt's hostnetN)."""
    found = re.search(_NIC_THEN_USER.format(mac=re.escape(mac.lower())), info_network)
    return found.group(1) if found else None
