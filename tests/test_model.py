"""Guest and scenario files: what loads, and the one clear line each mistake produces."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness.catalog import load_guests, load_scenarios
from harness.errors import ConfigError
from harness.catalog import load_scenario
from harness.model import load_guest

GOOD_GUEST = """\
name: tiny
family: linux
image:
  path: disk.img
  sha256: {sha}
memory: 256M
firmware: [uefi, csm]
devices: [virtio-blk]
console:
  user: root
  password: pw
"""
SHA = "a" * 64


def write(tmp_path: Path, text: str, name="guest.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(loader, path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        loader(path)
    return [str(p) for p in err.value.problems]


def test_good_guest_loads_with_defaults_and_sizes_in_bytes(tmp_path):
    guest = load_guest(write(tmp_path, GOOD_GUEST.format(sha=SHA)))
    assert guest.name == "tiny" and guest.memory == 256 << 20 and guest.cpus == 1
    assert guest.firmware == ("uefi", "csm")
    assert guest.image.path == (tmp_path / "disk.img").resolve()
    assert guest.console.boot_timeout == 300.0


def test_unknown_key_wrong_type_missing_field_bad_sha_each_give_one_line(tmp_path):
    text = GOOD_GUEST.format(sha="nothex").replace("memory: 256M", "memory: lots") \
        .replace("family: linux\n", "") + "colour: blue\n"
    path = write(tmp_path, text)
    lines = problems(load_guest, path)
    # family is gone, so: name 1, image 2, path 3, sha256 4, memory 5, ..., colour 11
    assert lines[0].startswith(f"{path}:11: colour: unknown key; known keys: boot_bus, cloud_init, console, cpus")
    assert f"{path}:1: family: required field is missing" in lines
    assert any(x.startswith(f"{path}:4: image.sha256: 'nothex' is not a sha256") for x in lines)
    assert any(x.startswith(f"{path}:5: memory: must be a size such as 512M") for x in lines)
    assert len(lines) == 4


def test_wrong_types_name_what_was_found(tmp_path):
    path = write(tmp_path, GOOD_GUEST.format(sha=SHA).replace("memory: 256M", "cpus: two"))
    assert problems(load_guest, path) == [
        f"{path}:6: cpus: must be a whole number, got a string"]


def test_image_needs_exactly_one_source_and_a_hash(tmp_path):
    path = write(tmp_path, GOOD_GUEST.format(sha=SHA).replace(f"  sha256: {SHA}\n", ""))
    assert problems(load_guest, path) == [
        f"{path}:3: image.sha256: required with path: images are never used unverified"]
    path = write(tmp_path, GOOD_GUEST.format(sha=SHA).replace(
        "  path: disk.img\n", "  path: disk.img\n  url: https://example.org/x.img\n"))
    assert problems(load_guest, path) == [
        f"{path}:3: image: give exactly one of url, path, build or install (found url, path)"]


def test_unsafe_name_and_unknown_firmware_are_refused(tmp_path):
    path = write(tmp_path, GOOD_GUEST.format(sha=SHA).replace("name: tiny", "name: ../x")
                 .replace("[uefi, csm]", "[uefi, coreboot]"))
    lines = problems(load_guest, path)
    assert lines[0].startswith(f"{path}:1: name: '../x' is not a safe name")
    assert lines[1].startswith(f"{path}:7: firmware[1]: unknown value 'coreboot'")


def test_bhyveload_is_for_freebsd_only(tmp_path):
    path = write(tmp_path, GOOD_GUEST.format(sha=SHA).replace("[uefi, csm]", "[bhyveload]"))
    assert problems(load_guest, path) == [
        f"{path}:7: firmware: bhyveload boots FreeBSD guests only"]


def test_yaml_syntax_error_and_duplicate_key_name_the_line(tmp_path):
    path = write(tmp_path, "name: x\nfamily: [linux\n")
    assert problems(load_guest, path)[0].startswith(f"{path}:3: (syntax): invalid YAML")
    path = write(tmp_path, "name: x\nname: y\n")
    assert problems(load_guest, path) == [f"{path}:2: name: duplicate key"]


def test_scenario_steps_are_checked_against_the_step_registry(tmp_path):
    path = write(tmp_path, """\
        name: s
        steps:
          - login
          - dance
          - run: {command: true, statuz: 1}
        """, "s.yaml")
    lines = problems(load_scenario, path)
    assert lines[0].startswith(f"{path}:4: steps[1]: unknown step 'dance'")
    assert lines[1].startswith(f"{path}:5: steps[2].run.statuz: unknown key")
    assert lines[2] == f"{path}:5: steps[2].run.command: must be a string, got true/false"


def test_scenario_per_family_commands(tmp_path):
    path = write(tmp_path, """\
        name: s
        steps:
          - run: {command: {linux: uname -s}, output: Linux}
        """, "s.yaml")
    step, = load_scenario(path).steps
    assert step.kind == "run" and step.args["command"] == {
        "linux": "uname -s", "freebsd": None, "windows": None}


def test_repository_files_are_valid():
    assert [g.name for g in load_guests()] == ["freebsd-13.2", "freebsd-14.1", "freebsd-14.3",
                                               "freebsd-15.1", "debian-12-cloud", "debian-12",
                                               "refguest", "ubuntu-24.04-cloud",
                                               "windows-server-2022-eval"]
    assert "boot" in [s.name for s in load_scenarios()]


def test_guest_selected_by_path_and_by_name(tmp_path):
    path = write(tmp_path, GOOD_GUEST.format(sha=SHA))
    assert [g.name for g in load_guests([str(path), "refguest"])] == ["tiny", "refguest"]
    with pytest.raises(ConfigError, match="unknown guest 'nope'"):
        load_guests(["nope"])


def test_duplicate_guest_names_are_refused(tmp_path):
    a = write(tmp_path, GOOD_GUEST.format(sha=SHA), "a.yaml")
    b = write(tmp_path, GOOD_GUEST.format(sha=SHA), "b.yaml")
    with pytest.raises(ConfigError, match="'tiny' is also the name in"):
        load_guests([str(a), str(b)])


def test_byte_counts_are_bytes_and_sizes_keep_their_units(tmp_path):
    """A bare number in a byte-count field is bytes (it was MiB: ``bytes: 65536`` asked for
    64 GiB); memory and disk sizes keep bhyve's bare-number-is-MiB rule; units work as before."""
    path = write(tmp_path, """\
        name: s
        attach:
          - disk: {id: d, size: 64, serial: S1, regions: [{offset: 4096, length: 8192, block: 4K}]}
          - serial: {id: data, port: com2}
          - nic: {id: n, mac: '52:54:00:00:00:02'}
        steps:
          - uart_check: {serial: data, bytes: 65536}
          - uart_check: {serial: data, bytes: 64KiB}
          - net_check: {nic: n, bytes: 8M}
        """, "s.yaml")
    scenario = load_scenario(path)
    disk = scenario.attach[0]
    assert disk.size == 64 << 20
    assert (disk.regions[0].offset, disk.regions[0].length, disk.regions[0].block) == \
        (4096, 8192, 4096)
    assert [s.args["bytes"] for s in scenario.steps] == [65536, 65536, 8 << 20]
    guest = load_guest(write(tmp_path, GOOD_GUEST.format(sha=SHA).replace("256M", "512")))
    assert guest.memory == 512 << 20


