"""Hosts files (file:line: field errors, like every input file) and the pool that spreads a
matrix over hosts without running more than max_vms VMs on any of them."""
from __future__ import annotations

from collections import Counter

import pytest

from harness.errors import ConfigError, InfraError
from harness.hosts import Host, HostPool, load_hosts, parse_hosts

GOOD = """\
# two hosts
- uri: qemu:///system
  max_vms: 2
  backends: [libvirt, qemu]
- uri: qemu+tcp://build2.example/system
  max_vms: 3
  firmware: [uefi]
- uri: bhyve+ssh://root@bsd1/system
  name: bsd1
  firmware: [uefi, bhyveload]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_hosts(text, "hosts.yaml")
    return [str(p) for p in err.value.problems]


def test_a_good_file_with_defaults():
    local, build2, bsd1 = parse_hosts(GOOD, "hosts.yaml")
    assert local == Host("qemu:///system", "local", 2, ("uefi", "csm"), ("libvirt", "qemu"))
    assert build2 == Host("qemu+tcp://build2.example/system", "build2.example", 3, ("uefi",),
                          ("libvirt",))
    assert bsd1.name == "bsd1" and bsd1.max_vms == 1 and bsd1.firmware == ("uefi", "bhyveload")
    assert local.local and not build2.local


def test_load_hosts_reads_a_file(tmp_path):
    path = tmp_path / "hosts.yaml"
    path.write_text(GOOD)
    assert [h.name for h in load_hosts(path)] == ["local", "build2.example", "bsd1"]
    with pytest.raises(ConfigError, match=r"missing.yaml:0: --hosts: cannot read"):
        load_hosts(tmp_path / "missing.yaml")


def test_every_problem_is_reported_at_its_line():
    text = """\
- uri: qemu:///system
  max_vms: 0
- uri: qemu+tcp://10.0.0.5/system
  backends: [libvirt, qemu]
  firmware: [uefi, bhyveload, uefi]
- uri: qemu:///system
  maxvms: 2
