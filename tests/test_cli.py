"""The refvm command line: validate, plan and run's selection (no VM booted here)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from harness.cli import main

BAD_GUEST = textwrap.dedent("""\
    name: broken
    family: linux
    image:
      url: https://example.org/disk.img
      sha256: 1234
    memory: 512M
    cpus: many
    firmware: [uefi]
    colour: red
    """)


def test_validate_repository_files_passes(capsys):
    assert main(["validate"]) == 0
    assert "valid" in capsys.readouterr().out


def test_validate_prints_one_line_per_problem_and_exits_2(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text(BAD_GUEST)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"{path}:9: colour: unknown key; known keys: boot_bus, cloud_init, console, cpus, default_run, "
        "description, devices, family, firmware, image, memory, name, ssh, utc_clock, windows",
        f"{path}:5: image.sha256: must be a string, got a number",
        f"{path}:7: cpus: must be a whole number, got a string",
        f"{path}:1: console: required field is missing",
    ]


def test_validate_never_prints_a_traceback(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_bytes(b"\xff\xfe not utf-8 [")
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "validate", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{path}:1: (file): not UTF-8 text: byte 0xff at offset 0" in proc.stderr


def test_plan_lists_matrix_and_exact_argv(capsys):
    assert main(["plan", "--accel", "tcg", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    ids = [case["id"] for case in plan["cases"]]
    assert "boot[refguest-uefi-qemu]" in ids and "boot[refguest-csm-qemu]" in ids
    uefi = next(c for c in plan["cases"] if c["id"] == "boot[refguest-uefi-qemu]")
    overlay, argv = uefi["commands"]  # the boot disk's qcow2 overlay, then QEMU
    assert overlay[:2] == ["qemu-img", "create"] and overlay[-1] in " ".join(argv)
    assert argv[0] == "qemu-system-x86_64" and "-accel" in argv and "tcg" in argv
    assert any("OVMF_CODE" in a and "readonly=on" in a for a in argv)
    csm = next(c for c in plan["cases"] if c["id"] == "boot[refguest-csm-qemu]")
    assert "-bios" in csm["commands"][-1]


def test_plan_text_output_is_pasteable(capsys):
    assert main(["plan", "--accel", "tcg", "--firmware", "csm"]) == 0
    out = capsys.readouterr().out
    assert "boot[refguest-csm-qemu]" in out and "uefi" not in out.split("# paths")[1].split("\n")[1]
    assert "qemu-system-x86_64 \\\n    -name" in out


def test_plan_rejects_unknown_guest(capsys):
    assert main(["plan", "--guest", "nosuch"]) == 2
    assert "unknown guest 'nosuch'" in capsys.readouterr().err


def test_run_with_nothing_selected_is_not_success(tmp_path):
    # refguest has no bhyveload firmware: the selection is valid but selects no case
    code = main(["run", "--scenario", "boot", "--firmware", "bhyveload", "--accel", "tcg",
                 "--artifacts", str(tmp_path), "-q", "-p", "no:cacheprovider"])
    assert code == 5


def test_unknown_scenario_is_a_usage_error_naming_the_choices(tmp_path, capsys):
    for command in ("plan", "run"):
        assert main([command, "--scenario", "boot", "--scenario", "nosuch",
                     "--artifacts", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("(command line):0: --scenario: unknown scenario 'nosuch'; "
                              "known: boot, clock, clock-localtime, clock-utc, nvme, ")
        assert err.count("\n") == 1 and "vcpus, vcpus-1, " in err and " ssh, " in err


def test_plain_pytest_refuses_an_unknown_scenario_or_guest_once():
    for option in ("--scenario", "--guest"):
        proc = subprocess.run([sys.executable, "-m", "pytest", "scenarios", option, "nosuch",
                               "-p", "no:cacheprovider"], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 4  # pytest's exit status for a usage error
        assert f"{option}: unknown {option[2:]} 'nosuch'; known: " in proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout and proc.stderr.count("known:") == 1


def test_run_hands_what_follows_the_double_dash_to_pytest(monkeypatch, tmp_path):
    import pytest

    seen = []
    monkeypatch.setattr(pytest, "main", lambda args, plugins=(): seen.append(args) or 0)
    main(["run", "--scenario", "boot", "--artifacts", str(tmp_path), "--", "-n", "2", "-p",
          "no:cacheprovider"])
    args, = seen
    assert "--" not in args and args[-4:] == ["-n", "2", "-p", "no:cacheprovider"]


def test_validate_takes_directories_and_each_file_once(capsys):
    from harness.paths import GUESTS_DIR, SCENARIOS_DIR

    assert main(["validate", str(GUESTS_DIR), str(SCENARIOS_DIR)]) == 0
    guest_files = [p for p in GUESTS_DIR.rglob("*.yaml") if p.parent.name in
                   ("linux", "freebsd", "windows")]  # not the recipes beside them
    count = len(guest_files) + len(list(SCENARIOS_DIR.glob("*.yaml")))
    assert capsys.readouterr().out == f"ok: {count} file(s) valid\n"
    guest = GUESTS_DIR / "linux/refguest.yaml"
    assert main(["validate", str(guest), str(guest), str(GUESTS_DIR / "linux/../linux/refguest.yaml")]) == 0
    assert capsys.readouterr().out == "ok: 1 file(s) valid\n"


def test_validate_checks_hosts_files(tmp_path, capsys):
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text("- uri: qemu:///system\n- uri: qemu+tcp://h:99999/system\n")
    assert main(["validate", "--hosts", str(hosts)]) == 2
    assert capsys.readouterr().err.startswith(f"{hosts}:2: [1].uri: port '99999' in")


def test_plan_takes_a_repository_guest_by_its_path(capsys):
    from harness.paths import GUESTS_DIR

    path = str(GUESTS_DIR / "linux/refguest.yaml")
    assert main(["plan", "--accel", "tcg", "--json", "--scenario", "boot", "--guest", path,
                 "--guest", "refguest", "--guest", path]) == 0
    ids = [c["id"] for c in json.loads(capsys.readouterr().out)["cases"]]
    assert ids == ["boot[refguest-uefi-qemu]", "boot[refguest-csm-qemu]"]


def test_plan_shows_what_each_device_scenario_adds(capsys):
    assert main(["plan", "--accel", "tcg", "--json", "--firmware", "csm"]) == 0
    cases = {c["id"]: c for c in json.loads(capsys.readouterr().out)["cases"]}
    assert cases["boot[refguest-csm-qemu]"]["adds"] == []
    nvme = " ".join(cases["nvme[refguest-csm-qemu]"]["adds"])
    assert "nvme,drive=disk2,serial=RVNVME-4K,logical_block_size=4096" in nvme
    assert "-device virtio-net-pci,netdev=net0,mac=52:54:00:5a:00:01" in \
        cases["virtio-net[refguest-csm-qemu]"]["adds"]
    uart = cases["uart[refguest-csm-qemu]"]["adds"]
    assert "-serial chardev:com2" in uart


def test_bhyve_plan_covers_every_scenario_under_uefi_and_csm(capsys, tmp_path):
    csm = tmp_path / "BHYVE_UEFI_CSM.fd"
    assert main(["plan", "--backend", "bhyve", "--csm-firmware", str(csm), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert "assume FreeBSD 14.1" in plan["backend"]
    cases = {c["id"]: c for c in plan["cases"]}
    for scenario in ("boot", "virtio-blk", "nvme", "virtio-net", "uart"):
        for firmware in ("uefi", "csm"):
            case = cases[f"{scenario}[refguest-{firmware}-bhyve]"]
            assert case["skip"] is None
            bhyve = case["commands"][-1]
            assert bhyve[0].endswith("/bhyve") and bhyve[-1].startswith("refvm-")
            assert ["-s", "0,hostbridge"] == bhyve[bhyve.index("0,hostbridge") - 1:][:2]
            assert "31,lpc" in bhyve and "-U" in bhyve
            bootrom = next(a for a in bhyve if a.startswith("bootrom,"))
            assert (str(csm) in bootrom) == (firmware == "csm")
    uart = cases["uart[refguest-uefi-bhyve]"]["commands"][-1]
    assert [a for a in uart if a.startswith("com2,/dev/nmdm")]


class ReportDouble:
    """A test double of pytest's TestReport: just what refvm run's outcome counter reads."""

    def __init__(self, outcome: str, when: str = "call", properties=()):
        self.failed, self.skipped, self.passed = (outcome == o for o in
                                                  ("failed", "skipped", "passed"))
        self.when = when
        self.user_properties = list(properties)


def test_refvm_run_counts_matrix_skips_apart_from_cases_that_could_not_run():
    from harness.cli import _Outcomes

    outcomes = _Outcomes()
    for report in (ReportDouble("passed", "setup"), ReportDouble("passed"),
                   ReportDouble("skipped", "setup", [("skip", "matrix")]),
                   ReportDouble("skipped", "setup", [("backend", "x")]),
                   ReportDouble("failed", "teardown")):
        outcomes.pytest_runtest_logreport(report)
    assert (outcomes.passed, outcomes.runtime_skips, outcomes.failed) == (1, 1, 1)


def test_the_readme_examples_are_valid(tmp_path, capsys):
    """Every YAML example in README.md validates (the guest's placeholder hash filled in)."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    assert len(blocks) >= 2
    for index, block in enumerate(blocks):
        path = tmp_path / f"example{index}.yaml"
        path.write_text(block.replace("<64 hex digits of the downloaded file>", "a" * 64))
        args = ["--hosts", str(path)] if block.lstrip().startswith("- uri:") else [str(path)]
        assert main(["validate", *args]) == 0, capsys.readouterr().err


def test_the_readme_names_every_step_a_scenario_can_use():
    """README's "Steps:" list is the step registry, no more and no less."""
    import re
    from pathlib import Path

    import harness.steps  # noqa: F401  (registers the steps)
    from harness.steps.registry import REGISTRY

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    listed = readme.split("\nSteps: ", 1)[1].split(". Commands", 1)[0]
    assert set(re.findall(r"`([a-z_0-9]+)`", listed)) == set(REGISTRY)


def test_a_usage_error_inside_pytest_is_refvms_usage_status(tmp_path, capsys):
    # pytest's own usage error (exit 4) for an option after `--` is exit 2, like refvm's
    assert main(["run", "--artifacts", str(tmp_path), "--", "--scenario", "nosuch"]) == 2
    assert capsys.readouterr().err.count("unknown scenario 'nosuch'; known: boot,") == 1


def test_plan_says_which_images_are_not_here_yet(tmp_path, monkeypatch, capsys):
    """A case whose image is neither cached nor built yet still runs (the run fetches it, or
    skips it where it cannot be had): plan says so, and --json tells it apart."""
    monkeypatch.setenv("REFVM_CACHE", str(tmp_path / "empty-cache"))
    assert main(["plan", "--accel", "tcg", "--scenario", "boot", "--guest", "freebsd-14.3",
                 "--firmware", "uefi"]) == 0
    assert "boot[freebsd-14.3-uefi-qemu]                     run (image not here yet: refvm " \
           "images fetch, or import)" in capsys.readouterr().out
    assert main(["plan", "--accel", "tcg", "--scenario", "boot", "--guest", "freebsd-14.3",
                 "--firmware", "uefi", "--json"]) == 0
    case, = json.loads(capsys.readouterr().out)["cases"]
    assert case["image_ready"] is False and case["image"].endswith(
        "ec0f5a4bbe63aa50a725d9fee0f1931f850e9a21cbebdadb991df00f168d6805.raw")
