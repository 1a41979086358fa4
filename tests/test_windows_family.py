"""The Windows family's commands survive cmd.exe, which the SAC driver types them into: each
PowerShell command is one double-quoted -Command argument (cmd.exe passes |, &, < and > in it
untouched), with no % (expanded by cmd.exe), ^ (its escape) or double quote inside."""
from __future__ import annotations

import re

import pytest

from harness.families import family

WINDOWS = family("windows")
VALUES = dict(serial="RVNVME-512", name="\\\\.\\PhysicalDrive1", dev="\\\\.\\PhysicalDrive1",
              block=4096, skip=5, count=3, length=65536, mac="52:54:00:5a:00:01",
              ifname="Ethernet", address="10.210.7.2/24", ip="10.210.7.2", prefix=24,
              host="10.210.7.1", port=40000, index=1, number=2, baud=115200, pid=4242)


@pytest.mark.parametrize("op", sorted(WINDOWS.devices) + ["firmware", "poweroff"])
def test_each_command_is_safe_to_type_into_cmd_exe(op):
    line = WINDOWS.commands[op] if op in ("firmware", "poweroff") else \
        WINDOWS.device_command(op, **VALUES)
    assert "\n" not in line and "%" not in line and "^" not in line
    if line.startswith("powershell"):
        match = re.fullmatch(r'powershell -NoProfile -Command "([^"]*)"', line)
        assert match, line
    else:
        assert not re.search(r'[|&<>"]', line), line  # nothing cmd.exe would act on


def test_nvme_identity_picks_the_disk_by_device_id():
    line = WINDOWS.device_command("nvme_identity", **VALUES)
    assert "Where-Object DeviceId -eq" in line and "-DeviceNumber" not in line