- uri: http://x
- name: nouri
"""
    assert problems(text) == [
        "hosts.yaml:2: [0].max_vms: must be at least 1, got 0",
        "hosts.yaml:5: [1].firmware[2]: 'uefi' is listed twice",
        "hosts.yaml:4: [1].backends[1]: backend 'qemu' runs its hypervisor on this machine, "
        "but qemu+tcp://10.0.0.5/system is another host: use libvirt",
        "hosts.yaml:5: [1].firmware[1]: bhyveload boots bhyve guests only: use a bhyve:// URI "
        "or the bhyve backend",
        "hosts.yaml:7: [2].maxvms: unknown key; known keys: backends, firmware, max_vms, "
        "name, uri",
        "hosts.yaml:8: [3].uri: 'http://x' is not a libvirt URI such as qemu:///system or "
        "qemu+tcp://host/system",
        "hosts.yaml:9: [4].uri: required field is missing",
    ]


def test_a_host_listed_twice():
    assert problems("- uri: qemu:///system\n- uri: bhyve:///system\n  name: bsd\n"
                    "- uri: qemu:///system\n") \
        == ["hosts.yaml:4: [2].uri: qemu:///system is already host [0]"]


def test_same_default_name_needs_an_explicit_name():
    text = "- uri: qemu:///system\n- uri: qemu+tcp://127.0.0.1/system\n"
    assert problems(text) == ["hosts.yaml:2: [1].uri: host name 'local' is already used by "
                              "host [0]: give this one a name"]
    named = parse_hosts(text + "  name: loopback\n", "hosts.yaml")
    assert [h.name for h in named] == ["local", "loopback"]


def test_not_a_list_and_bad_yaml():
    assert problems("uri: qemu:///system\n") == [
        "hosts.yaml:1: (top): must be a non-empty list of hosts (- uri: ...)"]
    assert problems("- uri: qemu:///system\n  uri: x\n") == ["hosts.yaml:2: uri: duplicate key"]


def pool() -> HostPool:
    return HostPool(parse_hosts(GOOD, "hosts.yaml"))


def test_slots_interleave_hosts_up_to_each_max_vms():
    assert [slot.group for slot in pool().slots] == [
        "local#0", "build2.example#0", "bsd1#0", "local#1", "build2.example#1",
        "build2.example#2"]
    assert pool().capacity == 6


def test_the_pool_offers_a_firmware_when_any_host_runs_it_with_the_backend():
    offer = pool().offer("libvirt")
    assert offer.name == "libvirt"
    assert offer.unsupported("uefi") is None and offer.unsupported("bhyveload") is None
    qemu = pool().offer("qemu")
    assert qemu.unsupported("csm") is None  # local runs the qemu backend
    assert qemu.unsupported("bhyveload").startswith(
        "no host in the hosts file runs bhyveload firmware with the qemu backend")
    assert pool().offer("bhyve").unsupported("uefi") is not None
    assert "bsd1 (bhyve+ssh://root@bsd1/system, max_vms 1)" in offer.describe()


def test_a_matrix_spreads_over_every_host_that_can_run_it_within_max_vms():
    p = pool()
    cases = [(f"case{n}-{fw}", fw, "libvirt") for n in range(12) for fw in ("uefi", "csm")]
    assigned = p.assign(cases)
    hosts_used = Counter(assigned[key].host.name for key, fw, _ in cases if fw == "uefi")
    assert set(hosts_used) == {"local", "build2.example", "bsd1"}  # uefi runs everywhere
    # csm only on local (build2 is uefi only, bsd1 has no csm): both local slots share it.
    assert {assigned[key].group for key, fw, _ in cases if fw == "csm"} == \
        {"local#0", "local#1"}
    # Every slot is one xdist group (one worker, one VM at a time): per-host concurrency is
    # the number of its slots, never more than max_vms.
    per_host = Counter(slot.host.name for slot in {a.group: a for a in assigned.values()}
                       .values())
    assert per_host == {"local": 2, "build2.example": 3, "bsd1": 1}
    # Least-loaded first: the 12 csm cases fill the two local slots (6 each), so the uefi
    # cases go to the other hosts' slots (one went to local#0 before any csm case).
    assert Counter(a.group for a in assigned.values()) == {
        "local#0": 7, "local#1": 6, "build2.example#0": 3, "bsd1#0": 3,
        "build2.example#1": 3, "build2.example#2": 2}


def test_assignment_is_deterministic_and_says_when_no_host_fits():
    p = pool()
    cases = [("a", "uefi", "libvirt"), ("b", "bhyveload", "libvirt"), ("c", "csm", "bhyve")]
    first, second = p.assign(cases), p.assign(cases)
    assert {k: v and v.group for k, v in first.items()} == \
        {k: v and v.group for k, v in second.items()}
    assert first["b"].host.name == "bsd1"
    assert first["c"] is None
    assert p.why_none("csm", "bhyve").startswith(
        "no host in the hosts file runs csm firmware with the bhyve backend (hosts: local: "
        "uefi/csm via libvirt/qemu")


def test_an_empty_pool_is_refused():
    with pytest.raises(InfraError, match="lists no host"):
        HostPool([])


def test_each_firmware_spreads_over_the_hosts_too():
    """A matrix lists uefi, csm, uefi, csm...: plain least-loaded would put every uefi case on
    the first host and every csm case on the second, so no host would run both."""
    two = HostPool(parse_hosts("- uri: qemu:///system\n- uri: qemu+tcp://b/system\n",
                               "hosts.yaml"))
    cases = [(f"s{n}-{fw}", fw, "libvirt") for n in range(5) for fw in ("uefi", "csm")]
    assigned = two.assign(cases)
    spread = {fw: Counter(assigned[k].host.name for k, f, _ in cases if f == fw)
              for fw in ("uefi", "csm")}
    assert spread == {"uefi": {"local": 3, "b": 2}, "csm": {"local": 2, "b": 3}}
    assert Counter(slot.host.name for slot in assigned.values()) == {"local": 5, "b": 5}


def test_uris_with_ipv6_addresses_ports_users_and_parameters():
    text = ("- uri: qemu+tcp://[fd00::5]:16509/system\n"
            "- uri: qemu+ssh://ci@build3:2222/system?keyfile=/root/.ssh/ci&no_verify=1\n"
            "- uri: bhyve+ssh://root@[::1]/system\n")
    hosts = parse_hosts(text, "hosts.yaml")
    assert [(h.name, h.local) for h in hosts] == [("fd00-5", False), ("build3", False),
                                                  ("local", True)]


def test_a_uri_urlparse_cannot_read_is_refused_on_its_line():
    # An unbalanced '[' makes urllib raise ValueError: refused by the pattern first.
    assert problems("- uri: qemu:///system\n- uri: qemu+tcp://[fe80::1/system\n") == [
        "hosts.yaml:2: [1].uri: 'qemu+tcp://[fe80::1/system' is not a libvirt URI such as "
        "qemu:///system or qemu+tcp://host/system"]


def test_a_hosts_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "hosts.yaml"
    path.write_bytes(b"- uri: qemu:///system\n  # caf\xe9\n")
    with pytest.raises(ConfigError) as err:
        load_hosts(path)
    assert [str(p) for p in err.value.problems] == [
        f"{path}:2: --hosts: not UTF-8 text: byte 0xe9 at offset 29"]


def test_uris_libvirt_documents_are_accepted():
    text = "".join(f"- uri: {uri}\n  name: h{i}\n" for i, uri in enumerate([
        "qemu+tls://kvm1.example.com:16514/system?pkipath=/etc/pki/refvm",
        "qemu+ssh://ci@10.0.0.7:22/system?keyfile=~/.ssh/id_ed25519&known_hosts=/etc/ssh/kh"
        "&no_verify=1",
        "qemu+unix:///session?socket=/run/user/1000/libvirt/virtqemud-sock",
        "bhyve+ssh://root@[2001:db8::7]:2222/system?sshauth=privkey,agent",
        "qemu+tcp://h:1/system", "qemu+tcp://h:65535/system", "test:///session",
    ]))
    assert [h.uri.split(":")[0] for h in parse_hosts(text, "hosts.yaml")] == [
        "qemu+tls", "qemu+ssh", "qemu+unix", "bhyve+ssh", "qemu+tcp", "qemu+tcp", "test"]
