"""Guest failures on a real guest are caught fast and explained (QEMU, reference guest)."""
from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest

from harness.backends import get_backend
from harness.catalog import load_guests
from harness.errors import GuestFailure
from harness.images.cache import ImageCache
from harness.matrix import Case
from harness.catalog import load_scenario
from harness.paths import cache_dir
from harness.runner import Run

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU not installed"),
]


def run_steps(tmp_path: Path, guest, steps_yaml: str):
    guest_image = ImageCache(cache_dir(), log=lambda _t: None).prepare(
        load_guests(["refguest"])[0])
    scenario_file = tmp_path / "scenarios" / "s.yaml"
    scenario_file.parent.mkdir()
    scenario_file.write_text("name: s\nsteps:\n" + steps_yaml)
    run = Run(get_backend("qemu", accel="tcg"), tmp_path / "artifacts")
    case = Case(load_scenario(scenario_file), guest, "csm", "qemu")
    try:
        vm = run.boot(case, guest_image)
        run.run_steps(case, vm, lambda *_: None)
    finally:
        run.close()


def test_kernel_panic_ends_the_step_within_seconds_quoting_it(tmp_path):
    guest, = load_guests(["refguest"])
    started = time.monotonic()
    with pytest.raises(GuestFailure) as err:
        run_steps(tmp_path, guest, "  - login\n"
                                   "  - run: {command: 'echo c > /proc/sysrq-trigger', timeout: 300}\n")
    message = str(err.value)
    assert "Kernel panic - not syncing" in message
    assert "sysrq" in message  # the lines around the panic are quoted
    assert "timed out" not in message
    assert time.monotonic() - started < 120  # boot (~20 s) + seconds, not the 300 s timeout


def test_silent_guest_fails_at_its_boot_timeout_with_the_last_lines(tmp_path):
    guest, = load_guests(["refguest"])
    guest = replace(guest, console=replace(guest.console, login_prompt="never-printed:",
                                           boot_timeout=45.0))
    started = time.monotonic()
    with pytest.raises(GuestFailure, match=r"no login prompt within 45s; last console lines:"
                                           r"(.|\n)*refguest login:"):
        run_steps(tmp_path, guest, "  - login\n")
    assert time.monotonic() - started < 120


def test_a_refused_poweroff_fails_at_once_quoting_the_guest(tmp_path):
    """A guest that cannot power off (a non-root user's `poweroff` says "Operation not
    permitted"; here a shell function in the real guest's shell says it) fails as soon as the
    command returns, not at the step's 120 s timeout."""
    guest, = load_guests(["refguest"])
    refuse = "poweroff() { echo 'poweroff: Operation not permitted' >&2; return 1; }"
    started = time.monotonic()
    with pytest.raises(GuestFailure) as err:
        run_steps(tmp_path, guest, "  - login\n"
                                   f"  - run: {{command: \"{refuse}\"}}\n"
                                   "  - poweroff\n")
    message = str(err.value)
    assert "'poweroff' failed (exit 1) and the guest stays up" in message
    assert "poweroff: Operation not permitted" in message
    assert time.monotonic() - started < 60  # boot (~20 s) + seconds, not the 120 s timeout


def test_a_poweroff_the_guest_ignores_fails_once_its_shell_still_answers(tmp_path):
    """`poweroff` exits 0 but nothing happens (an init that ignores it): after `settle`
    seconds the harness asks the shell, which answers, so the step fails then."""
    guest, = load_guests(["refguest"])
    ignore = "poweroff() { true; }"
    started = time.monotonic()
    with pytest.raises(GuestFailure, match=r"'poweroff' exited 0, but \d+s later the guest is "
                                           r"still up and its shell answers: its init ignored"):
        run_steps(tmp_path, guest, "  - login\n"
                                   f"  - run: {{command: \"{ignore}\"}}\n"
                                   "  - poweroff: {settle: 5}\n")
    assert time.monotonic() - started < 90  # boot (~20 s) + settle, not the 120 s timeout
