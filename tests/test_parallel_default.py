"""How many VMs refvm run starts at once when not told, and the progress lines' estimate."""
from __future__ import annotations

from harness.parallel import HOST_RESERVE, VM_OVERHEAD, default_jobs
from harness.pytest_plugin.progress import (durations_worth_keeping, estimate, load_durations,
                                            save_durations)
from harness.report.collect import CaseResult

GIB = 1 << 30


def test_cores_memory_and_cases_each_bound_the_workers():
    per_vm = GIB // 2 + VM_OVERHEAD
    assert default_jobs(10, GIB // 2, cores=8, available=64 * GIB) == 8        # cores
    assert default_jobs(10, GIB // 2, cores=8, available=HOST_RESERVE + 3 * per_vm) == 3
    assert default_jobs(2, GIB // 2, cores=8, available=64 * GIB) == 2         # cases
    assert default_jobs(10, 16 * GIB, cores=8, available=2 * GIB) == 1         # never 0


def test_the_estimate_says_what_it_knows(tmp_path):
    assert estimate(["a", "b"], {}, 2) == \
        "no estimate yet: no earlier run of these 2 case(s) on this host"
    save_durations(tmp_path, {"a": 30.0, "b": 60.0})
    save_durations(tmp_path, {"a": 40.0})  # the latest time wins, others are kept
    known = load_durations(tmp_path)
    assert known == {"a": 40.0, "b": 60.0}
    assert estimate(["a", "b", "c"], known, 2) == (
        "about 75 s (2 case(s) timed by earlier runs and 1 guessed at their mean; "
        "150 s of VM time over 2 worker(s))")


def test_a_broken_durations_file_is_no_estimate_not_an_error(tmp_path):
    (tmp_path / "durations.json").write_text('{"a": "x", "b": 5, "c": [1]}')
    assert load_durations(tmp_path) == {"b": 5.0}
    (tmp_path / "durations.json").write_text("[")
    assert load_durations(tmp_path) == {}


def test_skips_are_remembered_at_their_own_small_cost_and_errors_not_at_all():
    cases = [CaseResult("boot[g-csm-qemu]", "pass", "", 40.0),
             CaseResult("vcpus-max[g-csm-qemu]", "skip", "above this host", 0.01),
             CaseResult("nvme[g-csm-qemu]", "fail", "x", 30.0),
             CaseResult("uart[g-csm-qemu]", "error", "[infra] timeout", 600.0)]
    kept = durations_worth_keeping(cases)
    assert kept == {"boot[g-csm-qemu]": 40.0, "vcpus-max[g-csm-qemu]": 0.01,
                    "nvme[g-csm-qemu]": 30.0}
    # the next run's estimate counts the skip as the 0.01 s it costs, not the mean (35 s)
    assert estimate(list(kept), kept, 1).startswith("about 70 s")
