"""A two-host pool, for real: the whole scenario matrix (every scenario, uefi and csm) through the
libvirt backend, spread by pytest-xdist over two libvirt URIs, the local socket
(qemu:///system) and libvirt's remote protocol on loopback (qemu+tcp://127.0.0.1/system, set
up by .ci/libvirt-setup with REFVM_LIBVIRT_TCP=1). Both URIs reach this machine's libvirtd;
what differs is the transport, which is what a farm of hosts adds.

Then the same pool run is interrupted, by SIGTERM to pytest (a CI job cancelled) and by SIGINT
to its whole process group (Ctrl-C at a terminal), while both hosts run a VM: every domain,
scratch directory and staged file must be gone when pytest exits, with no reaping after it.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import pytest

from test_libvirt_e2e import LOCAL, REMOTE, need, refvm_domains
from tests.decoys import intact, make_decoys

REPO = Path(__file__).resolve().parents[1]
STAGE_ROOT = Path("/var/lib/libvirt/images")

pytestmark = [pytest.mark.vm]

HOSTS = f"""\
- uri: {LOCAL}
  name: unix-socket
- uri: {REMOTE}
  name: tcp-loopback
"""


@pytest.fixture
def pool(tmp_path):
    need(LOCAL)
    need(REMOTE)
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(HOSTS)
    scratch = tmp_path / "scratch"  # REFVM_TMP: what the run leaves here is visible
    scratch.mkdir(mode=0o755)
    os.chmod(tmp_path, 0o755)  # libvirt's QEMU reaches scratch disks in place
    return hosts, scratch


def pool_command(tmp_path, hosts: Path, *selection: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "scenarios", "-p", "no:cacheprovider",
            "--guest", "refguest",
            "--backend", "libvirt", "--hosts", str(hosts), "-n", "2", "--accel", "tcg",
            "--artifacts", str(tmp_path / "artifacts"),
            "--junitxml", str(tmp_path / "junit.xml"), *selection]


def leftovers(tmp_path: Path, scratch: Path) -> list[str]:
    """What the run left: its domains (named in its artifacts' domain.xml) on both URIs,
    its scratch directories and its staged files."""
    ours = {ET.parse(xml).findtext("name") for xml in (tmp_path / "artifacts").glob("*/domain.xml")}
    assert ours, "the run wrote no domain.xml: did it start any VM?"
    found = [f"domain {name} at {uri}" for uri in (LOCAL, REMOTE)
             for name in set(refvm_domains(uri)) & ours]
    found += [f"scratch {p}" for p in scratch.iterdir()]
    found += [f"staged {STAGE_ROOT / name}" for name in ours if (STAGE_ROOT / name).exists()]
    return found


def results(junit: Path) -> dict[str, dict]:
    out = {}
    for case in ET.parse(junit).iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                outcome = tag
        name = case.get("name").split("]@")[0] + "]"  # xdist appends "@<group>" to ids
        out[name] = {"outcome": outcome, **props}
    return out


# The pool's mechanics, on boot and the device scenarios (the machine scenarios' own test runs
# the rest on QEMU).
DEVICE_SCENARIOS = ("boot", "virtio-blk", "nvme", "virtio-net", "uart")


def test_a_two_host_pool_runs_the_whole_matrix_on_both_hosts(tmp_path, pool):
    """Through `refvm run --hosts`, which starts one xdist worker per host slot itself."""
    hosts, scratch = pool
    decoys = make_decoys(scratch)  # named like refvm's, not made by it: the run must keep them
    env = dict(os.environ, REFVM_TMP=str(scratch))
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--guest", "refguest", "--backend",
         "libvirt", "--hosts", str(hosts),
         *(a for name in DEVICE_SCENARIOS for a in ("--scenario", name)),
         "--accel", "tcg", "--artifacts", str(tmp_path / "artifacts"),
         "--junitxml", str(tmp_path / "junit.xml"), "-p", "no:cacheprovider"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    got = results(tmp_path / "junit.xml")
    summary = {name: r["outcome"] for name, r in got.items()}
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert set(got) == {f"{s}[refguest-{fw}-libvirt]" for s in DEVICE_SCENARIOS
                        for fw in ("uefi", "csm")}
    assert set(summary.values()) == {"passed"}, summary
    # Each result says which host ran it; both hosts ran cases, and each host (max_vms 1)
    # ran all of its cases on one worker, so never two of its VMs at once.
    workers_by_host = defaultdict(set)
    for r in got.values():
        workers_by_host[r["host"]].add(r["worker"])
    assert set(workers_by_host) == {f"unix-socket {LOCAL}", f"tcp-loopback {REMOTE}"}
    assert all(len(w) == 1 for w in workers_by_host.values()), workers_by_host
    # ... and the run ends saying so, host by host (10 cases, least-loaded: 5 each)
    assert f"unix-socket ({LOCAL}, max_vms 1): 5 passed" in proc.stdout
    assert f"tcp-loopback ({REMOTE}, max_vms 1): 5 passed" in proc.stdout
    assert intact(decoys)
    for decoy in decoys:  # what leftovers() must not count (refvm-aaaaaaaa, dead, went)
        shutil.rmtree(decoy) if decoy.is_dir() and not decoy.is_symlink() else decoy.unlink()
    assert leftovers(tmp_path, scratch) == []


@pytest.mark.parametrize("how", ["SIGTERM to pytest", "SIGINT to its process group"])
def test_an_interrupted_pool_run_leaves_nothing(tmp_path, pool, how):
    hosts, scratch = pool
    env = dict(os.environ, REFVM_TMP=str(scratch))
    before = set(refvm_domains(LOCAL))
    proc = subprocess.Popen(pool_command(tmp_path, hosts, "--scenario", "boot",
                                         "--scenario", "uart"),
                            cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(set(refvm_domains(LOCAL)) - before) < 2:  # one VM on each host
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the pool never ran two VMs at once"
            time.sleep(0.5)
        time.sleep(2)  # well into the guests' boot
        if how.startswith("SIGTERM"):
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 2, output[-3000:]  # pytest: interrupted
    assert "KeyboardInterrupt" in output
    assert leftovers(tmp_path, scratch) == []
