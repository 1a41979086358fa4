"""The run report: results folded from pytest's reports, figures, and the three views.

Report data here is made by hand (TEST DOUBLES of pytest's TestReport); the report of a real
`refvm run`, drawn by a real browser, is checked in tests/test_e2e_qemu.py."""
from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.report.collect import CaseResult, build_report, case_id_of, write_all
from harness.report.figures import key_figures, transfers

HOSTILE = "guest said \x1b[2J<script>alert(1)</script> | `x`"


class PhaseReport:
    """A TEST DOUBLE of pytest's TestReport: one phase of one case."""

    def __init__(self, when, outcome, duration=1.0, properties=(), longrepr=None):
        self.when, self.duration, self.longrepr = when, duration, longrepr
        self.failed, self.skipped, self.passed = (outcome == o for o in
                                                  ("failed", "skipped", "passed"))
        self.user_properties = list(properties)
        self.nodeid = "scenarios/boot.yaml::boot[refguest-csm-qemu]"


def fold(*phases) -> CaseResult:
    result = CaseResult("boot[refguest-csm-qemu]")
    for phase in phases:
        result.add(phase)
    return result


def test_case_ids_are_scenario_cases_only():
    assert case_id_of("scenarios/nvme.yaml::nvme[freebsd-14.3-uefi-bhyve]") == \
        "nvme[freebsd-14.3-uefi-bhyve]"
    assert case_id_of("tests/test_cli.py::test_plan") is None
    assert case_id_of("x.yaml::boot[refguest-bios-qemu]") is None  # no such firmware


def test_results_fold_setup_call_and_teardown():
    ok = fold(PhaseReport("setup", "passed", 2), PhaseReport("call", "passed", 20,
                                                             [("login_seconds", 12.5)]),
              PhaseReport("teardown", "passed", 1))
    assert (ok.result, ok.seconds, ok.properties["login_seconds"]) == ("pass", 23, 12.5)
    failed = fold(PhaseReport("setup", "passed"),
                  PhaseReport("call", "failed", properties=[("category", "guest"),
                                                            ("reason", "no login prompt")]),
                  PhaseReport("teardown", "failed", longrepr="teardown broke"))
    assert (failed.result, failed.reason) == ("fail", "no login prompt")
    infra = fold(PhaseReport("setup", "failed", properties=[("reason", "QEMU failed")]),
                 PhaseReport("teardown", "passed"))
    assert (infra.result, infra.reason) == ("error", "QEMU failed")
    skipped = fold(PhaseReport("setup", "skipped", longrepr=("f", 1, "Skipped: no nvme")),
                   PhaseReport("teardown", "passed"))
    assert (skipped.result, skipped.reason) == ("skip", "no nvme")
    late = fold(PhaseReport("setup", "passed"), PhaseReport("call", "passed"),
                PhaseReport("teardown", "failed", longrepr="[infra] destroy failed\nmore"))
    assert (late.result, late.reason) == ("error", "[infra] destroy failed")


def test_rates_are_bytes_over_their_own_seconds():
    props = {"net0_guest_to_host_bytes": "8388608", "net0_guest_to_host_seconds": "2.0",
             "scratch_host_to_guest_bytes": 4000000, "scratch_read_seconds": 0.5,
             "scratch_guest_to_host_bytes": 1000, "com2_host_to_guest_bytes": 65536,
             "login_seconds": "11.25"}
    moves = {(m["device"], m["direction"]): m["mb_per_s"] for m in transfers(props)}
    # 8 MiB in 2 s; 4 MB in 0.5 s; no seconds recorded for the others: no rate at all
    assert moves == {("net0", "guest\u2192host"): 4.19, ("scratch", "host\u2192guest"): 8.0}
    figures = key_figures(props)
    assert figures["login_seconds"] == 11.25 and figures["scratch host\u2192guest MB/s"] == 8.0


def test_a_cases_own_vcpus_and_memory_win_over_its_guest_files():
    guest = SimpleNamespace(cpus=1, memory=512 << 20)
    # vcpus-8 of a 1-vCPU guest file, as the runner recorded its VM
    assert key_figures({"vcpus": 8, "memory_mib": 2048}, guest)["vcpus"] == 8
    assert key_figures({"vcpus": "8", "memory_mib": 2048}, guest)["memory_mib"] == 2048
    # a case that never booted recorded nothing: the guest file is all there is
    assert key_figures({}, guest) == {"vcpus": 1, "memory_mib": 512}


def _report(tmp_path: Path, results) -> dict:
    header = {"started": 100.0, "finished": 160.0, "host": {"name": "h1", "os": "Debian"},
              "refvm": {"version": "0.1.0", "git": "abc"}, "workers": 2,
              "backend": {"name": "qemu", "describe": "QEMU 7.2"},
              "firmware": [{"profile": "csm", "path": "/fw/bios.bin", "sha256": "f" * 64}],
              "images": [{"guest": "refguest", "sha256": "e" * 64, "here": True}]}
    cases = []
    for case_id, outcome, reason in results:
        case = CaseResult(case_id, outcome, reason, 10.0, {"login_seconds": 5})
        cases.append(case)
    folder = tmp_path / "boot_refguest-csm-qemu"
    folder.mkdir()
    (folder / "console.log").write_text("login:\n")
    (folder / "command.txt").write_text("qemu-system-x86_64 -bios /fw/bios.bin\n")
    return build_report(cases, header, {}, tmp_path)


