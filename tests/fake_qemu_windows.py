#!/usr/bin/env python3
"""TEST DOUBLE standing in for qemu-system-x86_64 running an installed Windows Server 2022 with
EMS on COM1 (never for real use). It lets a Windows guest file, the SAC driver
(harness/guestos/sac.py) and the boot scenario run through the harness's real QEMU backend:
argv, QMP, the COM1 FIFOs, exit reasons.

What it plays, with SAC's own strings (sacmsg.mc as in ReactOS' sdk/include/reactos/mc/
sacmsg.mc; the order propolis PHD and vagrant-zones drive them in; shared/guest-facts.md 2.3):
OVMF's ``BdsDxe: loading/starting Boot0004 "Windows Boot Manager"`` lines (UEFI only),
``Computer is booting, SAC started and initialized.`` and its two help lines, the ``SAC>``
prompt without a newline, ``EVENT: The CMD command is now available.`` some time later (a
``cmd`` before it gets SAC's "has not yet registered" error), ``cmd`` -> "The Command Prompt
session was successfully launched." + ``EVENT:   A new channel has been created.  Use "ch -?"
for channel help.`` + ``Channel: Cmd0001``, ``ch -sn Cmd0001`` -> the channel's Name /
Description / Type / GUIDs and "Use any other key to view this channel.", then ``Username:``,
``Domain  :``, ``Password:`` (not echoed) and cmd.exe's banner and ``C:\\Windows\\system32>``.
Input lines end with CR. cmd.exe here: the first line after the login is swallowed (propolis:
"the first prompt eats the command"); ``%ERRORLEVEL%`` is expanded when the whole line is
parsed, before any command of it has run; ``^`` escapes the next character; ``&`` separates
commands; ``prompt`` sets the prompt ($P$G); unknown commands get cmd.exe's "is not recognized"
and 9009; ``shutdown /s /t 0`` returns, and a second later QEMU reports a guest shutdown.
``powershell -NoProfile -Command "..."`` runs the family's device scripts through the stand-ins
of tests/fake_windows_powershell.py on the disks, NIC and COM2 of this double's QEMU argv (a
script it does not know fails loudly with exit status 1); ``mode COM2 ...`` prints the port's
status (COM2 exists when QEMU was given one); ``rem`` does nothing; ``shutdown /r /t 0``
resets the machine a second later (QMP's RESET, then the firmware and SAC again, a new boot
time), or ends QEMU under ``-no-reboot`` as QEMU does.

Switches (environment): ``FAKE_WINDOWS_PASSWORD`` the administrator password it accepts;
``FAKE_WINDOWS_FRESH=1`` SAC starts twice (the reboot after specialize) before the CMD event;
``FAKE_WINDOWS_SLOW_CMD=1`` the first ``cmd`` after the event still fails "not yet registered";
``FAKE_WINDOWS_SWALLOW=0`` the first line after the login is not swallowed (the driver's
probe waits 5 s for a swallowed line: tests of other things save that per login);
``FAKE_WINDOWS_REBOOT_AFTER`` seconds cmd.exe still answers after ``shutdown /r /t 0`` (1);
``FAKE_WINDOWS_BUGCHECK=1`` the first ``ver`` bugchecks: EMS's in-band ``<INSTANCE
CLASSNAME="BLUESCREEN">`` record (the element is documented; its STOPCODE property layout here
is from memory, UNVERIFIED), then nothing. ``FAKE_WINDOWS_LOG``: what it was asked, as JSON
lines (the password only as right/wrong). UNVERIFIED and so not played: what SAC prints on a
failed login beyond "unable to authenticate" (the phrase one harness matches).
"""
from __future__ import annotations

import json
import os
import re
import select
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fake_windows_powershell as powershell  # noqa: E402  (the device scripts' stand-ins)
from fake_qemu_freebsd import (  # noqa: E402  (QMP, argv, pidfile)
    Qmp, listen_unix, option, options, start)

FIRMWARE = ('BdsDxe: loading Boot0004 "Windows Boot Manager" from HD(1,GPT,5A1C6C2E-1D9B-4E3F-'
            '9A7B-0C3D2E1F4A5B,0x800,0x32000)/\\EFI\\Microsoft\\Boot\\bootmgfw.efi\r\n'
            'BdsDxe: starting Boot0004 "Windows Boot Manager" from HD(1,GPT,5A1C6C2E-1D9B-4E3F-'
            '9A7B-0C3D2E1F4A5B,0x800,0x32000)/\\EFI\\Microsoft\\Boot\\bootmgfw.efi\r\n')
