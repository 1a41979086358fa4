"""How a pool run is collected and planned, without booting: every runnable case is pinned to a
host slot (its xdist group), a firmware no host offers is a skip naming the hosts, a bad hosts
file is one file:line error, and `refvm plan --hosts` says which host runs what."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.cli import _parallel_options

REPO = Path(__file__).resolve().parents[1]

TWO_HOSTS = """\
- uri: qemu:///system
  name: unix
  max_vms: 2
- uri: qemu+tcp://127.0.0.1/system
  name: tcp
  firmware: [uefi]
"""

# A pytest plugin (a test double for nothing: it only prints) that shows what the refvm plugin
# decided for each item at the end of collection.
PRINT_PLUGIN = '''
import json

def pytest_collection_finish(session):
    for item in session.items:
        groups = [m.args[0] for m in item.iter_markers("xdist_group")]
        host = getattr(item, "host", None)
        print("ITEM " + json.dumps({"id": item.nodeid.split("::")[-1], "groups": groups,
                                    "host": host and host.name,
                                    "skip": getattr(item, "skip_reason", None)}))
'''


def collect(tmp_path, hosts_text: str, *args: str) -> tuple[int, list[dict], str]:
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(hosts_text)
    (tmp_path / "print_items.py").write_text(PRINT_PLUGIN)
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "scenarios", "--collect-only", "-q",
         "-p", "no:cacheprovider", "-p", "print_items", "--backend", "libvirt",
         "--guest", "refguest", "--hosts", str(hosts), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    items = [json.loads(line[5:]) for line in proc.stdout.splitlines()
             if line.startswith("ITEM ")]
    return proc.returncode, items, proc.stdout + proc.stderr


def test_every_case_is_pinned_to_one_host_slot(tmp_path):
    code, items, output = collect(tmp_path, TWO_HOSTS)
    assert code == 0, output
    devices = [i for i in items if i["id"].split("[")[0] in
               ("boot", "virtio-blk", "nvme", "virtio-net", "uart")]
    assert len(devices) == 10  # 5 scenarios x uefi, csm
    skipped = {i["id"] for i in items if i["skip"]}
    assert {"ssh[refguest-uefi-libvirt]", "ssh[refguest-csm-libvirt]"} <= skipped
    items = [i for i in items if not i["skip"]]  # e.g. nvram-persist under csm, ssh (no sshd)
    for item in items:
        assert len(item["groups"]) == 1, item
        assert item["groups"][0].split("#")[0] == item["host"]
    uefi_hosts = {i["host"] for i in items if "-uefi-" in i["id"]}
    csm = [i for i in items if "-csm-" in i["id"]]
    assert uefi_hosts == {"unix", "tcp"}  # spread over both hosts
    assert {i["host"] for i in csm} == {"unix"}  # tcp offers uefi only
    assert {i["groups"][0] for i in csm} == {"unix#0", "unix#1"}  # max_vms 2: two slots


def test_a_firmware_no_host_offers_is_a_skip_naming_the_hosts(tmp_path):
    code, items, output = collect(tmp_path, TWO_HOSTS.replace("  max_vms: 2\n",
                                                              "  firmware: [uefi]\n"))
    assert code == 0, output
    csm = [i for i in items if "-csm-" in i["id"]]
    assert csm and all(not i["groups"] and i["host"] is None for i in csm)
    assert csm[0]["skip"].startswith("no host in the hosts file runs csm firmware with the "
                                     "libvirt backend (hosts: unix: uefi via libvirt, tcp: "
                                     "uefi via libvirt)")


def test_a_bad_hosts_file_is_one_line_and_no_traceback(tmp_path):
    code, _items, output = collect(tmp_path, "- uri: qemu:///system\n  max_vms: 0\n")
    assert code == 4  # pytest's usage error
    assert f"{tmp_path / 'hosts.yaml'}:2: [0].max_vms: must be at least 1, got 0" in output
    assert "Traceback" not in output


def test_a_pool_refuses_distribution_modes_that_would_share_a_slot(tmp_path):
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(TWO_HOSTS)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "scenarios", "-p", "no:cacheprovider",
         "--backend", "libvirt", "--hosts", str(hosts), "-n", "2", "--dist", "loadscope"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4
    assert "--hosts runs with --dist loadgroup (one worker per host slot), not --dist " \
           "loadscope" in proc.stdout + proc.stderr


def test_refvm_run_starts_as_many_workers_as_the_pool_runs_vms(tmp_path):
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(TWO_HOSTS)  # 2 + 1 slots
    assert _parallel_options(hosts, []) == ["-n", "3"]
    assert _parallel_options(hosts, ["-n", "1"]) == []
    assert _parallel_options(hosts, ["-n2"]) == []
    assert _parallel_options(hosts, ["--numprocesses=2"]) == []
    hosts.write_text("- uri: qemu:///system\n")
    assert _parallel_options(hosts, []) == []  # one VM at a time: no workers needed


def test_plan_names_the_host_of_every_case(tmp_path):
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(TWO_HOSTS)
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "plan", "--backend", "libvirt", "--hosts",
         str(hosts), "--scenario", "boot", "--guest", "refguest", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 and "cannot connect to libvirt" in proc.stderr:
        pytest.skip(proc.stderr.strip())  # plan reads each host's domain capabilities
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["backend"].startswith("libvirt on a pool of 2 host(s): unix (qemu:///system")
    by_id = {case["id"]: case for case in plan["cases"]}
    assert by_id["boot[refguest-uefi-libvirt]"]["host"] == {
        "name": "unix", "uri": "qemu:///system", "slot": "unix#0"}
    assert by_id["boot[refguest-csm-libvirt]"]["host"]["name"] == "unix"
    # each case's domain XML comes from its own host's backend
    assert "<domain" in by_id["boot[refguest-uefi-libvirt]"]["details"]


def test_clean_visits_every_host_and_reports_one_it_cannot_reach(tmp_path):
    pytest.importorskip("libvirt")
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text("- uri: qemu+tcp://127.0.0.1:9/system\n  name: nobody-listens\n")
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "clean", "--hosts", str(hosts)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "refvm: qemu+tcp://127.0.0.1:9/system: cannot connect to libvirt at " \
           "qemu+tcp://127.0.0.1:9/system" in proc.stdout
    assert "stale run(s) cleaned" in proc.stdout


def test_a_host_it_cannot_reach_is_one_infra_line_counted_against_that_host(tmp_path):
    """An unreachable host fails its cases in setup as infra errors, each one line (no
    traceback into the harness), and the per-host summary counts them against it."""
    pytest.importorskip("libvirt")
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text("- uri: qemu+tcp://127.0.0.1:9/system\n  name: nobody-listens\n")
    junit = tmp_path / "junit.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "scenarios", "-p", "no:cacheprovider",
         "--backend", "libvirt", "--hosts", str(hosts), "--scenario", "boot",
         "--guest", "refguest", "--artifacts", str(tmp_path / "artifacts"),
         "--junitxml", str(junit)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    line = "[infra] cannot connect to libvirt at qemu+tcp://127.0.0.1:9/system"
    # uefi and csm, each one line in the errors section (the short summary, which quotes it
    # again after "ERROR <node id> - ", is cut to the terminal's width unless CI is set)
    assert len([text for text in output.splitlines() if text.startswith(line)]) == 2, output
    assert "Traceback" not in output and "connection.py" not in output, output
    assert "nobody-listens (qemu+tcp://127.0.0.1:9/system, max_vms 1): 2 error" in output
    errors = [case.find("error") for case in ET.parse(junit).iter("testcase")]
    assert len(errors) == 2 and all(e is not None and line in e.get("message") for e in errors)


def test_plan_says_an_unreachable_host_is_an_error_as_run_would(tmp_path):
    pytest.importorskip("libvirt")
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text("- uri: qemu+tcp://127.0.0.1:9/system\n  name: nobody-listens\n")
    plan = [sys.executable, "-m", "harness.cli", "plan", "--backend", "libvirt", "--hosts",
            str(hosts), "--scenario", "boot", "--guest", "refguest"]
    proc = subprocess.run(plan + ["--json"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    cases = json.loads(proc.stdout)["cases"]
    assert [(c["skip"], c["error"].split(":")[0]) for c in cases] == \
        [(None, "cannot connect to libvirt at qemu+tcp")] * 2
    text = subprocess.run(plan, cwd=REPO, capture_output=True, text=True, timeout=120).stdout
    assert "boot[refguest-uefi-libvirt]                      ERROR: cannot connect" in text
