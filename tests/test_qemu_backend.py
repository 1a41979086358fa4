"""QEMU command lines, firmware files and the accelerator probe."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness import firmware as fw
from harness.backends.qemu.backend import QemuBackend
from harness.backends.qemu.accel import choose
from harness.errors import InfraError
from harness.vmspec import Disk, Nic, SerialPort, VmSpec


@pytest.fixture
def firmware_files(tmp_path):
    code, vars_template, bios = tmp_path / "CODE.fd", tmp_path / "VARS.fd", tmp_path / "bios.bin"
    code.write_bytes(b"c" * 4096)
    vars_template.write_bytes(b"v" * 1024)
    bios.write_bytes(b"b" * 512)
    return (fw.FirmwareCandidates("OVMF", "apt-get install ovmf", (fw.UefiPair(code, vars_template),)),
            fw.FirmwareCandidates("SeaBIOS", "apt-get install seabios", (bios,)))


def backend(firmware_files) -> QemuBackend:
    ovmf, seabios = firmware_files
    return QemuBackend(accel="tcg", ovmf=ovmf, seabios=seabios)


def spec(tmp_path, firmware="uefi", **extra) -> VmSpec:
    fields = dict(name="refvm-abc-1", memory_mib=512, cpus=2, firmware=firmware,
                  uuid="00000000-0000-4000-8000-000000000001", utc_clock=True,
                  workdir=tmp_path / "w", logdir=tmp_path / "logs",
                  disks=(Disk(Path("/img/guest.raw"), readonly=True, boot=True),))
    return VmSpec(**{**fields, **extra})


def test_uefi_command_line_is_exact(tmp_path, firmware_files):
    argv = backend(firmware_files).argv(spec(tmp_path))
    w = tmp_path / "w"
    assert argv == [
        "qemu-system-x86_64", "-name", "guest=refvm-abc-1,debug-threads=on",
        "-uuid", "00000000-0000-4000-8000-000000000001", "-machine", "q35", "-accel", "tcg",
        "-cpu", "max", "-smp", "2", "-m", "512M",
        "-nodefaults", "-no-user-config", "-display", "none", "-rtc", "base=utc",
        "-no-reboot", "-S", "-qmp", f"unix:{w}/qmp.sock,server=on,wait=off",
        "-pidfile", f"{w}/qemu.pid",
        # TCG's "Triple fault" line: what tells a triple fault from a reboot
        "-d", "cpu_reset", "-D", f"{w}/qemu-cpu-reset.log",
        # UEFI: the CODE image read-only, and this VM's own VARS copy writable.
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={tmp_path}/CODE.fd",
        "-drive", f"if=pflash,format=raw,unit=1,file={w}/uefi-vars.fd",
        "-chardev", f"pipe,id=com1,path={w}/com1",  # FIFOs com1.in, com1.out: see fifo.py
        "-serial", "chardev:com1",
        "-drive", "file=/img/guest.raw,format=raw,if=none,id=disk0,readonly=on",
        "-device", "virtio-blk-pci,drive=disk0,bootindex=0",
    ]


def test_csm_uses_seabios_and_no_pflash(tmp_path, firmware_files):
    argv = backend(firmware_files).argv(spec(tmp_path, "csm"))
    assert argv[argv.index("-bios") + 1] == str(tmp_path / "bios.bin")
    assert not any("pflash" in a for a in argv)


def test_devices_serials_and_local_time(tmp_path, firmware_files):
    vm = spec(tmp_path, utc_clock=False, nics=(Nic(mac="52:54:00:12:34:56"),),
              serials=(SerialPort("com1"), SerialPort("com2", "data")))
    vm = VmSpec(**{**vm.__dict__, "disks": vm.disks + (
        Disk(Path("/s/nvme.raw"), bus="nvme", serial="SN42", sector_size=4096),)})
    argv = backend(firmware_files).argv(vm)
    joined = " ".join(argv)
    assert "-rtc base=localtime" in joined
    assert "-serial chardev:com1" in joined and "-serial chardev:com2" in joined
    assert argv.index("chardev:com1") < argv.index("chardev:com2")  # COM1 first: it is ttyS0
    # the console comes through FIFOs (cheap to read in a flood), a data port through a socket
    assert f"pipe,id=com1,path={vm.workdir / 'com1'}" in argv
    assert any(a.startswith("socket,id=com2,path=") and a.endswith(",server=on,wait=off")
               for a in argv)
    assert "nvme,drive=disk1,serial=SN42,logical_block_size=4096,physical_block_size=4096" in argv
    assert "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56" in argv


def test_bhyveload_is_not_a_qemu_firmware(tmp_path, firmware_files):
    qemu = backend(firmware_files)
    assert "no bhyveload firmware" in qemu.unsupported("bhyveload")
    with pytest.raises(InfraError, match="cannot boot firmware 'bhyveload'"):
        qemu.argv(spec(tmp_path, "bhyveload"))


def test_missing_firmware_names_the_package(tmp_path):
    missing = fw.FirmwareCandidates("OVMF", "apt-get install ovmf",
                                    (fw.UefiPair(tmp_path / "no-code", tmp_path / "no-vars"),))
    with pytest.raises(InfraError, match="OVMF not found .*install it with: apt-get install ovmf"):
        missing.find()


def test_vars_copy_is_private_and_a_wrong_size_is_refused(tmp_path):
    template = tmp_path / "VARS.fd"
    template.write_bytes(b"\0" * 1024)
    copy = fw.make_vars_copy(template, tmp_path / "vm" / "vars.fd")
    assert copy.read_bytes() == template.read_bytes() and copy != template
    copy.write_bytes(b"\0" * 1000)
    with pytest.raises(InfraError, match="is 1000 bytes but the firmware's template .* is 1024"):
        fw.check_vars_file(copy, template)


def test_auto_falls_back_to_tcg_and_says_why(tmp_path, monkeypatch):
    import harness.backends.qemu.accel as accel
    monkeypatch.setattr(accel, "probe", lambda *a, **k: (False, "kvm probe failed: hangs"))
    monkeypatch.setattr(accel.os, "access", lambda *a: True)
    image = tmp_path / "guest.raw"
    choice = choose("qemu-system-x86_64", "auto", tmp_path, image)
    assert choice.name == "tcg" and "hangs" in choice.reason
    with pytest.raises(InfraError, match="KVM was requested but is not usable"):
        choose("qemu-system-x86_64", "kvm", tmp_path, image)  # verdict cached per host boot


def test_auto_without_a_probe_image_uses_tcg_and_says_why(monkeypatch):
    import harness.backends.qemu.accel as accel
    monkeypatch.setattr(accel.os, "access", lambda *a: True)
    choice = choose("qemu-system-x86_64", "auto", None, None)
    assert choice.name == "tcg" and "no reference guest image to probe with" in choice.reason


def test_a_nic_marked_for_ssh_forwards_a_loopback_port_the_host_picks(tmp_path, firmware_files):
    from harness.vmspec import Nic

    argv = backend(firmware_files).argv(spec(tmp_path, nics=(
        Nic(mac="52:54:00:00:00:01", ssh_forward=True), Nic(mac="52:54:00:00:00:02"))))
    netdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-netdev"]
    assert netdevs == ["user,id=net0,hostfwd=tcp:127.0.0.1:0-:22", "user,id=net1"]