SAC_INIT = ("\r\nComputer is booting, SAC started and initialized.\r\n\r\n"
            "Use the \"ch -?\" command for information about using channels.\r\n"
            "Use the \"?\" command for general help.\r\n\r\n\r\nSAC>")
CMD_EVENT = "\r\nEVENT: The CMD command is now available.\r\nSAC>"
NOT_REGISTERED = (
    "Error: Unable to launch a Command Prompt.  The service responsible for launching\r\n"
    "       Command Prompt channels has not yet registered.  This may be because the\r\n"
    "       service is not yet started, is disabled by the administrator, is\r\n"
    "       malfunctioning or is unresponsive.\r\n\r\nSAC>")
LAUNCHED = ("The Command Prompt session was successfully launched.\r\nSAC>\r\n"
            "EVENT:   A new channel has been created.  Use \"ch -?\" for channel help.\r\n"
            "Channel: Cmd0001\r\nSAC>")
CHANNEL = ("Name:                  Cmd0001\r\nDescription:           Command Prompt\r\n"
           "Type:                  VT-UTF8\r\n"
           "Channel GUID:          3c1a2b4d-8e9f-11ef-a1b2-00155d010203\r\n"
           "Application Type GUID: 63d02271-8aa4-11d5-bccf-00b0d014a2d0\r\n\r\n"
           "Press <esc><tab> for next channel.\r\n"
           "Press <esc><tab>0 to return to the SAC channel.\r\n"
           "Use any other key to view this channel.\r\n\r\n")
BANNER = ("\r\n\r\nMicrosoft Windows [Version 10.0.20348.587]\r\n"
          "(c) Microsoft Corporation. All rights reserved.\r\n\r\n")
BLUESCREEN = ("\r\n<?xml version=\"1.0\"?>\r\n<BP>\r\n<INSTANCE CLASSNAME=\"BLUESCREEN\">\r\n"
              "<PROPERTY NAME=\"STOPCODE\" TYPE=\"string\"><VALUE>\"0xD1\"</VALUE></PROPERTY>"
              "<PROPERTY NAME=\"BUGCHECKPARAM1\" TYPE=\"string\"><VALUE>\"0x0\"</VALUE>"
              "</PROPERTY>\r\n</INSTANCE>\r\n</BP>\r\n!SAC>")
CMD_DELAY = 0.8  # seconds from SAC's start to the CMD event
# seconds from `shutdown /r /t 0` to the reset (cmd.exe answers meanwhile; 0: it does not)
REBOOT_AFTER = float(os.environ.get("FAKE_WINDOWS_REBOOT_AFTER", "1.0"))
HOSTNAME = "WIN-REFVM2022"
NOT_FOUND = ("'{name}' is not recognized as an internal or external command,\r\n"
             "operable program or batch file.\r\n")
POWERSHELL = re.compile(r'powershell -NoProfile -Command "([^"]*)"')
# mode.com's status of a COM port after setting it (layout from memory: UNVERIFIED).
MODE_STATUS = ("\r\nStatus for device {port}:\r\n-----------------------\r\n"
               "    Baud:            {baud}\r\n    Parity:          None\r\n"
               "    Data Bits:       8\r\n    Stop Bits:       1\r\n    Timeout:         OFF\r\n"
               "    XON/XOFF:        OFF\r\n    CTS handshaking: OFF\r\n"
               "    DSR handshaking: OFF\r\n    DSR sensitivity: OFF\r\n"
               "    DTR circuit:     ON\r\n    RTS circuit:     OFF\r\n\r\n")


