"""The report of a libvirt run says where its VMs ran and which firmware files they booted.

Against the local libvirtd (qemu:///system): no guest boots, the backend only answers which
firmware it would give each profile; skipped, with the reason, when libvirtd does not answer."""
from __future__ import annotations

import platform
from pathlib import Path

from harness import firmware as fw
from harness.backends.libvirt.backend import LibvirtBackend
from harness.hostdata import file_sha256
from harness.report import header as facts
from harness.report.collect import CaseResult, build_report

from tests.test_libvirt_e2e import LOCAL, need


def test_a_local_libvirt_runs_firmware_files_are_in_the_header():
    need(LOCAL)
    backend = LibvirtBackend(LOCAL)
    pair, seabios = fw.QEMU_OVMF.find(), fw.QEMU_SEABIOS.find()
    assert backend.firmware_files("uefi") == [pair.code, pair.vars_template]
    assert backend.firmware_files("csm") == [seabios]  # what the domain XML's <loader> names
    listed = facts.firmware_facts(backend, ["csm", "uefi"])
    assert [(e["profile"], e["file"], e["sha256"]) for e in listed] == [
        ("csm", Path(seabios).name, file_sha256(Path(seabios))),
        ("uefi", Path(pair.code).name, file_sha256(Path(pair.code))),
        ("uefi", Path(pair.vars_template).name, file_sha256(Path(pair.vars_template)))]


def test_cases_say_which_libvirt_they_ran_on(tmp_path):
    local = LibvirtBackend(LOCAL)
    remote = LibvirtBackend("qemu+tcp://lvhost.invalid/system")
    assert facts.backend_where(local) == f"{platform.node()} {LOCAL}"
    assert facts.backend_where(remote) == "qemu+tcp://lvhost.invalid/system"
    assert remote.firmware_files("uefi") == []  # another host's files are not here to hash
    header = {"host": {"name": platform.node()},
              "backend": {"name": "libvirt", "where": facts.backend_where(remote)}}
    report = build_report([CaseResult("boot[refguest-csm-libvirt]", "pass", "", 3.0, {})],
                          header, {}, tmp_path)
    assert report["cases"][0]["host"] == "qemu+tcp://lvhost.invalid/system"
