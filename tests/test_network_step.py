"""net_check: a static address where the backend's network has no DHCP (bhyve), DHCP otherwise.

The guest is a stand-in console that answers the linux family's commands and records them in
order; its `nc` really connects to the step's host listener (on loopback here), so the whole
step runs, transfers included.
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
from types import SimpleNamespace

import pytest

from harness.guestos import CommandResult
from harness.errors import GuestFailure, InfraError
from harness.families import family
from harness.model import NicAttach
from harness.steps.network import address_plan, net_check

MAC = "52:54:00:5a:00:01"
NC = re.compile(r"\bnc (?:-N )?([0-9.]+) (\d+)")


class GuestShell:
    """Answers the linux family's net_check commands for one NIC, eth0; records each one."""

    def __init__(self, dhcp_address: str = "", link_up_after: int = 0, takes_static=True,
                 dhcp_client: str = "own-client"):
        self.commands: list[str] = []
        self.dhcp_client = dhcp_client  # what nic_dhcp finds: own-client, dhclient, none
        self.addresses: list[str] = [dhcp_address] if dhcp_address else []
        self.link_up_after = link_up_after  # operstate reads that still say "down"
        self.takes_static = takes_static
        self.received_sha256 = ""  # of what the last tcp_receive got from the host

    @staticmethod
    def device_command(op: str, **values) -> str:
        return family("linux").device_command(op, **values)

    def run(self, command: str, timeout: float) -> CommandResult:
        self.commands.append(command)
        output, status = self._answer(command)
        return CommandResult(command, status, output, 0.0)

    def _answer(self, command: str) -> tuple[str, int]:
        if command.startswith("for i in /sys/class/net/"):
            return ("eth0", 0) if f'"{MAC}"' in command else ("", 0)
        if command.startswith("ip link set eth0 up;"):  # nic_dhcp
            if self.addresses:
                return "own-address", 0
            if self.dhcp_client == "dhclient":
                self.addresses.append("10.0.2.15")
            return ("no-dhcp-client" if self.dhcp_client == "none" else self.dhcp_client), 0
        if command.startswith("ip addr add "):
            if self.takes_static:
                self.addresses.append(command.split()[3].split("/")[0])
            return "", 0
        if command == "cat /sys/class/net/eth0/operstate":
            if self.link_up_after:
                self.link_up_after -= 1
                return "down", 0
            return "up", 0
        if command.startswith("ip -4 addr show dev eth0"):
            return "\n".join(self.addresses), 0
        host, port = NC.search(command).groups()
        if command.startswith("head -c "):  # tcp_send
            data = os.urandom(int(command.split()[2]))
            with socket.create_connection((host, int(port)), timeout=10) as conn:
                conn.sendall(data)
            return hashlib.sha256(data).hexdigest(), 0
        with socket.create_connection((host, int(port)), timeout=10) as conn:  # tcp_receive
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
        self.received_sha256 = hashlib.sha256(data).hexdigest()
        return f"{len(data)}\n{self.received_sha256}", 0


class Machine:
    def __init__(self, static: str | None):
        self.static = static

    def guest_static_ipv4(self) -> str | None:
        return self.static

    def host_address_for_guest(self) -> str:
        return "127.0.0.1"

    def host_listen_address(self) -> str:
        return "127.0.0.1"


def make_ctx(shell: GuestShell, static: str | None):
    records: dict = {}
    attach = NicAttach("net0", "virtio-net", MAC)
    scenario = SimpleNamespace(attachment=lambda kind, ident: attach, timeout=60)
    ctx = SimpleNamespace(
        case=SimpleNamespace(scenario=scenario), vm=SimpleNamespace(machine=Machine(static)),
        guest=shell, faults=frozenset(),
        record=records.__setitem__, remaining=lambda wanted: wanted)
    return ctx, records


ARGS = {"nic": "net0", "bytes": 4096, "address_timeout": 5.0}


def test_a_static_address_is_set_before_link_and_address_are_awaited():
    shell = GuestShell(link_up_after=1)
    ctx, records = make_ctx(shell, "10.210.2.2/24")
    net_check(ctx, ARGS)
    ops = [c.split()[0] if not c.startswith("ip ") else " ".join(c.split()[:3])
           for c in shell.commands]
    assert ops[:5] == ["for", "ip addr add", "cat", "cat", "ip -4 addr"]
    assert shell.commands[1] == "ip addr add 10.210.2.2/24 dev eth0 && ip link set eth0 up"
    assert records["net0_address_source"] == "static"
    assert records["net0_address"] == "10.210.2.2"
    assert records["net0_guest_to_host_bytes"] == records["net0_host_to_guest_bytes"] == 4096
    assert records["net0_host_to_guest_sha256"] == shell.received_sha256
    assert len(shell.received_sha256) == 64


def test_dhcp_sends_no_address_command():
    shell = GuestShell(dhcp_address="10.0.2.15")
    ctx, records = make_ctx(shell, None)
    net_check(ctx, ARGS)
    assert not any(c.startswith("ip addr add") for c in shell.commands)
    assert (records["net0_address_source"], records["net0_address"]) == ("dhcp", "10.0.2.15")


def test_a_guest_without_network_configuration_gets_a_lease_from_the_harness():
    shell = GuestShell(dhcp_client="dhclient")
    ctx, records = make_ctx(shell, None)
    net_check(ctx, ARGS)
    assert shell.commands[1].startswith("ip link set eth0 up;")
    assert "dhclient -1 -4 eth0" in shell.commands[1]
    assert (records["net0_dhcp"], records["net0_address"]) == ("dhclient", "10.0.2.15")


def test_a_guest_with_no_address_and_no_dhcp_client_fails_saying_so():
    ctx, _ = make_ctx(GuestShell(dhcp_client="none"), None)
    with pytest.raises(GuestFailure, match="no DHCP client"):
        net_check(ctx, ARGS)


def test_a_static_address_the_guest_did_not_take_fails():
    shell = GuestShell(dhcp_address="169.254.3.4", takes_static=False)
    ctx, _ = make_ctx(shell, "10.210.2.2/24")
    with pytest.raises(GuestFailure, match="169.254.3.4, not the static 10.210.2.2"):
        net_check(ctx, dict(ARGS, address_timeout=1.0))


def test_address_plan():
    assert address_plan(None) == ("dhcp", {})
    assert address_plan("10.210.7.2/24") == (
        "static", {"address": "10.210.7.2/24", "ip": "10.210.7.2", "prefix": 24})
    with pytest.raises(InfraError, match="not an IPv4 address in CIDR form"):
        address_plan("10.210.7.2/24; reboot")


@pytest.mark.parametrize("name, command", [
    ("linux", "ip addr add 10.210.7.2/24 dev eth0 && ip link set eth0 up"),
    ("freebsd", "ifconfig vtnet0 inet 10.210.7.2/24 up"),
    ("windows", "powershell -NoProfile -Command \"$ErrorActionPreference='Stop'; "
                "$null = New-NetIPAddress -InterfaceAlias "
                "'Ethernet' -AddressFamily IPv4 -IPAddress 10.210.7.2 -PrefixLength 24\""),
])
def test_every_family_can_set_a_static_address(name, command):
    ifname = {"linux": "eth0", "freebsd": "vtnet0", "windows": "Ethernet"}[name]
    _, values = address_plan("10.210.7.2/24")
    assert family(name).device_command("nic_set_ipv4", ifname=ifname, **values) == command