class Windows:
    def __init__(self, base: str, uefi: bool, qmp: Qmp, argv=()):
        self.machine = powershell.Machine.from_argv(list(argv), options, listen_unix)
        self.out = os.open(base + ".out", os.O_RDWR)  # as QEMU's pipe chardev opens them
        self.inp = os.open(base + ".in", os.O_RDWR)
        self.uefi, self.qmp = uefi, qmp
        self.password = os.environ.get("FAKE_WINDOWS_PASSWORD", "")
        self.slow_cmd = bool(os.environ.get("FAKE_WINDOWS_SLOW_CMD"))
        self.bugcheck = bool(os.environ.get("FAKE_WINDOWS_BUGCHECK"))
        self.log = os.environ.get("FAKE_WINDOWS_LOG")
        self.lock = threading.Lock()
        self.errorlevel = 0
        self.prompt_template = "$P$G"
        self.reboot_at = None  # when a `shutdown /r /t 0` takes effect

    def note(self, **what) -> None:
        if self.log:
            with open(self.log, "a") as f:
                f.write(json.dumps(what) + "\n")

    def say(self, text: str) -> None:
        with self.lock:
            for i in range(0, len(text), 16):  # a UART under TCG: small writes
                os.write(self.out, text[i:i + 16].encode())

    def key(self, timeout: float | None = None) -> bytes | None:
        if timeout is not None and not select.select([self.inp], [], [], timeout)[0]:
            return None
        return os.read(self.inp, 1)

    def readline(self, echo: bool = True, until: float | None = None) -> str | None:
        """One line up to CR (an LF is ignored); None when ``until`` passes first."""
        line = b""
        while True:
            ch = self.key(None if until is None else max(until - time.monotonic(), 0))
            if ch is None:
                return None
            if ch == b"\n":
                continue
            if ch == b"\r":
                if echo:
                    self.say("\r\n")
                return line.decode(errors="replace")
            line += ch
            if echo:
                self.say(ch.decode(errors="replace"))

    # SAC ------------------------------------------------------------------------------------
    def boot(self, argv: list[str]) -> None:
        """Windows until it powers off; ``shutdown /r`` resets the machine (QMP's RESET) and
        boots again, or ends QEMU under -no-reboot, as QEMU does."""
        while True:
            try:
                self.run()
                return
            except Reboot:
                if "-no-reboot" in argv:
                    self.qmp.event("SHUTDOWN", {"guest": True, "reason": "guest-reset"})
                    time.sleep(0.2)
                    os._exit(0)
                self.qmp.event("RESET", {"guest": True, "reason": "guest-reset"})
                self.note(reboot=True)
                self.machine.booted = time.time()
                self.errorlevel, self.prompt_template, self.reboot_at = 0, "$P$G", None

    def run(self) -> None:
        if self.uefi:
            self.say(FIRMWARE)
        if os.environ.pop("FAKE_WINDOWS_FRESH", None):
            self.say(SAC_INIT)  # the first boot after setup: specialize reboots it
            time.sleep(0.3)
            self.note(sac="reboot after specialize")
            if self.uefi:
                self.say("\r\n" + FIRMWARE)
        self.say(SAC_INIT)
        available_at, announced = time.monotonic() + CMD_DELAY, False
        while True:
            line = self.readline(until=None if announced else available_at)
            if line is None:  # the cmd service registered
                self.say(CMD_EVENT)
                announced = True
                continue
            self.note(sac=line)
            if line == "cmd" and (not announced or self.slow_cmd):
                self.slow_cmd = self.slow_cmd and not announced
                self.say(NOT_REGISTERED)
            elif line == "cmd":
                self.say(LAUNCHED)
            elif line == "ch -sn Cmd0001":
                self.say(CHANNEL)
                self.key()  # "any other key"
                self.channel()
                return
            elif line == "":
                self.say("SAC>")
            else:
                self.say("Unrecognized command.  Try the 'help' command for more details."
                         "\r\nSAC>")

    def channel(self) -> None:
        while True:
            self.say("\x1b[2J\x1b[0;0HUsername: ")  # a header line before it: UNVERIFIED, not played
            user = self.readline()
            self.say("Domain  : ")
            domain = self.readline()
            self.say("Password: ")
            password = self.readline(echo=False)
            right = user == "Administrator" and password == self.password
            self.note(user=user, domain=domain, password_ok=right)
            if right:
                break
            self.say("\r\nUnable to authenticate.\r\n\r\n")
        self.say(BANNER)
        self.cmd()

    # cmd.exe ------------------------------------------------------------------------------------
    def prompt(self) -> str:
        return self.prompt_template.replace("$P", "C:\\Windows\\system32").replace("$G", ">")

    def cmd(self) -> None:
        if os.environ.get("FAKE_WINDOWS_SWALLOW", "1") == "1":
            self.say(self.prompt())
            swallowed = self.readline()  # the first line after the login never reaches cmd.exe
            self.note(swallowed=swallowed)
        while True:
            self.say(self.prompt())
            line = self.readline(until=self.reboot_at)
            if line is None:  # shutdown /r took effect: cmd.exe is gone mid-line
                raise Reboot()
            self.note(cmd=line)
            # %VAR% is expanded once, for the whole line, before any command of it runs.
            line = line.replace("%ERRORLEVEL%", str(self.errorlevel)).replace(
                "%COMPUTERNAME%", HOSTNAME)
            for command in split_ampersands(line):
                self.command(unescape(command))
            self.say("\r\n")

    def command(self, command: str) -> None:
        word = command.split(" ", 1)[0].lower()
        if word == "echo":
            self.say(command[5:] + "\r\n")
            self.errorlevel = 0
        elif word == "ver":
            if self.bugcheck:
                self.say(BLUESCREEN)
                while True:
                    time.sleep(3600)
            self.say("\r\nMicrosoft Windows [Version 10.0.20348.587]\r\n")
            self.errorlevel = 0
        elif word == "hostname":
            self.say(HOSTNAME + "\r\n")
            self.errorlevel = 0
        elif word == "prompt":
            self.prompt_template = command[7:] or "$P$G"
        elif re.fullmatch(r"cmd /c exit (\d+)", command):
            self.errorlevel = int(command.rsplit(" ", 1)[1])
        elif word == "powershell" and "PEFirmwareType" in command:
            self.say(("UEFI" if self.uefi else "BIOS") + "\r\n")
            self.errorlevel = 0
        elif word == "powershell":
            self.powershell(command)
        elif word == "mode":
            self.mode(command.split()[1:])
        elif word == "rem":
            pass
        elif command == "shutdown /s /t 0":
            self.errorlevel = 0
            threading.Thread(target=self.power_off, daemon=True).start()
        elif command == "shutdown /r /t 0":
            self.errorlevel = 0
            self.reboot_at = time.monotonic() + REBOOT_AFTER
        else:
            self.say(NOT_FOUND.format(name=word))
            self.errorlevel = 9009

    def powershell(self, command: str) -> None:
        """The device scripts, played by tests/fake_windows_powershell.py on real data."""
        match = POWERSHELL.fullmatch(command)
        if match is None:
            name, status = "unknown", 1
            lines = [f"fake_qemu_windows: NO STAND-IN for {command[:120]!r}"]
        else:
            name, lines, status = powershell.run(match.group(1), self.machine)
        self.note(powershell=name, status=status)
        self.say("".join(line + "\r\n" for line in lines))
        self.errorlevel = status

    def mode(self, args: list[str]) -> None:
        """``mode COMn BAUD=b ...``: COM2 exists only when QEMU was given one."""
        port = args[0].upper() if args else ""
        settings = dict(a.upper().split("=", 1) for a in args[1:] if "=" in a)
        if port != "COM2" or self.machine.com2 is None:
            self.say(f"\r\nIllegal device name - {port}\r\n")
            self.errorlevel = 1
            return
        self.say(MODE_STATUS.format(port=port, baud=settings.get("BAUD", "1200")))
        self.errorlevel = 0

    def power_off(self) -> None:
        time.sleep(1.0)
        self.qmp.event("SHUTDOWN", {"guest": True, "reason": "guest-shutdown"})
        time.sleep(0.2)
        os._exit(0)


