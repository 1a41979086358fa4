"""The Unix guest-OS driver over SSH: the same commands as on the console, another transport.

Why this exists: a step with ``channel: ssh`` runs exactly what it would run on the serial
console (the family's command set, status and output), but through sshd, so a scenario can
move bulk data at network speed and prove the network path end to end. The console driver
stays in charge of the way in (:func:`connect_ssh`): it installs the run's public key for the
console user, brings the SSH NIC up with a DHCP lease when the guest has no network
configuration, and keeps watching the console for panics while SSH commands run.
"""
from __future__ import annotations

import re
import time

from ..console.ssh import SshChannel, SshRefused, new_client_key
from ..errors import GuestFailure, InfraError
from ..model import NicAttach
from .unix import CommandResult

CONNECT_SECONDS = 120.0  # sshd may still be starting when the first step asks for it
_PUBLIC_LINE = re.compile(r"ssh-ed25519 [A-Za-z0-9+/=]+ [a-z-]+")


class SshShell:
    """Commands over SSH with the console driver's family commands; see module docstring."""

    def __init__(self, channel: SshChannel, console_driver):
        self.channel, self.console_driver = channel, console_driver
        self.family = console_driver.family

    def run(self, command: str, timeout: float = 60.0) -> CommandResult:
        result = self.channel.run(command, timeout)
        return CommandResult(command, result.status, result.output.rstrip("\n"), result.seconds)

    def command(self, name: str) -> str:
        return self.console_driver.command(name)

    def device_command(self, op: str, **values) -> str:
        return self.console_driver.device_command(op, **values)

    def watch(self, seconds: float, what: str) -> bool:
        return self.console_driver.watch(seconds, what)

    def answers(self, timeout: float = 5.0) -> bool:
        try:
            return self.run("echo up", timeout).output.strip().endswith("up")
        except GuestFailure:
            return False

    def close(self) -> None:
        self.channel.close()


def console_watch(console_driver):
    """What the SSH channel calls while it waits on the guest (between reads, between chunks
    sent): the console driver's own watch, so a panic on the serial console ends an SSH
    command or transfer as it ends a console command."""
    return lambda seconds: console_driver.watch(seconds, "the guest while SSH runs")


def recorded_host_key(ctx) -> str:
    """The host key the guest must present: its guest file's, else the one the image builder
    recorded beside the cached image."""
    from ..images.cache import read_stamp

    spec = ctx.case.guest.ssh
    if spec and spec.host_key:
        return spec.host_key
    key = (read_stamp(ctx.vm.spec.boot_disk.path) or {}).get("ssh_host_key")
    if not key:
        raise InfraError(f"guest {ctx.case.guest.name}: no SSH host key is recorded for its "
                         "image (give ssh.host_key in the guest file)")
    return key


def connect_ssh(ctx) -> SshShell:
    """From a logged-in console to an SSH driver: key installed, NIC up, sshd reached."""
    guest = ctx.case.guest
    if guest.ssh is None or "ssh" not in guest.devices:
        raise InfraError(f"guest {guest.name} offers no SSH (devices: [ssh] and an ssh "
                         "section in its guest file)")
    nics = [a for a in ctx.case.scenario.attach if isinstance(a, NicAttach) and a.ssh]
    if not nics:
        raise InfraError(f"scenario {ctx.case.scenario.name}: a step asks for channel: ssh, "
                         "but no nic is marked ssh: true")
    saved, ctx.channel = ctx.channel, "console"  # the way in goes over the console
    try:
        return _connect(ctx, guest, nics[0])
    finally:
        ctx.channel = saved


def _type_client_key(console):
    """A new key pair for the run, its public half typed into authorized_keys on the console."""
    key = new_client_key()
    if not _PUBLIC_LINE.fullmatch(key.public_line):  # typed into a shell: plain words only
        raise InfraError("the run's SSH public key is not plain base64")
    result = console.run("umask 077 && mkdir -p ~/.ssh && "
                         f"echo '{key.public_line}' >> ~/.ssh/authorized_keys", timeout=30)
    if result.status != 0:
        raise GuestFailure(f"cannot install the run's SSH key: {result.output.strip()[-200:]}")
    return key


def _connect(ctx, guest, nic: NicAttach) -> SshShell:
    from ..steps.network import bring_up

    console = ctx.vm.guest
    seeded = ctx.vm.facts.get("seed")
    if seeded:  # a cloud image: its seed disc gave it the run's key and its host key
        key, host_key = seeded["client_key"], seeded["host_key"]
    else:
        key = _type_client_key(console)
        host_key = recorded_host_key(ctx)
    bring_up(ctx, nic)
    host, port = ctx.vm.machine.ssh_endpoint()
    deadline = time.monotonic() + ctx.remaining(CONNECT_SECONDS)
    while True:
        try:
            channel = SshChannel(host, port, guest.ssh.user, key, host_key, timeout=20,
                                 watch=console_watch(console))
            break
        except SshRefused:
            raise  # a wrong host key or a refused key is final
        except InfraError:
            # QEMU's forward accepts and then drops while nothing listens on port 22 yet.
            if time.monotonic() > deadline:
                raise
            console.watch(2.0, "sshd to start")
    ctx.vm.log.note(f"SSH: connected to {guest.ssh.user}@{host}:{port} (host key checked)")
    return SshShell(channel, console)
