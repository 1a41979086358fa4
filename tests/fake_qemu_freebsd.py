#!/usr/bin/env python3
"""TEST DOUBLE standing in for qemu-system-x86_64 running a FreeBSD BASIC-CI guest (never for
real use). It lets the FreeBSD guest files, the Unix-shell driver and the boot scenario run
through the harness's real QEMU backend: argv, QMP, the COM1 FIFOs, exit reasons.

What it plays, from real FreeBSD serial transcripts (shared/guest-facts.md 1.3-1.4: loader
lines, getty's banner ``FreeBSD/amd64 (freebsd) (ttyu0)``, root without a password, motd,
``resizewin -z``'s ``ESC[999;999H ESC[6n`` query that waits ~2 s for an answer, the prompt
``root@freebsd:~ #``, ``shutdown -p now`` ending with ``Uptime:``): a QMP server on the
``-qmp`` socket (greeting, qmp_capabilities, cont, a SHUTDOWN event), the guest's console on
the ``-chardev pipe`` FIFOs once ``cont`` arrives, and a shell that answers the commands the
boot scenario and the driver type. The shell is sh (14.x) or csh (13.x, ``FAKE_FREEBSD_SHELL=
csh``): csh reads ``$?name`` as "is name set", knows ``${status}``, says "Command not found.".
``FAKE_FREEBSD_LOADER=menu`` plays a plain image's loader menu (``Autoboot in 9 seconds``)
that must be stopped to put the console on the serial port; ``FAKE_FREEBSD_PANIC=1`` panics
after login. It writes what it was asked to ``FAKE_FREEBSD_LOG`` (JSON lines) when set.
"""
from __future__ import annotations

import json
import os
import re
import socket
import sys
import threading
import time

RELEASE = os.environ.get("FAKE_FREEBSD_RELEASE", "14.3")
BANNER = "\r\nFreeBSD/amd64 (freebsd) (ttyu0)\r\n\r\nlogin: "
MOTD = (f"FreeBSD {RELEASE}-RELEASE releng/{RELEASE}-n271432-8c9ce319fef7 GENERIC\r\n\r\n"
        "Welcome to FreeBSD!\r\n\r\nRelease Notes, Errata: https://www.FreeBSD.org/releases/\r\n")
BOOT = ("Consoles: EFI console  \r\n"
        "    Reading loader env vars from /efi/freebsd/loader.env\r\n"
        "FreeBSD/amd64 EFI loader, Revision 1.1\r\n\r\n"
        "   Command line arguments: loader.efi\r\n"
        "Loading /boot/defaults/loader.conf\r\n"
        "/boot/kernel/kernel text=0x1a2b3c data=0x1d4e0 syms=[0x8+0x1a0b8]\r\n"
        "---<<BOOT>>---\r\n"
        "Copyright (c) 1992-2025 The FreeBSD Project.\r\n"
        f"FreeBSD {RELEASE}-RELEASE releng/{RELEASE}-n271432-8c9ce319fef7 GENERIC amd64\r\n"
        "CPU: QEMU Virtual CPU version 2.5+ (2112.01-MHz K8-class CPU)\r\n"
        "vtbd0: 5120MB (10485760 512 byte sectors)\r\n"
        "Trying to mount root from ufs:/dev/gpt/rootfs [rw]...\r\n"
        "Growing root partition to fill device\r\n"
        "Starting sshd.\r\n"
        f"\r\n{time.strftime('%a %b %d %H:%M:%S UTC %Y')}\r\n")
MENU = ("\x1b[H\x1b[J  ______               ____   _____ _____  \r\n"
        " 1. Boot Multi user [Enter]\r\n 2. Boot Single user\r\n 3. Escape to loader prompt\r\n"
        "\rAutoboot in 9 seconds, hit [Enter] to boot or any other key to stop ")


def option(argv, flag, key):
    """The value of ``key=`` in the option after ``flag`` (e.g. -qmp unix:PATH,server=on)."""
    for i, arg in enumerate(argv[:-1]):
        if arg == flag and argv[i + 1].startswith(key):
            return argv[i + 1]
    return None


