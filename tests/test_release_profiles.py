"""`refvm plan --bhyve-release X.Y`: the matrix an older (or newer) FreeBSD host's bhyve runs."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from harness.backends.bhyve.caps import BhyveCaps
from harness.cli import _release_note, main


def plan(capsys, release):
    assert main(["plan", "--backend", "bhyve", "--bhyve-release", release, "--guest",
                 "refguest", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    return out, {case["id"]: case for case in out["cases"]}


def test_an_11_3_host_cannot_run_nvme_nor_virtio_blk_serials_and_says_why(capsys):
    out, cases = plan(capsys, "11.3")
    assert "assume FreeBSD 11.3's bhyve" in out["backend"]
    nvme_skip = cases["nvme[refguest-uefi-bhyve]"]["skip"]
    assert "bhyve on FreeBSD 11.3 has no nvme emulation" in nvme_skip
    assert nvme_skip.count("no nvme emulation") == 1  # two NVMe disks, one reason
    assert "has no ser= for virtio-blk" in cases["virtio-blk[refguest-uefi-bhyve]"]["skip"]
    boot, = cases["boot[refguest-uefi-bhyve]"]["commands"][-1:]
    bootrom = next(a for a in boot if a.startswith("bootrom,"))
    assert bootrom.endswith("BHYVE_UEFI.fd")  # no vars file before 13.1: the single image


def test_a_14_3_host_runs_them_with_a_private_vars_file(capsys):
    _, cases = plan(capsys, "14.3")
    assert cases["nvme[refguest-uefi-bhyve]"]["skip"] is None
    boot = cases["boot[refguest-uefi-bhyve]"]["commands"][-1]
    assert next(a for a in boot if a.startswith("bootrom,")).endswith("/uefi-vars.fd")


@pytest.mark.parametrize("bad", ["14", "fourteen", "14.3-RELEASE", "9.0", "14.3\x1b[2J"])
def test_a_release_that_is_not_x_y_is_a_usage_error(capsys, bad):
    with pytest.raises(SystemExit) as stop:
        main(["plan", "--backend", "bhyve", "--bhyve-release", bad])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "must be a FreeBSD release such as 13.2" in err and "\x1b" not in err


def test_a_freebsd_hosts_own_bhyve_wins_and_the_mismatch_is_said():
    real = BhyveCaps(release=(14, 1), emulations=frozenset(), lpc_devices=frozenset(),
                     release_text="14.1-RELEASE-p5")
    backend = SimpleNamespace(name="bhyve", caps=real)  # TEST DOUBLE: a probed FreeBSD host
    assert _release_note(backend, (13, 2)) == (
        "this host's bhyve is FreeBSD 14.1-RELEASE-p5, not the 13.2 asked for: its real "
        "capabilities were used")
    assert _release_note(backend, (14, 1)) is None
    assert _release_note(SimpleNamespace(name="bhyve", caps=BhyveCaps.for_release((14, 1))),
                         (13, 2)) is None  # assumed caps are the release asked for
