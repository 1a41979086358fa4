"""Release validation files: releases/*.yaml parsed as hostile input, their expectations
checked against `refvm plan` here (the bhyve backend plans on this machine), and
`refvm run --bhyve-release` refused where there is no bhyve. A real `refvm run --release` with
QEMU is in tests/test_release_run.py."""
from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest

from harness.backends.bhyve.caps import BhyveCaps
from harness.cli import _bhyve_release_here, main
from harness.paths import REPO_ROOT
from harness.release import load_release
from harness.report.expectations import check

LINE = re.compile(r"^[^:\n]+:\d+: [^:\n]+: .+$")

GOOD_14_3 = """\
release: "14.3"
backend: bhyve
guests: [refguest]
firmware: [uefi, csm]
scenarios: [boot, vcpus]
expected_skips:
  - firmware: csm
    reason_pattern: 'BHYVE_UEFI_CSM\\.fd\\) not configured'
  - scenario: vcpus
    reason: {vcpus_reason}
"""


def plan_release(capsys, path) -> dict:
    assert main(["plan", "--release", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)["release"]


@pytest.mark.parametrize("name", ["14.3", "12.4"])
def test_the_repository_release_files_hold_as_planned_here(capsys, name):
    release = plan_release(capsys, REPO_ROOT / "releases" / f"{name}.yaml")
    assert release["holds"] is True, release["verdict"]
    assert release["verdict"].startswith(f"release {name} holds: 0 passed, ")
    assert all(skip["held"] for skip in release["expected_skips"]), \
        "every expected skip of the file is seen in the plan"
    ids = {e["id"] for e in release["passed"]}
    assert "boot[refguest-uefi-bhyve]" in ids
    if name == "14.3":
        assert "nvram-persist[refguest-uefi-bhyve]" in ids  # a vars file from 13.1
        assert "boot[refguest-csm-bhyve]" in release["expected_skips"][0]["held"]
    else:
        assert "nvram-persist[refguest-uefi-bhyve]" in release["expected_skips"][0]["held"]


def test_wrong_expectations_are_each_said_and_the_release_does_not_hold(tmp_path, capsys):
    path = tmp_path / "wrong.yaml"
    # No expectation for csm: its skips are unexpected; vcpus expects another exact reason.
    path.write_text(GOOD_14_3.replace("firmware: csm", "firmware: uefi\n    scenario: boot")
                    .format(vcpus_reason="'no vCPUs today'"))
    release = plan_release(capsys, path)
    assert release["holds"] is False
    unexpected = {e["id"] for e in release["unexpected_skips"]}
    assert "boot[refguest-csm-bhyve]" in unexpected and "vcpus-4[refguest-csm-bhyve]" not in \
        unexpected  # vcpus' csm cases are covered (wrongly) by the vcpus line
    other = {e["id"]: e for e in release["skipped_for_another_reason"]}
    assert "above the maximum" in other["vcpus-4[refguest-uefi-bhyve]"]["reason"]
    assert other["vcpus-4[refguest-uefi-bhyve]"]["line"] == 10  # the "- scenario: vcpus" item
    assert release["expected_skips"][0]["held"] == []  # boot under uefi runs
    assert re.match(r"release 14\.3 does not hold: \d+ unexpected skips, \d+ skipped for "
                    r"another reason; ", release["verdict"])
    main(["plan", "--release", str(path)])
    text = capsys.readouterr().out
    assert "#   unexpected skips: boot[refguest-csm-bhyve]: bhyve UEFI firmware with CSM" in text


def test_right_exact_reason_holds(tmp_path, capsys):
    path = tmp_path / "right.yaml"
    reason = ("scenario vcpus-4: 4 vCPUs is above the maximum of 2 (hw.vmm.maxcpu's default "
              "on FreeBSD 14.3: the host's CPU count (2, this machine))")
    if not (__import__("os").cpu_count() == 2):
        pytest.skip("the exact reason names this machine's 2 CPUs")
    path.write_text(GOOD_14_3.replace("scenario: vcpus", "scenario: vcpus-4").format(
        vcpus_reason=json.dumps(reason)))
    release = plan_release(capsys, path)
    assert release["expected_skips"][1]["held"] == ["vcpus-4[refguest-uefi-bhyve]"]
    assert "vcpus-8[refguest-uefi-bhyve]" in {e["id"] for e in release["unexpected_skips"]}


def test_the_verdict_from_results():
    release = load_release(REPO_ROOT / "releases" / "14.3.yaml")
    csm = ("bhyve UEFI firmware with CSM (BHYVE_UEFI_CSM.fd) not configured; no package "
           "since April 2024")
    rows = [{"id": "boot[refguest-uefi-bhyve]", "result": "pass", "reason": ""},
            {"id": "boot[refguest-csm-bhyve]", "result": "skip", "reason": csm}]
    partial = check(release, rows)
    assert partial["holds"] is False and "missing" in partial["verdict"]
    assert "boot[freebsd-14.3-uefi-bhyve]" in partial["missing"]
    assert partial["expected_skips"][0]["held"] == ["boot[refguest-csm-bhyve]"]
    assert partial["passed"][0]["id"] == "boot[refguest-uefi-bhyve]"
    everything = [{"id": case_id, "result": "pass", "reason": ""}
                  for case_id in partial["missing"]] + rows
    assert check(release, everything)["holds"] is True
    failed = everything + [{"id": "boot[refguest-uefi-bhyve]", "result": "fail",
                            "reason": "no login prompt"}]
    failed = [r for r in failed if not (r["id"] == "boot[refguest-uefi-bhyve]"
                                        and r["result"] == "pass")]
    verdict = check(release, failed)
    assert verdict["holds"] is False and verdict["failed"][0]["reason"] == "no login prompt"


BAD = {
    "number": ('release: 14.3\nbackend: bhyve\nguests: [refguest]\nfirmware: [uefi]\n'
               'scenarios: [boot]\n', 1, "release", "write the release as a quoted string"),
    "old": ('release: "10.4"\nbackend: bhyve\nguests: [refguest]\nfirmware: [uefi]\n'
            'scenarios: [boot]\n', 1, "release", "11.0 or later"),
    "unknown-key": ('release: "14.3"\nbackend: bhyve\nguests: [refguest]\nfirmware: [uefi]\n'
                    'scenarios: [boot]\nskips: []\n', 6, "skips", "unknown key"),
    "no-guest": ('release: "14.3"\nbackend: bhyve\nguests:\n  - refguest\n  - nosuch\n'
                 'firmware: [uefi]\nscenarios: [boot]\n', 5, "guests[1]", "no guest 'nosuch'"),
    "no-scenario": ('release: "14.3"\nbackend: bhyve\nguests: [refguest]\nfirmware: [uefi]\n'
                    'scenarios: [boot, suspend-to-ram]\n', 5, "scenarios[1]",
                    "no scenario 'suspend-to-ram'"),
    "both-reasons": ('release: "14.3"\nbackend: bhyve\nguests: [refguest]\nfirmware: [uefi]\n'
                     'scenarios: [boot]\nexpected_skips:\n  - reason: a\n    reason_pattern: b\n',
                     7, "expected_skips[0]", "exactly one of reason"),
    "not-in-release": ('release: "14.3"\nbackend: bhyve\nguests: [refguest]\nfirmware: [uefi]\n'
                       'scenarios: [boot]\nexpected_skips:\n  - firmware: csm\n    reason: x\n',
                       7, "expected_skips[0].firmware", "not one of this release's firmwares"),
    "selects-nothing": ('release: "14.3"\nbackend: bhyve\nguests: [refguest]\n'
                        'firmware: [uefi, bhyveload]\nscenarios: [boot]\nexpected_skips:\n'
                        '  - firmware: bhyveload\n    reason: x\n', 7, "expected_skips[0]",
                        "selects no case of this release's matrix"),
    "bad-regex": ('release: "14.3"\nbackend: bhyve\nguests: [refguest]\nfirmware: [uefi]\n'
                  'scenarios: [boot]\nexpected_skips:\n  - reason_pattern: "(unclosed"\n',
                  7, "expected_skips[0].reason_pattern", "invalid regular expression"),
    "escape": ('release: "14.3"\nbackend: bhyve\nguests: ["ref\\e[2Jguest"]\n'
               'firmware: [uefi]\nscenarios: [boot]\n', 3, "guests[0]", "\\x1b[2J"),
    "not-a-mapping": ("- release\n", 1, "(top)", "must be a mapping"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_release_file_is_one_line_per_problem_and_exit_2(tmp_path, capsys, name):
    text, line, field, message = BAD[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    assert main(["plan", "--release", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    assert LINE.match(lines[0]) and "\x1b" not in lines[0] and "Traceback" not in lines[0]
    assert lines[0].startswith(f"{path}:{line}: {field}: "), lines[0]
    assert message in lines[0]


def test_a_release_file_that_is_a_fifo_or_missing_is_refused(tmp_path, capsys):
    import os
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    for path in (fifo, tmp_path / "absent.yaml"):
        assert main(["run", "--release", str(path)]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith(f"{path}:0: --release: "), err


def test_the_release_file_names_the_matrix_so_selection_options_are_refused(capsys):
    release = str(REPO_ROOT / "releases" / "14.3.yaml")
    for extra in (["--guest", "refguest"], ["--backend", "qemu"], ["--bhyve-release", "13.2"]):
        assert main(["plan", "--release", release] + extra) == 2
        assert "14.3.yaml" in capsys.readouterr().err


def test_run_with_a_bhyve_release_on_a_host_without_bhyve_can_only_plan(capsys):
    assert main(["run", "--backend", "bhyve", "--bhyve-release", "14.3"]) == 2
    err = capsys.readouterr().err
    assert "cannot run FreeBSD 14.3's bhyve here" in err
    assert "This host can only plan it: refvm plan --backend bhyve --bhyve-release 14.3" in err
    assert main(["run", "--release", str(REPO_ROOT / "releases" / "12.4.yaml")]) == 2
    assert "refvm plan --release " in capsys.readouterr().err
    assert main(["run", "--backend", "qemu", "--bhyve-release", "14.3"]) == 2
    assert "is for --backend bhyve, not qemu" in capsys.readouterr().err


def test_run_on_a_freebsd_host_says_when_its_bhyve_is_another_release(monkeypatch, capsys):
    real = BhyveCaps(release=(14, 1), emulations=frozenset(), lpc_devices=frozenset(),
                     release_text="14.1-RELEASE-p5")
    double = SimpleNamespace(name="bhyve", caps=real)  # TEST DOUBLE: a probed FreeBSD host
    monkeypatch.setattr("harness.pytest_plugin.state.make_backend", lambda *a, **k: double)
    args = SimpleNamespace(bhyve_release=(14, 3), backend="bhyve", release=None)
    assert _bhyve_release_here(args) is None  # runs, on the host's real bhyve
    assert capsys.readouterr().err == ("refvm: note: this host's bhyve is FreeBSD "
                                       "14.1-RELEASE-p5, not the 14.3 asked for: its real "
                                       "capabilities were used\n")