class Installing(Windows):
    """``FAKE_WINDOWS_INSTALL=ok``: the installer's VM (an empty system disk first, the
    ISO and the answer disc as CD-ROMs, COM2 a socket QEMU listens on): OVMF's boot attempts,
    the ISO's "Press any key to boot from CD or DVD" (about 5 s; a key boots Setup, none
    gives OVMF's failure), Setup (silent on the serial line: EMS is off until specialize),
    SAC after specialize and again after the reboot, then the first logon writes the
    marker it finds in the answer file to COM2 and powers off. ``=nokey``: the prompt
    waits 1 s only, too short for anyone (the failure path). What it saw is logged."""

    def __init__(self, base, uefi, qmp, argv):
        super().__init__(base, uefi, qmp, ())
        self.argv = argv
        self.com2 = listen_unix(option(argv, "-chardev", "socket,id=com2,").split("path=", 1)[1]
                                .split(",")[0])

    def cds(self) -> list[str]:
        drives = {a.split("id=")[1].split(",")[0]: a.split("file=")[1].split(",")[0]
                  for a in self.argv if a.startswith("file=")}
        return [drives[a.split("drive=")[1].split(",")[0]] for a in self.argv
                if a.startswith("ide-cd,")]

    def run(self) -> None:
        cds = self.cds()
        answer = open(cds[1], "rb").read()
        marker = re.search(rb"REFVM-INSTALL-DONE-[0-9a-f]{12}", answer)
        self.note(no_reboot="-no-reboot" in self.argv, cds=len(cds),
                  joliet_autounattend="autounattend.xml".encode("utf-16-be") in answer,
                  ems=b"bcdedit /emssettings EMSPORT:1 EMSBAUDRATE:115200" in answer)
        self.say('BdsDxe: failed to start Boot0001 "UEFI QEMU HARDDISK QM00001 " from '
                 'PciRoot(0x0)/Pci(0x1F,0x2)/Sata(0x0,0xFFFF,0x0): Not Found\r\n'
                 'BdsDxe: loading Boot0002 "UEFI QEMU DVD-ROM QM00003 " from '
                 'PciRoot(0x0)/Pci(0x1F,0x2)/Sata(0x1,0xFFFF,0x0)\r\n'
                 'BdsDxe: starting Boot0002 "UEFI QEMU DVD-ROM QM00003 " from '
                 'PciRoot(0x0)/Pci(0x1F,0x2)/Sata(0x1,0xFFFF,0x0)\r\n'
                 "Press any key to boot from CD or DVD......")
        wait = 1.0 if os.environ.get("FAKE_WINDOWS_INSTALL") == "nokey" else 5.0
        key = self.key(wait) if wait > 1.0 else (time.sleep(wait) or None)
        self.note(cd_key=key.decode() if key else None)
        if key is None:
            self.say('\r\nBdsDxe: failed to start Boot0002 "UEFI QEMU DVD-ROM QM00003 " from '
                     "PciRoot(0x0)/Pci(0x1F,0x2)/Sata(0x1,0xFFFF,0x0): Time out\r\n"
                     "BdsDxe: No bootable option or device was found.\r\n"
                     "BdsDxe: Press any key to enter the Boot Manager Menu.\r\n")
            while True:
                time.sleep(3600)
        time.sleep(0.5)  # Setup copies files: nothing on the serial line
        self.say('\r\nBdsDxe: starting Boot0004 "Windows Boot Manager" from HD(1,GPT)\r\n')
        self.say(SAC_INIT)  # after specialize
        time.sleep(0.3)
        self.say('\r\nBdsDxe: starting Boot0004 "Windows Boot Manager" from HD(1,GPT)\r\n')
        self.say(SAC_INIT)  # the reboot into OOBE and the first logon
        conn, _ = self.com2.accept()
        conn.sendall(marker.group(0) + b"\r\n")
        time.sleep(0.3)
        self.power_off()


