"""The Windows family's commands survive cmd.exe, which the SAC driver types them into: each
PowerShell command is one double-quoted -Command argument (cmd.exe passes |, &, < and > in it
untouched), with no % (expanded by cmd.exe), ^ (its escape) or double quote inside, and shorter
than cmd.exe's 8191 characters. And each script is PowerShell: the tree-sitter PowerShell
grammar (tree-sitter-powershell, a test dependency) parses it without an ERROR or MISSING node.
That proves the syntax only; what the cmdlets do is played by a test double
(tests/fake_windows_powershell.py), never seen on a real Windows here."""
from __future__ import annotations

import re

import pytest

from harness.families import family

WINDOWS = family("windows")
VALUES = dict(serial="RVNVME-512", name="\\\\.\\PhysicalDrive1", dev="\\\\.\\PhysicalDrive1",
              block=4096, skip=5, count=3, length=65536, mac="52:54:00:5a:00:01",
              ifname="Ethernet", address="10.210.7.2/24", ip="10.210.7.2", prefix=24,
              host="10.210.7.1", port=40000, index=1, number=2, baud=115200, pid=4242,
              guid="8be4df61-93ca-11d2-aa0d-00e098032b8c", jobs=160, seconds=5,
              octal="\\007\\000\\000\\000\\162\\166\\055\\061")
UART_VALUES = dict(VALUES, dev="COM2")  # what the uart step puts in @dev@ (uart_device)
POWERSHELL = re.compile(r'powershell -NoProfile -Command "([^"]*)"')
CMD_LINE_MAX = 8191  # cmd.exe's longest command line


def rendered(op: str) -> str:
    if op in WINDOWS.commands:
        return WINDOWS.commands[op]
    values = UART_VALUES if op.startswith("uart_") else VALUES
    needed = set(re.findall(r"@([a-z_]+)@", WINDOWS.devices[op]))
    return WINDOWS.device_command(op, **{k: v for k, v in values.items() if k in needed})


OPS = sorted(WINDOWS.devices) + sorted(WINDOWS.commands)


@pytest.mark.parametrize("op", OPS)
def test_each_command_is_safe_to_type_into_cmd_exe(op):
    line = rendered(op)
    assert "\n" not in line and "%" not in line and "^" not in line
    assert len(line) < CMD_LINE_MAX
    if line.startswith("powershell"):
        assert POWERSHELL.fullmatch(line), line
    else:
        assert not re.search(r'[|&<>"]', line), line  # nothing cmd.exe would act on


def test_a_double_quote_inside_the_script_is_refused():
    assert not POWERSHELL.fullmatch('powershell -NoProfile -Command "Write-Output "x""')


# The grammar ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def parse():
    from tree_sitter import Language, Parser
    import tree_sitter_powershell

    parser = Parser(Language(tree_sitter_powershell.language()))
    return lambda script: parser.parse(script.encode()).root_node


def syntax_errors(root) -> list[str]:
    """Every ERROR or MISSING node under ``root``, as text."""
    found, stack = [], [root]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            found.append(f"{'MISSING' if node.is_missing else 'ERROR'} at byte "
                         f"{node.start_byte}: {node.text.decode(errors='replace')[:60]!r}")
        stack.extend(node.children)
    return found


def nested_scripts(root) -> list[str]:
    """Scripts inside a script: the single-quoted string after a '-Command' string (a child
    powershell's, started by Start-Process), its doubled quotes undone."""
    strings, stack = [], [root]
    while stack:
        node = stack.pop()
        if node.type == "string_literal":
            strings.append((node.start_byte, node.text.decode()))
        stack.extend(node.children)
    strings.sort()
    return [text[1:-1].replace("''", "'") for (_, before), (_, text) in zip(strings, strings[1:])
            if before == "'-Command'"]


POWERSHELL_OPS = [op for op in OPS if rendered(op).startswith("powershell")]


@pytest.mark.parametrize("op", POWERSHELL_OPS)
def test_each_powershell_script_parses_with_the_powershell_grammar(op, parse):
    script = POWERSHELL.fullmatch(rendered(op)).group(1)
    root = parse(script)
    assert syntax_errors(root) == [], script
    for inner in nested_scripts(root):
        assert syntax_errors(parse(inner)) == [], inner


def test_a_child_powershells_script_is_checked_too(parse):
    root = parse(POWERSHELL.fullmatch(rendered("uart_receive_start")).group(1))
    inner, = nested_scripts(root)
    assert inner.startswith("$p=New-Object IO.Ports.SerialPort 'COM2',115200;")
    broken = rendered("uart_receive_start").replace("$p.Open();", "$p.Open(;")
    assert syntax_errors(parse(nested_scripts(parse(POWERSHELL.fullmatch(broken).group(1)))[0]))


def test_every_device_script_stops_at_its_first_error():
    """powershell -Command exits 0 after a failed .NET call unless told to stop."""
    for op in POWERSHELL_OPS:
        if op in WINDOWS.devices:
            assert POWERSHELL.fullmatch(rendered(op)).group(1).startswith(
                "$ErrorActionPreference='Stop'; "), op


@pytest.mark.parametrize("broken", [
    "$f=[IO.File]::Open('x','Open'; $f.Close()",            # a call never closed
    "if ($n -lt 3) { 'a' ",                                  # a block never closed
    "$b=New-Object byte[] (4*; $n",                           # an operand missing
    "Get-Disk | | Select-Object Size",                       # an empty pipeline element
])
def test_the_grammar_check_finds_broken_scripts(broken, parse):
    assert syntax_errors(parse(broken))


def test_nvme_identity_picks_the_disk_by_device_id():
    line = rendered("nvme_identity")
    assert "Where-Object DeviceId -eq" in line and "-DeviceNumber" not in line


def test_the_machine_scenarios_apply_to_windows_and_queue_depth_says_why_not():
    """vcpus, clock, reboot, nvram-persist and save-restore have Windows commands now; only
    queue-depth skips, with the reason the family gives (planned, no VM started)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "plan", "--guest", "windows-server-2022-eval",
         "--backend", "bhyve", "--json"], cwd=Path(__file__).resolve().parent.parent,
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    skips = {c["id"].split("[")[0]: c.get("skip") for c in json.loads(proc.stdout)["cases"]}
    for name in ("vcpus-4", "clock-localtime", "reboot", "nvram-persist", "save-restore",
                 "virtio-blk", "nvme", "virtio-net", "uart"):
        assert not (skips[name] or "").count("has nothing for windows"), (name, skips[name])
    assert skips["queue-depth"].endswith(
        "has nothing for windows guests: no in-box Windows tool reports the queue size viostor "
        "or StorNVMe negotiated, nor requests in flight per queue (only the disk's averaged "
        "queue-length counter)")


def test_a_union_of_families_keeps_the_operations_both_sides_were_picked_for():
    """A step that runs on either of two command sets (nvram's EFI_STEPS) still names the
    operations, so a family's ``missing:`` reason can reach its skip."""
    from harness.families import families_having

    either = families_having("efivar_read", "efivar_write") | families_having("efivar_read_data")
    assert either.ops == ("efivar_read", "efivar_write", "efivar_read_data")
    assert set(either) >= {"linux", "freebsd"}
