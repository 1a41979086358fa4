"""The Debian 12 guest and the SSH channel, on real QEMU boots (TCG: about 1-2 min a boot).

The device scenarios themselves run on debian-12 through the scenario collection (scenarios/,
ids such as nvme[debian-12-uefi-qemu]); these tests prove what a scenario cannot show: the
image is cached with its size and host key, a wrong host key is refused, bulk data goes both
ways and sshd dying under a command is a guest failure, all on one boot; and SSH through
libvirt (qemu:///system) on another.
"""
from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.backends import get_backend
from harness.catalog import load_guests, load_scenarios
from harness.console.ssh import SshChannel, SshRefused, new_client_key
from harness.errors import GuestFailure
from harness.images.cache import ImageCache, read_stamp
from harness.images.debian_rootfs.sshkey import host_key_files
from harness.matrix import Case
from harness.paths import cache_dir
from harness.runner import Run, StepContext
from harness.steps import REGISTRY

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU not installed"),
]


@pytest.fixture(scope="module")
def debian():
    """The Debian 12 guest and its image (built here when the cache has none: ~2-4 min)."""
    guest, = load_guests(["debian-12"])
    image = ImageCache(cache_dir(), log=lambda _t: None).prepare(guest)
    return guest, image


def test_the_image_is_at_most_1_gib_and_its_host_key_is_recorded(debian):
    _guest, image = debian
    assert image.stat().st_size <= 10 ** 9  # "at most 1 GB raw"
    assert read_stamp(image)["ssh_host_key"].startswith("ssh-ed25519 ")


@contextmanager
def booted(tmp_path: Path, debian, scenario_name: str, firmware: str, backend=None):
    """(case, booted VM) of one scenario on the Debian guest; everything gone afterwards."""
    guest, image = debian
    scenario, = [s for s in load_scenarios() if s.name == scenario_name]
    backend = backend or get_backend("qemu", accel="tcg")
    run = Run(backend, tmp_path / "artifacts")
    case = Case(scenario, guest, firmware, backend.name)
    try:
        yield run, case, run.boot(case, image)
    finally:
        run.close()


def test_virtio_net_on_a_guest_without_network_configuration(tmp_path, debian):
    """The scenario that failed on a distribution the harness did not set up: the harness
    brings the NIC up and asks the lease itself; OpenBSD netcat closes with -N."""
    recorded: dict = {}
    with booted(tmp_path, debian, "virtio-net", "csm") as (run, case, vm):
        run.run_steps(case, vm, recorded.__setitem__)
    assert recorded["net0_dhcp"] == "dhclient"
    assert recorded["net0_guest_to_host_bytes"] == recorded["net0_host_to_guest_bytes"] == 8 << 20
    assert recorded["exit"] == "poweroff"
    print(f"debian-12 csm: login prompt and shell after {recorded['login_seconds']} s")


def test_ssh_commands_wrong_host_key_and_sshd_killed_mid_step(tmp_path, debian):
    guest, _image = debian
    recorded: dict = {}
    with booted(tmp_path, debian, "ssh", "uefi") as (_run, case, vm):
        ctx = StepContext(case, vm, recorded.__setitem__, deadline=float("inf"))
        ctx.guest.reach_shell(timeout=guest.console.boot_timeout)
        ctx.channel = "ssh"
        shell = ctx.guest  # connects: key typed over the console, NIC up, host key checked
        result = shell.run("echo $SSH_CONNECTION; id -u; exit 7", timeout=30)
        assert result.status == 7 and result.output.splitlines()[-1] == "0"
        assert recorded["net0_dhcp"] == "dhclient"  # the guest had no network configuration

        # The ssh scenario's bulk step, smaller: the scenario as shipped moves 256 MiB each
        # way (about 4 min under TCG here); CI proves the same step with 16 MiB on this boot.
        REGISTRY["ssh_transfer"].run(ctx, {"bytes": 16 << 20, "file_bytes": 1 << 20})
        assert recorded["ssh_bytes_each_way"] == 16 << 20
        assert recorded["ssh_host_to_guest_sha256"] != recorded["ssh_guest_to_host_sha256"]

        host, port = vm.machine.ssh_endpoint()
        wrong = host_key_files(b"not this image", "root@elsewhere")[1].decode()
        with pytest.raises(SshRefused, match="the host key is SHA256:.*, not the SHA256:.* "
                                             "recorded for this image: refused"):
            SshChannel(host, port, "root", new_client_key(), wrong, timeout=20)

        with pytest.raises(GuestFailure, match="without an exit status"):
            shell.run("sleep 1; pkill -KILL -x sshd; sleep 30", timeout=60)


def test_ssh_through_libvirt_with_the_forward_added_to_the_running_domain(tmp_path, debian):
    """libvirt (qemu:///system): the same SSH channel, reached through the loopback forward
    the backend adds to the domain's user network (HMP hostfwd_add through libvirt), host key
    checked, data hashed both ways."""
    from tests.test_libvirt_e2e import backend as libvirt_backend, need, refvm_domains

    need("qemu:///system")
    recorded: dict = {}
    with booted(tmp_path, debian, "ssh", "csm", libvirt_backend()) as (_run, case, vm):
        ctx = StepContext(case, vm, recorded.__setitem__, deadline=float("inf"))
        REGISTRY["login"].run(ctx, {})
        ctx.channel = "ssh"
        result = ctx.guest.run("echo ${SSH_CONNECTION%% *}; exit 4", timeout=30)
        assert result.status == 4 and result.output.strip() == "10.0.2.2"  # QEMU's host side
        host, port = vm.machine.ssh_endpoint()
        assert host == "127.0.0.1" and vm.machine.ssh_endpoint() == (host, port)  # added once
        REGISTRY["ssh_transfer"].run(ctx, {"bytes": 8 << 20, "file_bytes": 1 << 20})
        assert recorded["ssh_bytes_each_way"] == 8 << 20
        name = vm.spec.name
    print(f"debian-12 on libvirt: login after {recorded['login_seconds']} s; 8 MiB over SSH "
          f"in {recorded['ssh_host_to_guest_seconds']} s to the guest, "
          f"{recorded['ssh_guest_to_host_seconds']} s back")
    assert name not in refvm_domains()