class Reboot(Exception):
    """``shutdown /r /t 0`` took effect: the machine resets."""


def split_ampersands(line: str) -> list[str]:
    """cmd.exe's ``a& b`` -> [a, b]: ``&`` outside double quotes and not escaped by ``^``."""
    parts, current, quoted, escaped = [], "", False, False
    for ch in line:
        if escaped:
            current += ch
            escaped = False
            continue
        if ch == "^" and not quoted:
            current += ch
            escaped = True
            continue
        if ch == '"':
            quoted = not quoted
        if ch == "&" and not quoted:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip(" ") if i else p.rstrip(" ") for i, p in enumerate(parts) if p.strip()]


def unescape(command: str) -> str:
    """cmd.exe drops a ``^`` outside double quotes and keeps the character after it."""
    out, quoted, escaped = "", False, False
    for ch in command:
        if escaped:
            out += ch
            escaped = False
        elif ch == "^" and not quoted:
            escaped = True
        else:
            quoted ^= ch == '"'
            out += ch
    return out


VARS_SIZE = 540672  # OVMF_VARS_4M.fd: the template the harness copies for each VM


def refuse_wrong_vars(argv: list[str]) -> None:
    """QEMU will not start with a vars flash of another size than the firmware's (the words
    here are the double's own, marked as such)."""
    path = powershell.vars_file(argv, options)
    if path and os.path.getsize(path) != VARS_SIZE:
        sys.stderr.write(f"qemu-system-x86_64: -drive if=pflash,unit=1,file={path}: (refvm test "
                         f"double) the vars flash holds {os.path.getsize(path)} bytes, the "
                         f"firmware needs {VARS_SIZE} bytes\n")
        sys.exit(1)


def main() -> None:
    argv = sys.argv[1:]
    if argv != ["--version"]:
        refuse_wrong_vars(argv)
    kind = Installing if os.environ.get("FAKE_WINDOWS_INSTALL") else Windows
    guest = start(argv, lambda base, uefi, qmp: kind(base, uefi, qmp, argv),
                  "fake_qemu_windows.py")
    if guest is not None:
        guest.boot(argv) if kind is Windows else guest.run()


if __name__ == "__main__":
    main()
