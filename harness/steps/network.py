"""virtio-net: link, address, MAC, and 8 MiB each way over TCP to a listener on the host.

The backend says where the host listener binds and at which address the guest reaches it
(QEMU user networking maps 10.0.2.2 to the host's loopback; bhyve's per-VM bridge has the
host at 10.210.N.1). The guest's address comes from DHCP where the backend's network offers
it (QEMU), and is otherwise configured by the step, as the backend says (bhyve: 10.210.N.2/24).
Both ends hash what they moved; the step compares those hashes and byte counts.
"""
from __future__ import annotations

import ipaddress
import time

from .. import schema as s
from ..errors import GuestFailure, InfraError
from ..hostio import TcpEndpoint
from ..model import NicAttach
from .registry import register
from .guestops import first_sha256, guest_op, integers, last_line


def _poll(ctx, op: str, deadline: float, done, **values) -> str:
    """Run ``op`` until ``done(last line)`` or the deadline; return the last line seen."""
    while True:
        value = last_line(guest_op(ctx, op, **values).output)
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(1)


def _has_op(ctx, op: str, **values) -> bool:
    """Whether the guest's family has a command for ``op`` (Windows guests ask for their
    own DHCP lease and have no nic_dhcp)."""
    try:
        ctx.guest.device_command(op, **values)
    except InfraError:
        return False
    return True


def address_plan(static: str | None) -> tuple[str, dict]:
    """How the guest gets its IPv4 address, from ``Machine.guest_static_ipv4()``:
    ("dhcp", {}) when that is None, else ("static", the values of the family's nic_set_ipv4
    command: ``address`` in CIDR form, and its halves ``ip`` and ``prefix``)."""
    if static is None:
        return "dhcp", {}
    try:
        iface = ipaddress.IPv4Interface(static)
    except ValueError:
        raise InfraError(f"the backend gave the guest a static address {static!r}, "
                         f"not an IPv4 address in CIDR form") from None
    return "static", {"address": iface.with_prefixlen, "ip": str(iface.ip),
                      "prefix": iface.network.prefixlen}


def bring_up(ctx, attach: NicAttach, timeout: float = 60.0) -> str:
    """The NIC found by its MAC, its link up and an IPv4 address on it (static where the
    backend says so, else DHCP: the guest's own client, or one lease the harness asks for
    when the guest has no network configuration); records what it saw; the address."""
    ifname = last_line(guest_op(ctx, "nic_by_mac", mac=attach.mac).output)
    if not ifname:
        raise GuestFailure(f"nic {attach.id}: no interface with MAC {attach.mac} in the guest")
    ctx.record(f"{attach.id}_interface", ifname)
    ctx.record(f"{attach.id}_mac", attach.mac)
    source, static = address_plan(ctx.vm.machine.guest_static_ipv4())
    ctx.record(f"{attach.id}_address_source", source)
    if static:  # nothing on this network hands out addresses: the guest sets its own
        guest_op(ctx, "nic_set_ipv4", ifname=ifname, **static)
    elif _has_op(ctx, "nic_dhcp", ifname=ifname):
        # A guest without network configuration gets its link up and a lease from us.
        how = last_line(guest_op(ctx, "nic_dhcp", ifname=ifname, timeout=timeout).output)
        ctx.record(f"{attach.id}_dhcp", how)
        if how == "no-dhcp-client":
            raise GuestFailure(f"nic {attach.id} ({ifname}): no address, and the guest has no "
                               "DHCP client (dhclient, udhcpc, dhcpcd) to ask for one")
    # Link and address come some seconds after boot (DHCP, the kernel's lazy link watcher).
    deadline = time.monotonic() + timeout
    state = _poll(ctx, "nic_state", deadline, lambda v: v == "up", ifname=ifname)
    if state != "up":
        raise GuestFailure(f"nic {attach.id} ({ifname}): link still {state!r} after "
                           f"{timeout:.0f}s, expected 'up'")
    wanted = static.get("ip")
    address = _poll(ctx, "nic_ipv4", deadline, (lambda v: v == wanted) if wanted else bool,
                    ifname=ifname)
    if not address:
        raise GuestFailure(f"nic {attach.id} ({ifname}): no IPv4 address after "
                           f"{timeout:.0f}s ({source})")
    if wanted and address != wanted:
        raise GuestFailure(f"nic {attach.id} ({ifname}): IPv4 address {address}, not the "
                           f"static {wanted} the step configured")
    ctx.record(f"{attach.id}_address", address)
    return address


@register("net_check", s.Map({
    "nic": s.F(s.Name(), required=True),
    "bytes": s.F(s.Size(minimum=1), default=8 << 20),
    "address_timeout": s.F(s.Seconds(), default=60.0),
}))
def net_check(ctx, args):
    attach = ctx.case.scenario.attachment(NicAttach, args["nic"])
    bring_up(ctx, attach, args["address_timeout"])
    host = ctx.vm.machine.host_address_for_guest()
    listen = ctx.vm.machine.host_listen_address()
    nbytes = args["bytes"]
    faults = ctx.faults

    # Guest -> host.
    endpoint = TcpEndpoint("from-guest", nbytes, host=listen)
    try:
        out = guest_op(ctx, "tcp_send", host=host, port=endpoint.port, length=nbytes).output
        sent = first_sha256(out, "tcp_send")
        got = endpoint.wait(30)
    finally:
        endpoint.close()
    ctx.record(f"{attach.id}_guest_to_host_bytes", got.nbytes)
    ctx.record(f"{attach.id}_guest_to_host_sha256", sent)
    ctx.record(f"{attach.id}_guest_to_host_seconds", round(got.seconds, 2))
    if got.error or got.nbytes != nbytes or got.sha256 != sent:
        raise GuestFailure(f"nic {attach.id}: guest sent {nbytes} bytes with sha256 {sent}; "
                           f"the host received {got.nbytes} bytes with sha256 {got.sha256} "
                           f"{got.error}".rstrip())

    # Host -> guest.
    endpoint = TcpEndpoint("to-guest", nbytes, host=listen, corrupt="net-to-guest" in faults)
    try:
        out = guest_op(ctx, "tcp_receive", host=host, port=endpoint.port).output
        got = endpoint.wait(30)
    finally:
        endpoint.close()
    count, = integers(out, "tcp_receive byte count")
    received = first_sha256(out, "tcp_receive")
    ctx.record(f"{attach.id}_host_to_guest_bytes", count)
    ctx.record(f"{attach.id}_host_to_guest_sha256", endpoint.sent_sha256)
    ctx.record(f"{attach.id}_host_to_guest_seconds", round(got.seconds, 2))
    if count != nbytes or received != endpoint.sent_sha256:
        raise GuestFailure(f"nic {attach.id}: host sent {nbytes} bytes with sha256 "
                           f"{endpoint.sent_sha256}; the guest received {count} bytes with "
                           f"sha256 {received}")
