"""The libvirt backend against libvirt's real bhyve driver (bhyve:///system), on a FreeBSD host.

Skipped elsewhere, with the reason: bhyve runs only on FreeBSD. These are the checks that the
XML and driver tests (test_libvirt_xml.py, test_libvirt_drivers.py) cannot make: that the
bhyve driver accepts our domain, starts it without VIR_DOMAIN_START_PAUSED, gives its COM1
through virDomainOpenConsole, and that COM2's nmdm B side carries the UART scenario's data.
The reference guest must be in the image cache (built on a Debian host: see README).
"""
from __future__ import annotations

import platform

import pytest

from harness.catalog import load_guests, load_scenarios
from harness.images.cache import ImageCache, ImageUnavailable
from harness.matrix import Case
from harness.paths import cache_dir
from harness.runner import Run

URI = "bhyve:///system"

pytestmark = [pytest.mark.vm]


def bhyve_driver_or_skip() -> None:
    if platform.system() != "FreeBSD":
        pytest.skip(f"needs a FreeBSD host running libvirtd with the bhyve driver ({URI}); "
                    f"this host runs {platform.system()}")
    pytest.importorskip("libvirt", reason="libvirt-python is not installed")
    from harness.backends.libvirt.connection import connect
    from harness.errors import InfraError
    try:
        connect(URI).close()
    except InfraError as err:
        pytest.skip(str(err))


@pytest.mark.parametrize("scenario_name", ["boot", "uart"])
def test_reference_guest_through_the_bhyve_driver(tmp_path, scenario_name):
    bhyve_driver_or_skip()
    from harness.backends.libvirt.backend import LibvirtBackend

    guest, = load_guests(["refguest"])
    try:
        image = ImageCache(cache_dir(), allow_fetch=False, allow_build=False).prepare(guest)
    except ImageUnavailable as err:
        pytest.skip(str(err))
    scenario, = [s for s in load_scenarios() if s.name == scenario_name]
    run = Run(LibvirtBackend(URI), tmp_path / "artifacts")
    recorded: dict = {}
    try:
        case = Case(scenario, guest, "uefi", "libvirt")
        vm = run.boot(case, image)
        run.run_steps(case, vm, recorded.__setitem__)
    finally:
        run.close()
    if scenario_name == "boot":
        assert recorded["exit"] == "poweroff"
    else:  # the data went both ways through COM2 (the steps compare the hashes themselves)
        assert any(key.endswith("_guest_to_host_bytes") for key in recorded), recorded
