"""``autounattend.xml`` for a Windows guest file: everything Windows Setup would ask, answered.

Written from the answer files rgl/windows-vagrant, dockur/windows, avocado-vt and Linode's
StackScript use against the same ISOs (shared/guest-facts.md 2.2), element by element:

- windowsPE: languages; virtio-win driver folders (viostor, vioscsi, NetKVM for the guest's
  Windows) when the guest has the virtio-win disc; the disk wiped and laid out for the
  firmware (UEFI: EFI 100 MB FAT32, MSR 16 MB, Windows on the rest; BIOS: a 500 MB active
  "System Reserved" NTFS partition, Windows on the rest); the image chosen by /IMAGE/NAME or
  /IMAGE/INDEX; the EULA accepted; no product key (evaluation media need none); Dynamic Update
  off, so Setup never reaches for the network;
- specialize: EMS on COM1 at 115200 (``bcdedit /emssettings EMSPORT:1 EMSBAUDRATE:115200``,
  ``/ems {default} on``, boot manager EMS on), Server Manager not opened at logon;
- oobeSystem: the administrator password, no OOBE screens, one automatic logon whose
  first-logon commands set COM2 to 115200 8N1, write the completion marker to it and shut
  down: the host waits for that marker and for the hypervisor's exit.

Passwords are written as Setup's own encoding (base64 of UTF-16LE password + field name,
``PlainText`` false), not in plain text. That is an obfuscation, not encryption: the answer
disc is private to the install and removed after it.
"""
from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from dataclasses import dataclass

NS = "urn:schemas-microsoft-com:unattend"
WCM = "http://schemas.microsoft.com/WMIConfig/2002/State"
ARCH = "amd64"
EMS_PORT, EMS_BAUD = 1, 115200
VIRTIO_DRIVERS = ("viostor", "vioscsi", "NetKVM")
DONE_MARKER = "REFVM-INSTALL-DONE"

ET.register_namespace("", NS)
ET.register_namespace("wcm", WCM)


@dataclass(frozen=True)
class AnswerFile:
    """What the answer file is made from (harness.model.Guest gives it: answer_for)."""

    firmware: str  # uefi | csm
    image_name: str | None
    image_index: int | None
    user: str
    password: str
    driver_os: str
    driver_drive: str | None  # the answer disc's letter, where its drivers are; None: none
    marker: str  # written to COM2 when the first logon has run


def answer_for(guest, marker: str, driver_drive: str | None = None) -> AnswerFile:
    win = guest.windows
    return AnswerFile(firmware=guest.firmware[0], image_name=win.image_name,
                      image_index=win.image_index, user=guest.console.user,
                      password=guest.console.password, driver_os=win.driver_os,
                      driver_drive=driver_drive if win.virtio_win else None, marker=marker)


def encoded_password(password: str, field: str) -> str:
    """Setup's encoding of a password (PlainText false): base64 of UTF-16LE password+field."""
    return base64.b64encode((password + field).encode("utf-16-le")).decode("ascii")


def bcdedit_commands() -> list[str]:
    """EMS on COM1 for the installed system and its boot manager."""
    return [f"cmd /c bcdedit /emssettings EMSPORT:{EMS_PORT} EMSBAUDRATE:{EMS_BAUD}",
            "cmd /c bcdedit /ems {default} on",
            "cmd /c bcdedit /set {bootmgr} bootems yes"]


def first_logon_commands(marker: str) -> list[str]:
    """COM2 set up, the marker written to it, power off."""
    return ["cmd /c mode COM2 BAUD=115200 PARITY=n DATA=8 STOP=1",
            f"cmd /c echo {marker}> COM2",
            "shutdown /s /t 0 /f"]


def partitions(firmware: str) -> tuple[list[dict], int]:
    """(the partitions to create, in order, each {type, size MB|extend, format, label,
    letter, active}; the partition Windows goes to)."""
    if firmware == "uefi":
        return ([{"type": "EFI", "size": 100, "format": "FAT32", "label": "System"},
                 {"type": "MSR", "size": 16},
                 {"type": "Primary", "extend": True, "format": "NTFS", "label": "Windows",
                  "letter": "C"}], 3)
    return ([{"type": "Primary", "size": 500, "format": "NTFS", "label": "System Reserved",
              "active": True},
             {"type": "Primary", "extend": True, "format": "NTFS", "label": "Windows",
              "letter": "C"}], 2)


def _el(parent, tag: str, text=None, **attrs):
    element = ET.SubElement(parent, f"{{{NS}}}{tag}",
                            {(f"{{{WCM}}}{k[4:]}" if k.startswith("wcm_") else k): v
                             for k, v in attrs.items()})
    if text is not None:
        element.text = "true" if text is True else "false" if text is False else str(text)
    return element


def _component(settings, name: str):
    return _el(settings, "component", name=name, processorArchitecture=ARCH,
               publicKeyToken="31bf3856ad364e35", language="neutral", versionScope="nonSxS")


def _international(settings, winpe: bool) -> None:
    name = "Microsoft-Windows-International-Core" + ("-WinPE" if winpe else "")
    comp = _component(settings, name)
    if winpe:
        _el(_el(comp, "SetupUILanguage"), "UILanguage", "en-US")
    for tag, value in (("InputLocale", "0409:00000409"), ("SystemLocale", "en-US"),
                       ("UILanguage", "en-US"), ("UserLocale", "en-US")):
        _el(comp, tag, value)