def test_views_show_the_matrix_links_and_escape_what_a_guest_wrote(tmp_path):
    report = _report(tmp_path, [("boot[refguest-csm-qemu]", "pass", ""),
                                ("nvme[refguest-csm-qemu]", "fail", HOSTILE),
                                ("boot[refguest-uefi-qemu]", "skip", "no OVMF")])
    paths = write_all(report, tmp_path)
    assert [p.name for p in paths] == ["report.json", "report.md", "report.html"]
    data = json.loads((tmp_path / "report.json").read_text())
    boot = next(c for c in data["cases"] if c["id"] == "boot[refguest-csm-qemu]")
    assert boot["console_log"] == "boot_refguest-csm-qemu/console.log"
    assert boot["command_line"] == "qemu-system-x86_64 -bios /fw/bios.bin"
    markdown = (tmp_path / "report.md").read_text()
    assert "| refguest | csm | PASS | **FAIL** |" in markdown
    assert "| refguest | uefi | skip |  |" in markdown
    assert "[console](boot_refguest-csm-qemu/console.log)" in markdown
    html = (tmp_path / "report.html").read_text()
    assert 'class="cell fail" title="guest said \\x1b[2J&lt;script&gt;' in html
    for view in (markdown, html):
        assert "\x1b" not in view and "<script>" not in view
    assert "1 pass, 1 fail, 0 error, 1 skip; wall 60.0 s, sum of case times 30.0 s" in markdown
    assert 'href="boot_refguest-csm-qemu/console.log"' in html
    assert not re.search(r"(src|href|url)\s*[=(]\s*['\"]?\w+:", html)  # nothing to fetch


def test_a_pools_report_says_which_hypervisor_each_host_ran(tmp_path):
    header = {"started": 100.0, "finished": 160.0, "host": {"name": "ctl", "os": "Debian"},
              "backend": {"name": "pool", "describe": "2 hosts"}, "firmware": [], "images": []}
    cases = [CaseResult(f"boot[refguest-{fw}-libvirt]", "pass", "", 10.0,
                        {"host": host, "backend": f"libvirt 9.0.0 at {uri}: QEMU 7.2.0; host {host}"})
             for fw, host, uri in (("csm", "build2", "qemu+ssh://build2/system"),
                                   ("uefi", "bsd1", "bhyve+ssh://bsd1/system"),
                                   ("csm", "build2", "qemu+ssh://build2/system"))]
    report = build_report(cases[:2] + cases[2:], header, {}, tmp_path)
    assert [x["host"] for x in report["header"]["hosts"]] == ["bsd1", "build2"]
    write_all(report, tmp_path)
    for view in ("report.md", "report.html"):
        text = (tmp_path / view).read_text()
        assert "ran on" in text and "at bhyve+ssh://bsd1/system" in text
        assert "at qemu+ssh://build2/system: QEMU 7.2.0; host build2" in text


def test_a_local_runs_report_has_no_hosts_table_repeating_its_hypervisor(tmp_path):
    header = {"started": 100.0, "finished": 160.0, "host": {"name": "h1", "os": "Debian"},
              "backend": {"name": "qemu", "describe": "QEMU 7.2", "where": "h1"},
              "firmware": [], "images": []}
    cases = [CaseResult("boot[refguest-csm-qemu]", "pass", "", 10.0, {"backend": "QEMU 7.2"})]
    report = build_report(cases, header, {}, tmp_path)
    assert report["header"]["hosts"] == [{"host": "h1", "describe": "QEMU 7.2"}]
    write_all(report, tmp_path)
    for view in ("report.md", "report.html"):
        assert "ran on" not in (tmp_path / view).read_text()


@pytest.mark.parametrize("target", ["javascript:alert(1)", "../../etc/passwd", "https://x/y"])
def test_a_link_outside_the_artifacts_is_not_drawn(tmp_path, target):
    report = _report(tmp_path, [("boot[refguest-csm-qemu]", "pass", "")])
    report["cases"][0]["console_log"] = target
    write_all(report, tmp_path)
    assert target not in (tmp_path / "report.html").read_text()
    assert target not in (tmp_path / "report.md").read_text()


def test_every_run_writes_junit_and_the_report_into_its_artifacts(tmp_path, monkeypatch):
    """A real `refvm run` (in this process) whose one case skips: a FreeBSD image this host
    does not have, offline. junit.xml is written without being asked for, beside the report."""
    from harness.cli import main

    monkeypatch.setenv("REFVM_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("REFVM_TMP", str(tmp_path / "scratch"))
    artifacts = tmp_path / "artifacts"
    assert main(["run", "--offline", "--accel", "tcg", "--guest", "freebsd-14.3", "--scenario",
                 "boot", "--firmware", "uefi", "--artifacts", str(artifacts),
                 "-p", "no:cacheprovider"]) == 5  # no case ran and passed
    assert 'name="boot[freebsd-14.3-uefi-qemu]"' in (artifacts / "junit.xml").read_text()
    case, = json.loads((artifacts / "report.json").read_text())["cases"]
    assert case["result"] == "skip" and "freebsd-14.3" in case["reason"]
    assert "| freebsd-14.3 | uefi | skip |" in (artifacts / "report.md").read_text()