class Guest:
    def __init__(self, base: str, uefi: bool, qmp: "Qmp"):
        self.out = os.open(base + ".out", os.O_RDWR)  # as QEMU's pipe chardev opens them
        self.inp = os.open(base + ".in", os.O_RDWR)
        self.uefi, self.qmp = uefi, qmp
        self.shell = os.environ.get("FAKE_FREEBSD_SHELL", "sh")
        self.status = 0
        self.log = os.environ.get("FAKE_FREEBSD_LOG")

    def note(self, **what) -> None:
        if self.log:
            with open(self.log, "a") as f:
                f.write(json.dumps(what) + "\n")

    def say(self, text: str) -> None:
        for i in range(0, len(text), 16):  # a UART under TCG: small writes
            os.write(self.out, text[i:i + 16].encode())

    def readline(self, echo: bool = True) -> str | None:
        line = b""
        while True:
            ch = os.read(self.inp, 1)
            if ch in (b"\r", b"\n"):
                if echo:
                    self.say("\r\n")
                return line.decode(errors="replace")
            line += ch
            if echo and ch != b"\x1b":
                self.say(ch.decode(errors="replace"))

    def read_until(self, end: bytes, timeout: float) -> str | None:
        import select
        data, deadline = b"", time.monotonic() + timeout
        while not data.endswith(end):
            if not select.select([self.inp], [], [], max(deadline - time.monotonic(), 0))[0]:
                return None
            data += os.read(self.inp, 1)
        return data.decode(errors="replace")

    def run(self) -> None:
        if os.environ.get("FAKE_FREEBSD_LOADER") == "menu":
            self.loader_menu()
        self.say(BOOT)
        while True:
            self.say(BANNER)
            user = self.readline()
            if user == "root":
                break
        self.say(MOTD)
        self.say("\x1b[999;999H\x1b[6n")  # resizewin -z from .profile / .login
        started = time.monotonic()
        answer = self.read_until(b"R", timeout=2.0)  # a terminal answers ESC[row;colR
        self.note(resizewin_answer=answer, answered_after=round(time.monotonic() - started, 3))
        if os.environ.get("FAKE_FREEBSD_PANIC"):
            self.say("\r\npanic: vm_fault_lookup: fault on nofault entry, addr: 0xfffffe00deadc000\r\n"
                     "cpuid = 1\r\ntime = 1764645000\r\nKDB: stack backtrace:\r\n"
                     "#0 0xffffffff80b9f3ad at kdb_backtrace+0x5d\r\nUptime: 13s\r\n"
                     "Automatic reboot in 15 seconds - press a key on the console to abort\r\n")
        self.shell_loop()

    def loader_menu(self) -> None:
        self.say(MENU)
        key = os.read(self.inp, 1)
        self.note(loader_key=key.decode())
        self.say("\r\nExiting menu!\r\nType '?' for a list of commands, 'help' for more "
                 "detailed help.\r\nOK ")
        console = "vidconsole"
        while True:
            line = self.readline()
            self.note(loader=line)
            if line == "set console=comconsole":
                console = "comconsole"
            elif line == "boot" and console == "comconsole":
                return
            elif line == "boot":  # output would go to the screen: the serial line stays silent
                while True:
                    time.sleep(3600)
            self.say("OK ")

    def prompt(self) -> str:
        return "root@freebsd:~ # " if self.shell in ("sh", "csh") else "# "

    def shell_loop(self) -> None:
        while True:
            self.say(self.prompt())
            line = self.readline()
            if line is None:
                return
            self.note(shell=self.shell, line=line)
            if line.strip() == "exec /bin/sh":
                self.shell = "posix"
                continue
            for command in split_commands(line):
                self.command(command)

    def expand(self, text: str) -> str:
        text = text.replace("''", "")
        shell = "/bin/csh" if self.shell == "csh" else "/bin/sh"
        text = text.replace("${SHELL}", shell)
        if self.shell == "csh":
            text = text.replace("${status}", str(self.status))
            text = re.sub(r"\$\?[A-Za-z_]+", "0", text)  # "$?name": is name set? (it is not)
        else:
            text = text.replace("$?", str(self.status))
        return text

    def command(self, command: str) -> None:
        outputs = {"uname -s": "FreeBSD", "kenv -q kernelname": "/boot/kernel/kernel",
                   "sysctl -n machdep.bootmethod": "UEFI" if self.uefi else "BIOS",
                   "stty -echo": "", "id -u": "0"}
        if command.startswith("echo "):
            self.say(self.expand(command[5:]) + "\r\n")
            self.status = 0
        elif command in outputs:
            self.say(outputs[command] + ("\r\n" if outputs[command] else ""))
            self.status = 0
        elif command == "sh -c 'exit 3'":
            self.status = 3
        elif command == "shutdown -p now":
            self.say("Shutdown NOW!\r\nshutdown: [pid 812]\r\n\r\nSystem shutdown time has "
                     "arrived\r\nStopping sshd.\r\nWaiting (max 60 seconds) for system process "
                     "`vnlru' to stop... done\r\nAll buffers synced.\r\nUptime: 1m12s\r\n")
            self.qmp.event("SHUTDOWN", {"guest": True, "reason": "guest-shutdown"})
            time.sleep(0.2)
            os._exit(0)
        elif self.shell == "csh":
            self.say(f"{command.split()[0]}: Command not found.\r\n")
            self.status = 1
        else:
            self.say(f"sh: {command.split()[0]}: not found\r\n")
            self.status = 127