def _windows_pe(root, answer: AnswerFile) -> None:
    settings = _el(root, "settings", **{"pass": "windowsPE"})
    _international(settings, winpe=True)
    if answer.driver_drive:
        paths = _el(_component(settings, "Microsoft-Windows-PnpCustomizationsWinPE"),
                    "DriverPaths")
        for key, driver in enumerate(VIRTIO_DRIVERS, 1):
            item = _el(paths, "PathAndCredentials", wcm_action="add", wcm_keyValue=str(key))
            _el(item, "Path", f"{answer.driver_drive}:\\{driver}\\{answer.driver_os}\\{ARCH}")
    setup = _component(settings, "Microsoft-Windows-Setup")
    disks = _el(setup, "DiskConfiguration")
    _el(disks, "WillShowUI", "OnError")
    disk = _el(disks, "Disk", wcm_action="add")
    _el(disk, "DiskID", 0)
    _el(disk, "WillWipeDisk", True)
    create, modify = _el(disk, "CreatePartitions"), _el(disk, "ModifyPartitions")
    layout, windows_partition = partitions(answer.firmware)
    for order, part in enumerate(layout, 1):
        made = _el(create, "CreatePartition", wcm_action="add")
        _el(made, "Order", order)
        _el(made, "Type", part["type"])
        if part.get("extend"):
            _el(made, "Extend", True)
        else:
            _el(made, "Size", part["size"])
        changed = _el(modify, "ModifyPartition", wcm_action="add")
        _el(changed, "Order", order)
        _el(changed, "PartitionID", order)
        for key, tag in (("format", "Format"), ("label", "Label"), ("letter", "Letter"),
                         ("active", "Active")):
            if key in part:
                _el(changed, tag, part[key])
    image = _el(_el(setup, "ImageInstall"), "OSImage")
    meta = _el(_el(image, "InstallFrom"), "MetaData", wcm_action="add")
    if answer.image_name:
        _el(meta, "Key", "/IMAGE/NAME")
        _el(meta, "Value", answer.image_name)
    else:
        _el(meta, "Key", "/IMAGE/INDEX")
        _el(meta, "Value", answer.image_index)
    target = _el(image, "InstallTo")
    _el(target, "DiskID", 0)
    _el(target, "PartitionID", windows_partition)
    _el(image, "WillShowUI", "OnError")
    _el(image, "InstallToAvailablePartition", False)
    user = _el(setup, "UserData")
    _el(user, "AcceptEula", True)  # no ProductKey: evaluation media need none
    _el(user, "FullName", "refvm")
    _el(user, "Organization", "refvm")
    update = _el(setup, "DynamicUpdate")
    _el(update, "Enable", False)
    _el(update, "WillShowUI", "Never")


def _specialize(root) -> None:
    settings = _el(root, "settings", **{"pass": "specialize"})
    commands = _el(_component(settings, "Microsoft-Windows-Deployment"), "RunSynchronous")
    for order, line in enumerate(bcdedit_commands(), 1):
        command = _el(commands, "RunSynchronousCommand", wcm_action="add")
        _el(command, "Order", order)
        _el(command, "Path", line)
    _el(_component(settings, "Microsoft-Windows-ServerManager-SvrMgrNc"),
        "DoNotOpenServerManagerAtLogon", True)


def _password(parent, tag: str, answer: AnswerFile, field: str) -> None:
    holder = _el(parent, tag)
    _el(holder, "Value", encoded_password(answer.password, field))
    _el(holder, "PlainText", False)


def _oobe_system(root, answer: AnswerFile) -> None:
    settings = _el(root, "settings", **{"pass": "oobeSystem"})
    _international(settings, winpe=False)
    shell = _component(settings, "Microsoft-Windows-Shell-Setup")
    _password(_el(shell, "UserAccounts"), "AdministratorPassword", answer,
              "AdministratorPassword")
    logon = _el(shell, "AutoLogon")
    _el(logon, "Username", answer.user)
    _el(logon, "Enabled", True)
    _el(logon, "LogonCount", 1)
    _password(logon, "Password", answer, "Password")
    oobe = _el(shell, "OOBE")
    for tag in ("HideEULAPage", "HideLocalAccountScreen", "HideOEMRegistrationScreen",
                "HideOnlineAccountScreens", "HideWirelessSetupInOOBE", "SkipUserOOBE",
                "SkipMachineOOBE"):
        _el(oobe, tag, True)
    _el(oobe, "ProtectYourPC", 3)
    commands = _el(shell, "FirstLogonCommands")
    for order, line in enumerate(first_logon_commands(answer.marker), 1):
        command = _el(commands, "SynchronousCommand", wcm_action="add")
        _el(command, "Order", order)
        _el(command, "CommandLine", line)


def autounattend_xml(answer: AnswerFile) -> bytes:
    """The answer file, UTF-8 with its XML declaration."""
    root = ET.Element(f"{{{NS}}}unattend")
    _windows_pe(root, answer)
    _specialize(root)
    _oobe_system(root, answer)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
