"""The QEMU commands `refvm repro` and `refvm run --keep-failed` print to start the same VM by
hand: they must run in sh after refvm has gone, so nothing in them may point into the run's
workdir (removed with the VM), and the VM must be the harness's: same machine, devices and
firmware, the vars file copied from the same template, the boot disk an overlay over the same
cached image. The real boot of these lines is tests/test_repro_e2e.py (marked vm)."""
from __future__ import annotations

import shlex
from pathlib import Path

from harness import repro
from harness.backends.qemu.by_hand import fresh_directory
from harness.vmspec import SEED_DISC, Disk, Nic, SerialPort, VmSpec
from tests.test_qemu_backend import backend, firmware_files  # noqa: F401 (fixture)

HARNESS_ONLY = {"-S": 0, "-qmp": 1, "-pidfile": 1}  # option: how many values follow it


def scenario_spec(tmp_path, firmware="uefi") -> VmSpec:
    """A VM with all a scenario can give it: an ephemeral boot disk over a cached image, a
    scratch disk and a seed disc in its workdir, a NIC, a data port."""
    work, logs = tmp_path / "refvm-abc" / "1", tmp_path / "artifacts" / "case"
    work.mkdir(parents=True)
    logs.mkdir(parents=True)
    (work / "scratch.raw").write_bytes(b"\0" * 12345)
    (work / SEED_DISC).write_bytes(b"seed disc bytes")
    return VmSpec(name="refvm-abc-1", memory_mib=512, cpus=2, firmware=firmware,
                  uuid="00000000-0000-4000-8000-000000000001", utc_clock=True,
                  workdir=work, logdir=logs,
                  disks=(Disk(tmp_path / "cache" / "guest.raw", ephemeral=True, boot=True),
                         Disk(work / "scratch.raw", bus="nvme", serial="S1"),
                         Disk(work / SEED_DISC, bus="ahci-cd", readonly=True)),
                  nics=(Nic(mac="52:54:00:00:00:07", ssh_forward=True),),
                  serials=(SerialPort("com1"), SerialPort("com2", "data")))


def without_harness_options(argv: list[str], workdir: Path) -> list[str]:
    """The harness's QEMU argv as a person's should read: its own options (paused start,
    QMP, pidfile, COM1 on FIFOs) out, workdir paths relative."""
    out, skip = [], 0
    for arg in argv:
        if skip:
            skip -= 1
        elif arg in HARNESS_ONLY:
            skip = HARNESS_ONLY[arg]
        else:
            out.append(arg.replace(f"{workdir}/", ""))
    com1 = out.index("pipe,id=com1,path=com1")
    return out[:com1] + ["stdio,id=com1,mux=on,signal=off", "-mon", "chardev=com1"] \
        + out[com1 + 1:]


def test_the_lines_make_their_own_directory_and_never_name_the_workdir(tmp_path,
                                                                      firmware_files):  # noqa: F811
    qemu, spec = backend(firmware_files), scenario_spec(tmp_path)
    lines = repro.by_hand(qemu, spec)
    commands = [line for line in lines if not line.startswith("#")]
    assert commands[0] == ('cd "$(mktemp -d "${TMPDIR:-/tmp}/by-hand-refvm-abc-1.XXXXXX")" '
                           '&& pwd')
    assert not [line for line in lines if str(spec.workdir) in line]
    argvs = [shlex.split(line) for line in commands[1:]]
    template = firmware_files[0].candidates[0].vars_template
    image = tmp_path / "cache" / "guest.raw"
    assert argvs[:-1] == [
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image),
         "overlay-0.qcow2"],
        ["cp", str(template), "uefi-vars.fd"], ["chmod", "600", "uefi-vars.fd"],
        ["qemu-img", "create", "-q", "-f", "raw", "scratch.raw", "12345"],
        ["cp", str(spec.logdir / SEED_DISC), SEED_DISC]]
    assert (spec.logdir / SEED_DISC).read_bytes() == b"seed disc bytes"  # outlives the workdir
    harness_argv = qemu.argv(spec)
    assert "-S" in harness_argv  # what the person's line leaves out, the harness's has
    assert argvs[-1] == without_harness_options(harness_argv, spec.workdir)
    notes = [line for line in lines if line.startswith("#")]
    assert any("Ctrl-a x quits QEMU" in note for note in notes)
    assert any("com2.sock" in note for note in notes)


def test_csm_lines_copy_no_vars(tmp_path, firmware_files):  # noqa: F811
    qemu, spec = backend(firmware_files), scenario_spec(tmp_path, firmware="csm")
    lines = repro.by_hand(qemu, spec)
    assert not [line for line in lines if line.startswith(("cp ", "chmod "))
                and "uefi-vars" in line]
    assert lines[4].startswith("qemu-system-x86_64 ") and "-bios" in shlex.split(lines[4])


def test_a_vm_name_that_is_no_file_name_is_not_put_into_the_shell_line():
    # The directory is named after refvm's VM name, or a neutral one.
    assert fresh_directory('x"; rm -rf /; "') == \
        'cd "$(mktemp -d "${TMPDIR:-/tmp}/by-hand-vm.XXXXXX")" && pwd'
