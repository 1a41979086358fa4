"""The machine scenarios bhyve developers asked for (issue: vcpus, clock, ...): how scenarios
ask for machine shapes and capabilities, how backends refuse what they cannot do (with the
reason), and real QEMU boots of the reference guest through them."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from harness.backends.qemu.backend import QemuBackend
from harness.catalog import load_guests, load_scenarios, select_scenarios
from harness.errors import ConfigError
from harness.matrix import Case, build, skip_reason
from harness.runner import Run

REPO = Path(__file__).resolve().parent.parent


def test_a_scenario_with_variants_is_one_scenario_per_variant_selected_by_either_name():
    scenarios = load_scenarios()
    names = [s.name for s in scenarios]
    assert {"vcpus-1", "vcpus-2", "vcpus-4", "vcpus-8", "vcpus-max"} <= set(names)
    assert "vcpus" not in names
    assert [s.name for s in select_scenarios(scenarios, ["vcpus-4"])] == ["vcpus-4"]
    assert len(select_scenarios(scenarios, ["vcpus"])) == 5
    four, = select_scenarios(scenarios, ["vcpus-4"])
    assert (four.vm.cpus, four.vm.sockets, four.vm.cores, four.vm.threads) == (4, 2, 2, 1)
    with pytest.raises(ConfigError, match="unknown scenario 'vcpus-3'"):
        select_scenarios(scenarios, ["vcpus-3"])


@pytest.mark.parametrize("vm, message", [
    ("{cpus: 4, sockets: 2}", "give sockets, cores and threads together"),
    ("{cpus: 6, sockets: 2, cores: 2, threads: 1}", "cpus 6 is not sockets x cores x threads"),
    ("{cpus: many}", "must be a number of vCPUs (1-4096) or 'max'"),
    ("{utc_clock: 1}", "must be true or false"),
])
def test_a_bad_vm_shape_is_one_line_naming_the_file_and_field(tmp_path, vm, message):
    path = tmp_path / "shape.yaml"
    path.write_text(f"name: shape\nvm: {vm}\nsteps: [login]\n")
    with pytest.raises(ConfigError) as err:
        load_scenarios([path])
    assert str(err.value).startswith(f"{path}:2: vm") and message in str(err.value)


def case_of(name: str, firmware: str = "uefi", **guest_changes) -> Case:
    guest, = load_guests(["refguest"])
    scenario, = select_scenarios(load_scenarios(), [name])
    return Case(scenario, replace(guest, **guest_changes), firmware, "qemu")


def test_more_vcpus_than_the_backend_allows_are_refused_before_start_with_the_source():
    backend = QemuBackend(accel="tcg")
    limit, source = backend.max_vcpus()
    assert limit == 255 and "q35 cpu-max" in source  # asked from QEMU itself
    guest_case = case_of("boot", cpus=limit + 1)
    assert skip_reason(guest_case, backend) == (
        f"scenario boot: {limit + 1} vCPUs is above the maximum of {limit} ({source})")
    # The maximum itself is refused under TCG on this many cores, saying why.
    assert "under TCG" in skip_reason(case_of("vcpus-max"), backend)
    assert skip_reason(case_of("vcpus-8"), backend) is None


def test_a_scenario_asks_for_machine_capabilities_and_firmware_not_for_a_backend():
    backend = QemuBackend(accel="tcg")
    scenario, = select_scenarios(load_scenarios(), ["boot"])
    needs = replace(scenario, needs=("save-restore",))
    assert skip_reason(Case(needs, case_of("boot").guest, "uefi", "qemu"), backend) is None
    from harness.backends import get_backend
    bhyve = get_backend("bhyve", planning=True)  # GENERIC's bhyve has no snapshots
    assert skip_reason(Case(needs, case_of("boot").guest, "uefi", "bhyve"), bhyve) == (
        "scenario boot needs to suspend a running VM to a file and restore it in a new "
        "process: bhyve on FreeBSD 14.1 was built without snapshot support (BHYVE_SNAPSHOT: "
        "bhyve's usage explains no -r; bhyvectl's usage lists no --suspend)")
    vars_file = replace(scenario, needs=("vars-file",))
    assert skip_reason(Case(vars_file, case_of("boot").guest, "csm", "qemu"), backend) == (
        "scenario boot needs to keep UEFI variables in a file apart from the firmware ROM: "
        "csm firmware has no UEFI variable store")
    uefi_only = replace(scenario, firmware=("uefi",))
    assert skip_reason(Case(uefi_only, case_of("boot").guest, "csm", "qemu"), backend) == (
        "scenario boot applies to uefi firmware only")


def test_qemu_gives_the_scenarios_shape(tmp_path):
    backend = QemuBackend(accel="tcg")
    run = Run(backend, tmp_path)
    spec = run.vm_spec(case_of("vcpus-8"), tmp_path / "disk.raw")
    argv = backend.argv(spec)
    assert argv[argv.index("-smp") + 1] == "cpus=8,sockets=1,cores=4,threads=2"
    # TCG's max CPU is an AMD K8 (no SMT reporting); threads need the Intel flavour.
    assert argv[argv.index("-cpu") + 1] == "max,vendor=GenuineIntel"
    assert "-no-reboot" in argv
    # TCG's "Triple fault" line is the only thing that tells one from a reboot (test_triple_fault)
    assert argv[argv.index("-d") + 1:argv.index("-d") + 4] == [
        "cpu_reset", "-D", str(spec.workdir / "qemu-cpu-reset.log")]
    spec = run.vm_spec(case_of("clock-localtime"), tmp_path / "disk.raw")
    argv = backend.argv(spec)
    assert argv[argv.index("-rtc") + 1] == "base=localtime"
    assert argv[argv.index("-smp") + 1] == str(case_of("boot").guest.cpus)
    assert argv[argv.index("-cpu") + 1] == "max"
    assert "-no-reboot" not in backend.argv(replace(spec, survive_reboot=True))


@pytest.mark.vm
def test_the_reference_guests_matrix_passes_under_qemu(tmp_path):
    """Real boots, two at a time, of the reference guest's whole matrix: every scenario under
    both firmware (nvram-persist: UEFI). Boot and the device scenarios; the guest
    counts its vCPUs and their topology and keeps every one busy; its RTC holds UTC or the
    host's local time (the run's time zone is five and a half hours from UTC, so a local-time
    RTC cannot pass for a UTC one); it reboots three
    times under each firmware, none of the resets a triple fault of its own; its UEFI variable
    survives a restart in the vars file, not in a fresh one, and QEMU refuses a vars file of
    the wrong size; suspended to a file and restored in a new QEMU (under each firmware) it
    goes on counting, and its disk and network work; 160 concurrent
    direct-I/O jobs keep 128 requests and more in flight on virtio-blk and on NVMe."""
    junit = tmp_path / "junit.xml"
    (tmp_path / "scratch").mkdir()
    # Every scenario under both firmware (nvram-persist is UEFI's alone); vcpus-max is the
    # backend's maximum, 255 vCPUs, which TCG on 2 cores cannot boot in time (a skip with why).
    cases = [f"{scenario}[refguest-{firmware}-qemu]"
             for scenario in ("vcpus-1", "vcpus-2", "vcpus-4", "vcpus-8", "clock-utc",
                              "clock-localtime", "reboot", "nvram-persist", "save-restore",
                              "queue-depth", "boot", "virtio-blk", "nvme", "virtio-net", "uart")
             for firmware in ("uefi", "csm")
             if (scenario, firmware) != ("nvram-persist", "csm")]
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--guest", "refguest",
         "--scenario", "vcpus", "--scenario", "clock", "--scenario", "reboot",
         "--scenario", "nvram-persist", "--scenario", "save-restore",
         "--scenario", "queue-depth",
         *(a for name in ("boot", "virtio-blk", "nvme", "virtio-net", "uart")
           for a in ("--scenario", name)),
         "--artifacts", str(tmp_path / "a"),
         "--junitxml", str(junit), "-p", "no:cacheprovider", "-n", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
        env=dict(os.environ, TZ="Asia/Kolkata", REFVM_TMP=str(tmp_path / "scratch")))
    root = ET.parse(junit).getroot()
    ran = {c.get("name"): {p.get("name"): p.get("value") for p in c.iter("property")}
           for c in root.iter("testcase") if c.find("skipped") is None}
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert set(ran) == set(cases)  # every one ran (and passed: the exit status)
    skipped = {c.get("name"): c.find("skipped").get("message", "")
               for c in root.iter("testcase") if c.find("skipped") is not None}
    assert "255 vCPUs under TCG" in skipped["vcpus-max[refguest-uefi-qemu]"]
    for firmware in ("uefi", "csm"):
        eight = ran[f"vcpus-8[refguest-{firmware}-qemu]"]
        assert eight["vcpus_seen"] == "8"
        assert eight["topology_seen"] == "1 sockets x 4 cores x 2 threads"
        assert int(eight["busy_ticks_min"]) > 0
        four = ran[f"vcpus-4[refguest-{firmware}-qemu]"]
        assert four["topology_seen"] == "2 sockets x 2 cores x 1 threads"
        assert ran[f"vcpus-2[refguest-{firmware}-qemu]"]["vcpus_seen"] == "2"
        assert ran[f"vcpus-1[refguest-{firmware}-qemu]"]["vcpus_seen"] == "1"
        # The step judged each within 2 s (the case passed); its figure tells UTC from the
        # run's local time, 19800 s away (rounded, from the middle of a read that may be slow)
        for variant, offset in (("utc", 0), ("localtime", 19800)):
            clock = ran[f"clock-{variant}[refguest-{firmware}-qemu]"]
            assert float(clock["rtc_off_seconds"]) <= 2
            assert abs(int(clock["rtc_minus_utc_seconds"]) - offset) <= 5
    for firmware in ("uefi", "csm"):
        reboot = ran[f"reboot[refguest-{firmware}-qemu]"]
        assert reboot["reboots"] == "3" and len(set(reboot["boot_ids"].split())) == 4
        assert all(int(n) >= 1 for n in reboot["machine_resets"].split())
        assert reboot["scratch_verified_regions"] == "1"  # written before, found after
    assert ran["reboot[refguest-uefi-qemu]"]["efi_var_across_reboots"] == "RefvmReboot kept"
    assert ran["reboot[refguest-csm-qemu]"]["efi_var_across_reboots"] == \
        "not asked: csm firmware has no UEFI variable store"
    nvram = ran["nvram-persist[refguest-uefi-qemu]"]
    assert nvram["efi_var_after_restart"] == "refvm-nvram-1"
    assert nvram["boot_current_after_restart"] == nvram["boot_next"]
    assert nvram["efi_var_fresh"] == "absent" and nvram["vars_file_size"] == "540672"
    assert "multiple of 0x1000" in nvram["hypervisor_refused"]
    for firmware in ("csm", "uefi"):  # UEFI: the pflash vars go with the VM into the state
        saved = ran[f"save-restore[refguest-{firmware}-qemu]"]
        assert int(saved["state_bytes"]) > 1 << 20 and float(saved["suspend_seconds"]) > 0
        assert int(saved["counter_after_restore"]) >= int(saved["counter_before_save"])
        assert saved["scratch_verified_regions"] == "1" and saved["net0_address"] == "10.0.2.15"
    for firmware in ("uefi", "csm"):
        deep = ran[f"queue-depth[refguest-{firmware}-qemu]"]
        for disk in ("vblk", "nvme"):  # 128 in flight at once, each job's data checked
            assert max(int(deep[f"{disk}_read_inflight_max"]),
                       int(deep[f"{disk}_write_inflight_max"])) >= 128
            assert deep[f"{disk}_verified_regions"] == "160"
    # refvm run's own lines, relayed from two workers: the estimate, a start and an end each
    total = int(re.search(r"^refvm: (\d+) case\(s\); estimate: ", proc.stdout, re.M).group(1))
    assert total == len(cases) + len(skipped)
    for case in cases:
        assert re.search(rf"^refvm: start {re.escape(case)} \(\d+ of {total}\)$", proc.stdout,
                         re.M), case
        assert re.search(rf"^refvm: \[\d+/{total}\] PASS {re.escape(case)} [\d.]+ s",
                         proc.stdout, re.M), case
    assert list((tmp_path / "scratch").iterdir()) == []
