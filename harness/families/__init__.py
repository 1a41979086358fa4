"""What the harness knows about each OS family, kept as data (``<family>.yaml`` beside this file).

Scenario steps ask the family for the command that does a job (``firmware``, ``poweroff``...),
and the console asks it for the console messages that mean the guest is dead. Adding a guest of
a known family therefore needs only its YAML.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .. import schema as s
from ..errors import ConfigError, InfraError, show
from ..yamlfile import load_file

HERE = Path(__file__).parent
# The OS families: declared once, by the family files themselves (linux.yaml, freebsd.yaml...).
NAMES = tuple(sorted(path.stem for path in HERE.glob("*.yaml")))

DEVICE_OPS = (
    "disk_by_serial", "disk_size", "disk_sector_size", "disk_read_sha256", "disk_write_random",
    "disk_write_probe", "nvme_identity", "nic_by_mac", "nic_set_ipv4", "nic_dhcp", "nic_state",
    "nic_ipv4",
    "tcp_send", "tcp_receive", "uart_device", "uart_setup", "uart_receive_start",
    "uart_receive_finish", "uart_send", "uart_close",
    # The machine as the guest sees it (vCPUs, RTC, boots).
    "cpu_count", "cpu_topology", "cpu_ticks", "cpu_load", "rtc_read", "boot_id", "reboot",
    # UEFI variables: read as hex (efivar_read: 4 bytes of attributes, then the data, as
    # efivarfs gives them; efivar_read_data: the data alone, for tools that show no attributes),
    # written from printf's octal escapes (@octal@ with the attributes first, @data_octal@
    # without); BootNext set with the OS's boot manager (@bootnum@, 4 hex digits) where it has
    # one.
    "efivar_read", "efivar_read_data", "efivar_write", "efi_boot_next",
    # save-restore: a counter the guest keeps in a file; a file whose hash must survive.
    "counter_start", "counter_read", "keep_write", "keep_sha",
    # queue-depth: @jobs@ concurrent direct-I/O readers (writers) of @count@ blocks each, the
    # most requests seen in flight, each job's hash; the queue size the driver negotiated.
    "queue_read", "queue_write", "queue_size",
    # Where the guest has fio: "fio" or "none"; fio's verified deep-queue writes (queue.py).
    "fio_available", "fio_verify",
)
# What may be put into a guest command line: values the harness made or validated. Anything
# else (spaces, quotes, ';', '$') would be a way to inject shell syntax, and is refused.
SAFE_VALUE = re.compile(r"[A-Za-z0-9_./:\\-]+")  # used with fullmatch: no final newline
PLACEHOLDER = re.compile(r"@([a-z_]+)@")

FAMILY = s.Map({
    "family": s.F(s.Enum(*NAMES), required=True),
    "failure_patterns": s.F(s.ListOf(s.Regex()), default=[]),
    "after_login": s.F(s.ListOf(s.Str()), default=[]),
    "commands": s.F(s.Map({
        "firmware": s.F(s.Str(), doc="prints UEFI or BIOS"),
        "poweroff": s.F(s.Str()),
    }), required=True),
    "devices": s.F(s.Map({op: s.F(s.Str()) for op in DEVICE_OPS}), default={}),
    # Why the family has no command for an operation, where that is known: the matrix puts it
    # into the skip of every case whose step needs the operation.
    "missing": s.F(s.Map({op: s.F(s.Str()) for op in DEVICE_OPS}), default={}),
})


@dataclass(frozen=True)
class Family:
    name: str
    failure_patterns: tuple
    after_login: tuple
    commands: dict
    devices: dict
    missing: dict = field(default_factory=dict)  # operation -> why the family has none

    def device_command(self, op: str, **values) -> str:
        """The family's command for a device operation, with its @placeholders@ filled in."""
        template = self.devices.get(op)
        if not template:
            raise InfraError(f"the {self.name} family has no command for {op!r} "
                             f"(harness/families/{self.name}.yaml)")

        def fill(match):
            key = match.group(1)
            if key not in values:
                raise InfraError(f"{self.name}.yaml {op}: no value for @{key}@")
            value = str(values[key])
            if not SAFE_VALUE.fullmatch(value):
                raise InfraError(f"refusing to put {show(value)} into a guest command ({op})")
            return value

        return PLACEHOLDER.sub(fill, template)


class Families(frozenset):
    """Names of OS families, and the operations they were picked for (``ops``), so that a
    skip can say why a family lacks one (``Family.missing``). A union (a step that runs on
    families with either of two command sets) keeps the operations of both."""

    def __new__(cls, names=(), ops: tuple = ()):
        found = super().__new__(cls, names)
        found.ops = tuple(ops)
        return found

    def __or__(self, other):
        return Families(frozenset(self) | other,
                        tuple(dict.fromkeys(self.ops + getattr(other, "ops", ()))))


def families_having(*ops: str) -> Families:
    """The OS families whose command sets have every one of ``ops`` (for a step's
    ``families``: the matrix skips the others, saying so)."""
    return Families((name for name in NAMES if all(op in family(name).devices for op in ops)),
                    ops)


@lru_cache(maxsize=None)
def family(name: str) -> Family:
    """Load the profile of one OS family (cached: these files ship with the harness)."""
    path = HERE / f"{name}.yaml"
    problems: list = []
    data = s.validate(load_file(path), FAMILY, str(path), problems)
    if problems:
        raise ConfigError(problems)
    return Family(name=data["family"], failure_patterns=tuple(data["failure_patterns"]),
                  after_login=tuple(data["after_login"]), commands=dict(data["commands"]),
                  devices={k: v for k, v in (data["devices"] or {}).items() if v},
                  missing={k: v for k, v in (data["missing"] or {}).items() if v})
