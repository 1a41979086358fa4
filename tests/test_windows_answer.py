"""The unattended install's answer file and answer disc.

The answer file is parsed back and checked element by element (passes, EMS commands, the
partition layout per firmware, the image choice, no product key, no plaintext password); the
answer disc is written by pycdlib and read back by xorriso, a reader independent of it, with
drivers copied out of a virtio-win stand-in that xorriso made."""
from __future__ import annotations

import base64
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from harness.images.windows.answer import AnswerFile, answer_for, autounattend_xml
from harness.images.windows.disc import driver_files, write_answer_disc
from harness.catalog import load_guests

N = {"u": "urn:schemas-microsoft-com:unattend"}
PASSWORD = "Adm1n-pw-5e1b7"


def answer(firmware="uefi", **changes) -> AnswerFile:
    values = dict(firmware=firmware, image_name="Windows Server 2022 SERVERSTANDARD",
                  image_index=None, user="Administrator", password=PASSWORD, driver_os="2k22",
                  driver_drive=None, marker="REFVM-INSTALL-DONE-0123abcd")
    values.update(changes)
    return AnswerFile(**values)


def parsed(xml: bytes):
    return ET.fromstring(xml)


def component(root, pass_name: str, name: str):
    settings, = [s for s in root.findall("u:settings", N) if s.get("pass") == pass_name]
    found, = [c for c in settings.findall("u:component", N) if c.get("name") == name]
    return found


def texts(element, path: str) -> list[str]:
    return [e.text for e in element.findall(path, N)]


def test_the_answer_file_has_the_three_passes_and_ems_on_com1_at_115200():
    root = parsed(autounattend_xml(answer()))
    assert [s.get("pass") for s in root.findall("u:settings", N)] == \
        ["windowsPE", "specialize", "oobeSystem"]
    deploy = component(root, "specialize", "Microsoft-Windows-Deployment")
    assert texts(deploy, ".//u:RunSynchronousCommand/u:Path") == [
        "cmd /c bcdedit /emssettings EMSPORT:1 EMSBAUDRATE:115200",
        "cmd /c bcdedit /ems {default} on", "cmd /c bcdedit /set {bootmgr} bootems yes"]
    assert texts(deploy, ".//u:RunSynchronousCommand/u:Order") == ["1", "2", "3"]
    setup = component(root, "windowsPE", "Microsoft-Windows-Setup")
    assert texts(setup, "u:UserData/u:AcceptEula") == ["true"]
    assert setup.find(".//u:ProductKey", N) is None  # evaluation media: no key
    assert texts(setup, "u:DynamicUpdate/u:Enable") == ["false"]
    assert texts(setup, ".//u:InstallFrom/u:MetaData/u:Key") == ["/IMAGE/NAME"]
    assert texts(setup, ".//u:InstallFrom/u:MetaData/u:Value") == [
        "Windows Server 2022 SERVERSTANDARD"]
    by_index = parsed(autounattend_xml(answer(image_name=None, image_index=2)))
    assert texts(component(by_index, "windowsPE", "Microsoft-Windows-Setup"),
                 ".//u:InstallFrom/u:MetaData/u:Value") == ["2"]


@pytest.mark.parametrize("firmware, layout, windows_at", [
    ("uefi", [("EFI", "100", "FAT32"), ("MSR", "16", None), ("Primary", None, "NTFS")], "3"),
    ("csm", [("Primary", "500", "NTFS"), ("Primary", None, "NTFS")], "2"),
])
def test_the_disk_layout_follows_the_firmware(firmware, layout, windows_at):
    setup = component(parsed(autounattend_xml(answer(firmware))), "windowsPE",
                      "Microsoft-Windows-Setup")
    disk = setup.find("u:DiskConfiguration/u:Disk", N)
    assert texts(disk, "u:WillWipeDisk") == ["true"]
    made = disk.findall("u:CreatePartitions/u:CreatePartition", N)
    changed = disk.findall("u:ModifyPartitions/u:ModifyPartition", N)
    seen = [(c.findtext("u:Type", None, N), c.findtext("u:Size", None, N),
             m.findtext("u:Format", None, N)) for c, m in zip(made, changed)]
    assert seen == layout
    assert made[-1].findtext("u:Extend", None, N) == "true"
    assert changed[-1].findtext("u:Letter", None, N) == "C"
    assert texts(setup, ".//u:InstallTo/u:PartitionID") == [windows_at]
    if firmware == "csm":
        assert changed[0].findtext("u:Active", None, N) == "true"


