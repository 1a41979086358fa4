"""Taps and bridges on a bhyve host: refvm marks its own and removes only those.

Run against tests/fake_bhyve.py standing in for FreeBSD's ifconfig (interfaces, with their
descriptions, come from its control file), so the real reaping and start-up code runs.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.backends.bhyve.argv import tap_names
from harness.backends.bhyve.ifaces import mark_for, parse_ifconfig, reap_interfaces
from harness.errors import InfraError
from harness.ownership import make_owned
from harness.vmspec import Nic
from tests.test_bhyve_lifecycle import host, make_backend, make_spec  # noqa: F401 - fixture

FREEBSD_IFCONFIG = """\
vtnet0: flags=1008843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST,LOWER_UP> metric 0 mtu 1500
\toptions=4e07bb<RXCSUM,TXCSUM,VLAN_MTU>
\tinet 192.0.2.10 netmask 0xffffff00 broadcast 192.0.2.255
tap3: flags=8943<UP,BROADCAST,RUNNING,PROMISC,SIMPLEX,MULTICAST> metric 0 mtu 1500
\tdescription: refvm:/tmp/refvm-0123abcd
\toptions=80000<LINKSTATE>
bridge0: flags=8843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST> metric 0 mtu 1500
\tdescription: vm-public (somebody else's)
"""


def test_parse_ifconfig_reads_names_and_descriptions():
    assert parse_ifconfig(FREEBSD_IFCONFIG) == {
        "vtnet0": "", "tap3": "refvm:/tmp/refvm-0123abcd", "bridge0": "vm-public (somebody else's)"}


def dead_run(root: Path) -> Path:
    return Path(subprocess.run(
        [sys.executable, "-c", "import sys; from harness.ownership import make_owned; "
                               "print(make_owned('run', sys.argv[1]))", str(root)],
        capture_output=True, text=True, check=True).stdout.strip())


def test_only_marked_interfaces_of_dead_runs_are_destroyed(host, tmp_path):  # noqa: F811
    live, dead = make_owned("run", tmp_path), dead_run(tmp_path)
    host.set(interfaces={
        "tap1": f"refvm:{dead}", "bridge4": f"refvm:{dead}",          # a killed run's
        "tap2": f"refvm:{tmp_path / 'refvm-9999aaaa'}",                # its run dir is gone
        "tap3": f"refvm:{live}", "bridge5": f"refvm:{live}",          # a live run's
        "tap4": "", "bridge6": "lab bridge", "tap5": "refvm:/home/me/refvm-photos",
        "em0": f"refvm:{dead}",                                        # not a tap or bridge
    })
    ifconfig = host.programs.ifconfig
    said: list = []
    assert reap_interfaces(ifconfig, said.append, dry_run=True, system="FreeBSD") == [
        "tap1", "tap2", "bridge4"]
    assert [c for c in host.calls() if c[-1] == "destroy"] == []
    assert "would destroy tap1: its owner, pid " in " ".join(said)
    assert reap_interfaces(ifconfig, said.append, system="FreeBSD") == ["tap1", "tap2", "bridge4"]
    assert [c for c in host.calls() if c[-1] == "destroy"] == [
        ["ifconfig", "tap1", "destroy"], ["ifconfig", "tap2", "destroy"],
        ["ifconfig", "bridge4", "destroy"]]
    assert reap_interfaces(ifconfig, said.append, system="Linux") == []  # no bhyve taps there


def test_a_stale_tap_of_a_dead_run_is_replaced(host, tmp_path):  # noqa: F811
    spec = make_spec(tmp_path, nics=(Nic(),))
    tap, = tap_names(spec)
    host.set(interfaces={tap: f"refvm:{dead_run(tmp_path)}"})
    machine = make_backend(host, tmp_path).start(spec)
    machine.destroy()
    calls = host.calls()
    assert calls[1:4] == [["ifconfig", tap], ["ifconfig", tap, "destroy"],
                          ["ifconfig", "bridge", "create", "description", mark_for(spec.workdir)]]


@pytest.mark.parametrize("description", ["", "somebody's VM", "refvm:LIVE"])
def test_a_tap_that_is_not_a_dead_runs_is_refused_and_kept(host, tmp_path, description):  # noqa: F811
    spec = make_spec(tmp_path, nics=(Nic(),))
    tap, = tap_names(spec)
    if description == "refvm:LIVE":
        description = f"refvm:{make_owned('run', tmp_path)}"
    host.set(interfaces={tap: description})
    with pytest.raises(InfraError, match=f"{tap}, which {spec.name} needs, already exists and "
                                         f"is left alone"):
        make_backend(host, tmp_path).start(spec)
    assert ["ifconfig", tap, "destroy"] not in host.calls()
    assert not any(c[:3] == ["ifconfig", "bridge", "create"] for c in host.calls())