def test_repository_byte_counts_mean_what_they_meant():
    by_name = {s.name: s for s in load_scenarios()}
    uart, = [s for s in by_name["uart"].steps if s.kind == "uart_check"]
    assert uart.args["bytes"] == 64 << 10
    net, = [s for s in by_name["virtio-net"].steps if s.kind == "net_check"]
    assert net.args["bytes"] == 8 << 20
    assert by_name["virtio-blk"].attach[0].size == 64 << 20
    assert load_guests(["refguest"])[0].memory == 512 << 20


def test_a_repository_guest_named_by_path_is_that_guest(tmp_path):
    from harness.paths import GUESTS_DIR

    path = GUESTS_DIR / "linux/refguest.yaml"
    link = tmp_path / "link.yaml"
    link.symlink_to(path)
    chosen = load_guests([str(path), "refguest", str(link), str(path)])
    assert [g.name for g in chosen] == ["refguest"]


def test_a_value_with_a_final_newline_never_reaches_a_guest_command():
    from harness.errors import InfraError
    from harness.families import family

    linux = family("linux")
    assert "/sys/class/block/vdb/size" in linux.device_command("disk_size", name="vdb")
    with pytest.raises(InfraError, match=r"refusing to put 'vdb\\n' into a guest command"):
        linux.device_command("disk_size", name="vdb\n")


def test_a_step_may_choose_its_channel_and_only_console_or_ssh(tmp_path):
    good = write(tmp_path, "name: s\nrequires: [ssh]\nsteps:\n  - login\n"
                           "  - run: {command: {linux: id}, channel: ssh}\n", "s.yaml")
    step = load_scenario(good).steps[1]
    assert step.args["channel"] == "ssh" and step.args["command"]["linux"] == "id"
    bad = write(tmp_path, "name: t\nsteps:\n  - login\n"
                          "  - run: {command: {linux: id}, channel: telnet}\n", "t.yaml")
    with pytest.raises(ConfigError, match=r"t\.yaml:4: steps\[1\]: run\.channel: must be one "
                                          r"of console, ssh, got 'telnet'"):
        load_scenario(bad)