def test_the_first_logon_writes_the_marker_to_com2_and_shuts_down_without_oobe():
    root = parsed(autounattend_xml(answer()))
    shell = component(root, "oobeSystem", "Microsoft-Windows-Shell-Setup")
    assert texts(shell, ".//u:SynchronousCommand/u:CommandLine") == [
        "cmd /c mode COM2 BAUD=115200 PARITY=n DATA=8 STOP=1",
        "cmd /c echo REFVM-INSTALL-DONE-0123abcd> COM2", "shutdown /s /t 0 /f"]
    assert texts(shell, "u:AutoLogon/u:Username") == ["Administrator"]
    assert texts(shell, "u:AutoLogon/u:LogonCount") == ["1"]
    assert set(texts(shell, "u:OOBE/*")) == {"true", "3"}
    assert texts(shell, "u:OOBE/u:SkipMachineOOBE") == ["true"]


def test_no_plaintext_password_only_setups_encoding_of_it():
    xml = autounattend_xml(answer())
    assert PASSWORD.encode() not in xml
    shell = component(parsed(xml), "oobeSystem", "Microsoft-Windows-Shell-Setup")
    admin = shell.find("u:UserAccounts/u:AdministratorPassword", N)
    assert admin.findtext("u:PlainText", None, N) == "false"
    assert base64.b64decode(admin.findtext("u:Value", None, N)).decode("utf-16-le") == \
        PASSWORD + "AdministratorPassword"
    logon = shell.find("u:AutoLogon/u:Password", N)
    assert base64.b64decode(logon.findtext("u:Value", None, N)).decode("utf-16-le") == \
        PASSWORD + "Password"


def test_driver_paths_only_with_the_virtio_win_disc():
    assert b"PnpCustomizationsWinPE" not in autounattend_xml(answer())
    root = parsed(autounattend_xml(answer(driver_drive="E")))
    pnp = component(root, "windowsPE", "Microsoft-Windows-PnpCustomizationsWinPE")
    assert texts(pnp, ".//u:PathAndCredentials/u:Path") == [
        "E:\\viostor\\2k22\\amd64", "E:\\vioscsi\\2k22\\amd64", "E:\\NetKVM\\2k22\\amd64"]


def test_the_repository_guest_gives_its_image_and_the_virtio_win_driver_paths(monkeypatch):
    monkeypatch.delenv("REFVM_WINDOWS_PASSWORD", raising=False)
    guest, = load_guests(["windows-server-2022-eval"])
    made = answer_for(guest, "REFVM-INSTALL-DONE-x", driver_drive="E")
    assert made.firmware == "uefi" and made.driver_drive == "E"  # the virtio-win disc
    assert made.image_name == "Windows Server 2022 SERVERSTANDARD"


needs_xorriso = pytest.mark.skipif(shutil.which("xorriso") is None,
                                   reason="xorriso (the independent ISO reader) is not installed")


def xorriso_ls(iso) -> list[str]:
    out = subprocess.run(["xorriso", "-indev", str(iso), "-find", "/", "-type", "f"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return sorted(line.strip().strip("'") for line in out.splitlines() if line.strip())


def xorriso_extract(iso, inside: str, out) -> bytes:
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", inside,
                    str(out)], capture_output=True, timeout=60, check=True)
    return out.read_bytes()


@needs_xorriso
def test_the_answer_disc_is_read_back_by_xorriso(tmp_path):
    """xorriso reads the Joliet tree pycdlib wrote: the answer file at the root, byte for
    byte, and the drivers copied out of a virtio-win stand-in (made by xorriso itself)."""
    tree = tmp_path / "virtio"
    for driver in ("viostor", "vioscsi", "NetKVM", "Balloon"):
        for os_dir in ("2k22", "2k19"):
            folder = tree / driver / os_dir / "amd64"
            folder.mkdir(parents=True)
            (folder / f"{driver.lower()}.inf").write_text(f"; {driver} for {os_dir}\n")
            (folder / f"{driver.lower()}.sys").write_bytes(bytes(range(256)) * 8)
    virtio = tmp_path / "virtio-win.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-J", "-R", "-V", "virtio-win", "-o",
                    str(virtio), str(tree)], capture_output=True, timeout=60, check=True)
    drivers = driver_files(virtio, "2k22")
    assert sorted(drivers) == sorted(f"/{d}/2k22/amd64/{d.lower()}.{x}"
                                     for d in ("viostor", "vioscsi", "NetKVM")
                                     for x in ("inf", "sys"))
    xml = autounattend_xml(answer(driver_drive="E"))
    disc = tmp_path / "answers.iso"
    write_answer_disc(disc, xml, drivers)
    listed = xorriso_ls(disc)
    assert "/autounattend.xml" in listed
    assert "/NetKVM/2k22/amd64/netkvm.sys" in listed and not any("Balloon" in p or "2k19" in p
                                                                  for p in listed)
    assert xorriso_extract(disc, "/autounattend.xml", tmp_path / "out.xml") == xml
    assert xorriso_extract(disc, "/viostor/2k22/amd64/viostor.sys", tmp_path / "v.sys") == \
        bytes(range(256)) * 8
    assert PASSWORD.encode() not in disc.read_bytes()