def split_commands(line: str) -> list[str]:
    """``a; b 'c; d'; e`` -> [a, b 'c; d', e]: the framing's ``;`` outside single quotes."""
    parts, current, quoted = [], "", False
    for ch in line:
        if ch == "'":
            quoted = not quoted
        if ch == ";" and not quoted:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return [p for p in parts if p]


class Qmp:
    def __init__(self, path: str):
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(1)
        self.conn = None
        self.lock = threading.Lock()
        self.cont = threading.Event()

    def serve(self) -> None:
        self.conn, _ = self.server.accept()
        self.send({"QMP": {"version": {"qemu": {"major": 0, "minor": 0, "micro": 0}},
                           "capabilities": []}})
        for line in self.conn.makefile("rb"):
            command = json.loads(line).get("execute")
            self.send({"return": {}})
            if command == "cont":
                self.cont.set()
            elif command == "quit":
                os._exit(0)

    def send(self, message: dict) -> None:
        with self.lock:
            self.conn.sendall(json.dumps(message).encode() + b"\n")

    def event(self, name: str, data: dict) -> None:
        self.send({"event": name, "data": data, "timestamp": {"seconds": int(time.time()),
                                                              "microseconds": 0}})


def start(argv: list[str], make_guest, name: str):
    """What both QEMU doubles do before their guest runs: answer ``--version`` (None then),
    write the pidfile, serve QMP on the ``-qmp`` socket, and return the guest made by
    ``make_guest(COM1 FIFO base path, uefi, qmp)`` once QMP's ``cont`` has arrived."""
    if argv == ["--version"]:
        print(f"QEMU emulator version 0.0.0 (refvm test double: tests/{name})")
        return None
    qmp_path = option(argv, "-qmp", "unix:")[len("unix:"):].split(",")[0]
    chardev = option(argv, "-chardev", "pipe,id=com1,")
    base = chardev.split("path=", 1)[1].split(",")[0]
    pidfile = argv[argv.index("-pidfile") + 1]
    with open(pidfile, "w") as f:
        f.write(f"{os.getpid()}\n")
    qmp = Qmp(qmp_path)
    guest = make_guest(base, any(a.startswith("if=pflash") for a in argv), qmp)
    threading.Thread(target=qmp.serve, daemon=True).start()
    qmp.cont.wait()
    return guest


def main() -> None:
    guest = start(sys.argv[1:], Guest, "fake_qemu_freebsd.py")
    if guest is not None:
        guest.run()


if __name__ == "__main__":
    main()
