"""What `refvm repro CASE` runs before it hands the console over, and on which backend.

Every scenario ends with a poweroff, often followed by steps that need the VM stopped (the
host reads its disks or vars file): by default repro runs the steps that leave the VM up and
holds back the rest, so the person gets a live console. ``--until`` still chooses. The backend
is the one the case names (``boot[refguest-uefi-bhyve]``)."""
from __future__ import annotations

import pytest

from harness import repro
from harness.backends import DEFAULT_BACKEND
from harness.catalog import load_scenarios
from harness.errors import ConfigError
from harness.model import Step

SCENARIOS = {scenario.name: scenario for scenario in load_scenarios()}


def kinds(names: str) -> list[Step]:
    return [Step(kind, {}, line) for line, kind in enumerate(names.split(), 1)]


@pytest.mark.parametrize("name, count, held", [
    ("boot", 5, "6 poweroff"),
    ("virtio-blk", 3, "4 poweroff, 5 disk_verify, 6 disk_verify"),
    ("reboot", 3, "4 poweroff, 5 disk_verify"),
    # poweroff, a host check and restart in the middle; the last poweroff and the step that
    # starts a VM with a wrong vars file (it stays down) are held back.
    ("nvram-persist", 11, "12 poweroff, 13 vars_size_refused"),
])
def test_by_default_the_steps_that_leave_the_vm_up_run(name, count, held):
    scenario = SCENARIOS[name]
    assert repro.steps_until(scenario, None) == count
    assert repro.held_back(scenario.steps, count) == held


def test_every_shipped_scenario_keeps_its_vm_up_for_the_person():
    for scenario in SCENARIOS.values():
        count = repro.steps_until(scenario, None)
        assert count >= 1 and scenario.steps[count - 1].kind != "poweroff", scenario.name
        assert "poweroff" in [step.kind for step in scenario.steps[count:]], scenario.name


def test_a_restart_after_the_last_poweroff_brings_the_vm_back():
    steps = kinds("login poweroff disk_verify restart login")
    assert repro.running_prefix(steps) == 5
    assert repro.running_prefix(kinds("login run")) == 2  # no poweroff: all of them
    assert repro.running_prefix(kinds("poweroff")) == 0


def test_until_still_chooses():
    scenario = SCENARIOS["boot"]
    assert repro.steps_until(scenario, "login") == 1
    assert repro.steps_until(scenario, "6") == 6  # the poweroff too, when asked for
    assert repro.steps_until(scenario, "poweroff") == 6


@pytest.mark.parametrize("case, given, backend", [
    ("boot[refguest-uefi-bhyve]", None, "bhyve"),
    ("boot[refguest-uefi-bhyve]", "bhyve", "bhyve"),
    ("clock-utc[freebsd-14.3-bhyveload-bhyve]", None, "bhyve"),
    ("boot[refguest-csm-libvirt]", None, "libvirt"),
    ("boot[refguest-csm-qemu]", None, "qemu"),
    ("boot[refguest-csm-nosuch]", None, DEFAULT_BACKEND),  # no backend's name: find_case says
    ("boot", "libvirt", "libvirt"),
])
def test_the_backend_is_the_one_the_case_names(case, given, backend):
    assert repro.backend_of(case, given) == backend


def test_a_backend_option_that_disagrees_with_the_case_is_an_input_error():
    with pytest.raises(ConfigError, match=r"--backend: 'qemu', but case "
                                          r"'boot\[refguest-uefi-bhyve\]' is one of the bhyve"):
        repro.backend_of("boot[refguest-uefi-bhyve]", "qemu")
