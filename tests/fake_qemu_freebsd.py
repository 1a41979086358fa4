#!/usr/bin/env python3
"""TEST DOUBLE standing in for qemu-system-x86_64 running a FreeBSD BASIC-CI guest (never for
real use). It lets the FreeBSD guest files, the Unix-shell driver and the scenarios run through
the harness's real QEMU backend: argv, QMP, the COM1 FIFOs, COM2's socket, exit reasons.

What it plays, from real FreeBSD serial transcripts (shared/guest-facts.md 1.3-1.4: loader
lines, getty's banner ``FreeBSD/amd64 (freebsd) (ttyu0)``, root without a password, motd,
``resizewin -z``'s ``ESC[999;999H ESC[6n`` query that waits ~2 s for an answer, ``shutdown -p
now`` ending with ``Uptime:``): a QMP server on the ``-qmp`` socket (greeting,
qmp_capabilities, cont, a SHUTDOWN event), the guest's console on the ``-chardev pipe`` FIFOs
once ``cont`` arrives. After the login it hands the console to a *real* shell on a pty: dash
as FreeBSD's sh (14.x), tcsh as 13.x's csh (``FAKE_FREEBSD_SHELL=csh``), or bash, with
root's prompt ``root@freebsd:~ #``, in a private mount and PID namespace whose /dev holds the
argv's disks under FreeBSD's names and COM2 as /dev/cuau1, and whose FreeBSD tools are the
stand-ins of tests/fake_freebsd_userland.py (read its docstring for what they are and are not).
So the family's commands are parsed and run by a real shell, and their data really moves
through the scratch images, COM2's socket and TCP.

``FAKE_FREEBSD_LOADER=menu`` plays a plain image's loader menu (``Autoboot in 9 seconds``)
that must be stopped to put the console on the serial port; ``FAKE_FREEBSD_PANIC=1`` panics
after login; ``FAKE_FREEBSD_NVME=nda`` names NVMe disks ndaN (CAM) instead of nvdN;
``FAKE_FREEBSD_NODHCP=1`` plays an image whose rc.conf leases no address at boot.

The machine, as far as a double can honestly play it: the vCPUs and topology of ``-smp`` (the
kernel's ``FreeBSD/SMP`` lines in the boot messages and /var/run/dmesg.boot), the RTC of
``-rtc base=`` (its offset from UTC fixed at start, as QEMU does), a boot time per boot.
``shutdown -r now`` ends the shell's namespace and, as QEMU without ``-no-reboot`` does, sends
QMP's RESET and boots again: the firmware, the boot messages, the login, a new namespace and
shell (with ``-no-reboot``: SHUTDOWN with reason guest-reset, and exit). Under UEFI it plays
the firmware's side of the variables: at each boot it reads QEMU's pflash vars file with
virt-firmware, gives a fresh store a boot entry (Boot0001) and BootOrder, obeys and deletes
BootNext (BootCurrent is then that entry), and writes the non-volatile variables the guest sets
back into the vars file; a vars file of the wrong size is refused with QEMU's own message.
Not played: save and restore (no double can carry a running shell and its processes into a
new process), and a device queue (its disks are host files in the page cache). It writes
what it was typed and answered to ``FAKE_FREEBSD_LOG`` (JSON lines) when set. Linux only; it
needs unshare(1) and the right to mount in a new namespace (root, or user namespaces).
"""
from __future__ import annotations

import ctypes
import fcntl
import json
import os
import queue
import socket
import subprocess
import sys
import termios
import threading
import time
import tty

USERLAND = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_freebsd_userland.py")
RELEASE = os.environ.get("FAKE_FREEBSD_RELEASE", "14.3")
BANNER = "\r\nFreeBSD/amd64 (freebsd) (ttyu0)\r\n\r\nlogin: "
MOTD = (f"FreeBSD {RELEASE}-RELEASE releng/{RELEASE}-n271432-8c9ce319fef7 GENERIC\r\n\r\n"
        "Welcome to FreeBSD!\r\n\r\nRelease Notes, Errata: https://www.FreeBSD.org/releases/\r\n")
GLOBAL_GUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"  # EFI_GLOBAL_VARIABLE


def loader_text() -> str:
    return ("Consoles: EFI console  \r\n"
            "    Reading loader env vars from /efi/freebsd/loader.env\r\n"
            "FreeBSD/amd64 EFI loader, Revision 1.1\r\n\r\n"
            "   Command line arguments: loader.efi\r\n"
            "Loading /boot/defaults/loader.conf\r\n"
            "/boot/kernel/kernel text=0x1a2b3c data=0x1d4e0 syms=[0x8+0x1a0b8]\r\n")


def kernel_text(cpu: dict) -> str:
    """The kernel's boot messages (what dmesg(8) and /var/run/dmesg.boot hold): with more
    than one CPU, cpu_mp_announce()'s lines (sys/x86/x86/mp_x86.c: "%d package(s)", " x %d
    core(s)", " x %d hardware threads" when more than one)."""
    smp = ""
    if cpu["cpus"] > 1:
        threads = f" x {cpu['threads']} hardware threads" if cpu["threads"] > 1 else ""
        smp = (f"FreeBSD/SMP: Multiprocessor System Detected: {cpu['cpus']} CPUs\r\n"
               f"FreeBSD/SMP: {cpu['sockets']} package(s) x {cpu['cores']} core(s){threads}\r\n")
    return ("---<<BOOT>>---\r\n"
            "Copyright (c) 1992-2025 The FreeBSD Project.\r\n"
            f"FreeBSD {RELEASE}-RELEASE releng/{RELEASE}-n271432-8c9ce319fef7 GENERIC amd64\r\n"
            "CPU: QEMU Virtual CPU version 2.5+ (2112.01-MHz K8-class CPU)\r\n"
            f"{smp}"
            "vtbd0: 5120MB (10485760 512 byte sectors)\r\n"
            "Trying to mount root from ufs:/dev/gpt/rootfs [rw]...\r\n")


def boot_tail() -> str:
    return ("Growing root partition to fill device\r\n"
            "Starting sshd.\r\n"
            f"\r\n{time.strftime('%a %b %d %H:%M:%S UTC %Y')}\r\n")


MENU = ("\x1b[H\x1b[J  ______               ____   _____ _____  \r\n"
        " 1. Boot Multi user [Enter]\r\n 2. Boot Single user\r\n 3. Escape to loader prompt\r\n"
        "\rAutoboot in 9 seconds, hit [Enter] to boot or any other key to stop ")


PROMPT = "root@freebsd:~ # "
SHUTDOWN_TAIL = ("\r\nSystem shutdown time has arrived\r\nStopping sshd.\r\nWaiting (max 60 "
                 "seconds) for system process `vnlru' to stop... done\r\nAll buffers synced.\r\n"
                 "Uptime: 1m12s\r\n")
REBOOT_TAIL = SHUTDOWN_TAIL + "Rebooting...\r\ncpu_reset: Stopping other CPUs\r\n"


def option(argv, flag, key):
    """The option after ``flag`` that starts with ``key`` (e.g. -qmp unix:PATH,server=on)."""
    for i, arg in enumerate(argv[:-1]):
        if arg == flag and argv[i + 1].startswith(key):
            return argv[i + 1]
    return None


def options(argv: list[str], flag: str) -> list[dict]:
    """Every ``flag`` option as a dict: ``-device nvme,drive=d1,serial=S`` -> {"": "nvme",
    "drive": "d1", "serial": "S"}."""
    found = []
    for i, arg in enumerate(argv[:-1]):
        if arg == flag:
            parts = argv[i + 1].split(",")
            found.append({"": parts[0], **dict(p.split("=", 1) for p in parts if "=" in p)})
    return found


def devices(argv: list[str], workdir: str) -> dict:
    """The VM's devices under FreeBSD's names, from the QEMU argv the harness built."""
    drives = {d["id"]: d for d in options(argv, "-drive") if d.get("if") == "none"}
    nvme_driver = os.environ.get("FAKE_FREEBSD_NVME", "nvd")
    disks, nics, vtbd, nvme = [], [], 0, 0
    qemu_version = "7.2.0"
    for dev in options(argv, "-device"):
        kind = dev[""]
        if kind in ("virtio-blk-pci", "nvme"):
            drive = drives[dev["drive"]]
            disk = {"file": drive["file"], "serial": dev.get("serial", ""),
                    "readonly": drive.get("readonly") == "on" or drive.get("snapshot") == "on",
                    "sector_size": int(dev.get("logical_block_size", 512))}
            if kind == "nvme":  # hw/nvme/ctrl.c: vendor 1b36 (Red Hat), subsystem 1af4
                disk.update(name=f"{nvme_driver}{nvme}", controller=f"nvme{nvme}",
                            model="QEMU NVMe Ctrl", vendor="1b36", subvendor="1af4",
                            firmware=qemu_version)
                nvme += 1
            else:
                disk["name"] = f"vtbd{vtbd}"
                vtbd += 1
            disks.append(disk)
        elif kind == "virtio-net-pci":
            # rc.conf's ifconfig_DEFAULT="DHCP" leased it at boot, unless played without
            nics.append({"name": f"vtnet{len(nics)}", "mac": dev["mac"], "prefix": 24,
                         "ipv4": None if os.environ.get("FAKE_FREEBSD_NODHCP") else "10.0.2.15"})
    vars_file = vars_path(argv)
    return {"disks": disks, "nics": nics, "nvme_driver": nvme_driver, "release": RELEASE,
            "bootmethod": "UEFI" if any(d.get("if") == "pflash" for d in options(argv, "-drive"))
            else "BIOS", "prompt": PROMPT, "control": os.path.join(workdir, "control"),
            "uarts": {}, "cpu": smp(argv), "rtc_offset": rtc_offset(argv),
            "efivars": os.path.join(workdir, "efivars.json") if vars_file else None}


def smp(argv: list[str]) -> dict:
    """-smp N or cpus=N,sockets=S,cores=C,threads=T; QEMU 6.2+ machines give a plain N as one
    socket of N cores."""
    value = option(argv, "-smp", "") or "1"
    if "=" not in value:
        return {"cpus": int(value), "sockets": 1, "cores": int(value), "threads": 1}
    shape = {k: int(v) for k, v in (p.split("=") for p in value.split(","))}
    return {"cpus": shape["cpus"], "sockets": shape.get("sockets", 1),
            "cores": shape.get("cores", shape["cpus"]), "threads": shape.get("threads", 1)}


def rtc_offset(argv: list[str]) -> int:
    """-rtc base=utc|localtime: the RTC's offset from UTC, fixed at start from this process's
    time zone (QEMU's localtime is its own process's)."""
    return time.localtime().tm_gmtoff if option(argv, "-rtc", "base=") == "base=localtime" else 0


def vars_path(argv: list[str]) -> str | None:
    """The UEFI vars file: QEMU's second pflash drive."""
    return next((d["file"] for d in options(argv, "-drive")
                 if d.get("if") == "pflash" and d.get("unit") == "1"), None)


def pflash_problem(argv: list[str]) -> str | None:
    """QEMU (hw/i386/pc_sysfw.c) refuses a flash image that is not whole 4 KiB sectors, before
    the guest runs; its words, as QEMU 7.2 prints them (the size rounded up to 512 bytes)."""
    path = vars_path(argv)
    size = os.path.getsize(path) if path else 4096
    if size and size % 4096 == 0:
        return None
    shown = -(-size // 512) * 512
    return (f"qemu-system-x86_64: system firmware block device pflash1 has invalid size {shown}\n"
            "qemu-system-x86_64: info: its size must be a non-zero multiple of 0x1000\n")


# The firmware's side of UEFI variables ---------------------------------------------------------
def read_store(path: str) -> dict:
    """{"GUID-Name": {"attr": A, "data": hex}} of an edk2 vars file (virt-firmware)."""
    from virt.firmware.varstore.edk2 import Edk2VarStore

    return {f"{str(v.guid).lower()}-{v.name}": {"attr": v.attr, "data": bytes(v.data).hex()}
            for v in Edk2VarStore(path).get_varlist().values()}


def write_store(path: str, variables: dict) -> None:
    """The non-volatile ones (attribute bit 0) into the vars file, as flash writes keep them."""
    from virt.firmware.efi import efivar
    from virt.firmware.varstore.edk2 import Edk2VarStore

    varlist = efivar.EfiVarList()
    for key, var in variables.items():
        if var["attr"] & 1:
            guid, name = key[:36], key[37:]
            varlist[name] = efivar.EfiVar(name, guid=guid, attr=var["attr"],
                                          data=bytes.fromhex(var["data"]))
    Edk2VarStore(path).write_varstore(path, varlist)


def load_option(description: str) -> str:
    """An EFI_LOAD_OPTION: active, a device path of the end node alone, the description."""
    path = bytes.fromhex("7fff0400")
    return (b"\x01\0\0\0" + len(path).to_bytes(2, "little")
            + (description + "\0").encode("utf-16-le") + path).hex()


def firmware_boot(path: str) -> dict:
    """What the firmware does with the store at a boot: a fresh one gets Boot0001 and
    BootOrder; BootNext, if set, is the entry booted, and deleted (UEFI 2.x 3.1.2); BootCurrent
    (volatile) names the entry booted. Returns every variable the OS sees."""
    variables = read_store(path)
    g = f"{GLOBAL_GUID}-"
    if g + "BootOrder" not in variables:
        variables[g + "Boot0001"] = {"attr": 7, "data": load_option("UEFI Misc Device")}
        variables[g + "BootOrder"] = {"attr": 7, "data": "0100"}
    following = variables.pop(g + "BootNext", None)
    current = following["data"] if following else variables[g + "BootOrder"]["data"][:4]
    write_store(path, variables)
    variables[g + "BootCurrent"] = {"attr": 6, "data": current}
    return variables


def in_child_be_killed_with_parent() -> None:
    """The shell's namespace dies with this process: unshare(1) gets SIGKILL when we die,
    and its --kill-child takes the namespace's PID 1 (and so all of it) down."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL


class Keyboard:
    """What the harness types on COM1, read by one thread: the getty and the loader take it
    byte by byte, a shell session as it comes; nothing typed is lost between boots."""

    def __init__(self, fd: int):
        self.chunks: queue.Queue = queue.Queue()
        self.pending = b""
        threading.Thread(target=self._read, args=(fd,), daemon=True).start()

    def _read(self, fd: int) -> None:
        while data := os.read(fd, 4096):
            self.chunks.put(data)

    def read(self, timeout: float | None = None) -> bytes:
        """What was typed (b"" after ``timeout`` seconds of nothing)."""
        if self.pending:
            data, self.pending = self.pending, b""
            return data
        try:
            return self.chunks.get(timeout=timeout)
        except queue.Empty:
            return b""

    def byte(self, timeout: float | None = None) -> bytes:
        data = self.read(timeout)
        self.pending = data[1:] + self.pending
        return data[:1]


class Guest:
    def __init__(self, base: str, state: dict, workdir: str, qmp: "Qmp", argv: list[str]):
        self.out = os.open(base + ".out", os.O_RDWR)  # as QEMU's pipe chardev opens them
        self.keys = Keyboard(os.open(base + ".in", os.O_RDWR))
        self.state, self.workdir, self.qmp = state, workdir, qmp
        self.vars_file = vars_path(argv)
        self.no_reboot = "-no-reboot" in argv
        self.log = os.environ.get("FAKE_FREEBSD_LOG")
        self.lock = threading.Lock()
        self.events: queue.Queue = queue.Queue()  # "poweroff", "reboot", "shell-gone"
        if os.path.exists(self.state["control"]):  # the same VM started again
            os.unlink(self.state["control"])
        os.mkfifo(self.state["control"])
        threading.Thread(target=self.control, daemon=True).start()

    def note(self, **what) -> None:
        if self.log:
            with open(self.log, "a") as f:
                f.write(json.dumps(what) + "\n")

    def say(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        with self.lock:
            for i in range(0, len(data), 16):  # a UART under TCG: small writes
                os.write(self.out, data[i:i + 16])

    def readline(self, echo: bool = True) -> str | None:
        line = b""
        while True:
            ch = self.keys.byte()
            if ch in (b"\r", b"\n"):
                if echo:
                    self.say("\r\n")
                return line.decode(errors="replace")
            line += ch
            if echo and ch != b"\x1b":
                self.say(ch.decode(errors="replace"))

    def read_until(self, end: bytes, timeout: float) -> str | None:
        data, deadline = b"", time.monotonic() + timeout
        while not data.endswith(end):
            ch = self.keys.byte(max(deadline - time.monotonic(), 0.001))
            if not ch:
                return None
            data += ch
        return data.decode(errors="replace")

    def run(self) -> None:
        boots = 0
        while True:
            boots += 1
            self.boot(boots)
            outcome = self.shell_session()
            if outcome == "poweroff":
                self.say(SHUTDOWN_TAIL)
                self.qmp.event("SHUTDOWN", {"guest": True, "reason": "guest-shutdown"})
                time.sleep(0.2)
                os._exit(0)
            if outcome != "reboot":
                os._exit(1)  # the shell died under the guest: QEMU's pipe would close
            self.say(REBOOT_TAIL)
            self.note(reboot=boots)
            if self.no_reboot:  # QEMU -no-reboot: a guest reset ends the process
                self.qmp.event("SHUTDOWN", {"guest": True, "reason": "guest-reset"})
                time.sleep(0.2)
                os._exit(0)
            self.qmp.event("RESET", {"guest": True, "reason": "guest-reset"})

    def boot(self, number: int) -> None:
        """The firmware, the loader, the kernel's messages, getty and the login."""
        self.state["boottime"] = time.time()
        if self.vars_file:
            with open(self.state["efivars"], "w") as f:
                json.dump(firmware_boot(self.vars_file), f)
        if os.environ.get("FAKE_FREEBSD_LOADER") == "menu":
            self.loader_menu()
        kernel = kernel_text(self.state["cpu"])
        self.state["msgbuf"] = kernel.replace("\r\n", "\n")
        self.say(loader_text() + kernel + boot_tail())
        while True:
            self.say(BANNER)
            user = self.readline()
            if user == "root":
                break
        self.say(MOTD)
        self.say("\x1b[999;999H\x1b[6n")  # resizewin -z from .profile / .login
        started = time.monotonic()
        answer = self.read_until(b"R", timeout=2.0)  # a terminal answers ESC[row;colR
        self.note(resizewin_answer=answer, answered_after=round(time.monotonic() - started, 3),
                  boot=number)
        if os.environ.get("FAKE_FREEBSD_PANIC"):
            self.say("\r\npanic: vm_fault_lookup: fault on nofault entry, addr: 0xfffffe00deadc000\r\n"
                     "cpuid = 1\r\ntime = 1764645000\r\nKDB: stack backtrace:\r\n"
                     "#0 0xffffffff80b9f3ad at kdb_backtrace+0x5d\r\nUptime: 13s\r\n"
                     "Automatic reboot in 15 seconds - press a key on the console to abort\r\n")

    def loader_menu(self) -> None:
        self.say(MENU)
        key = self.keys.byte()
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

    # After the login: a real shell --------------------------------------------------------------
    def shell_session(self) -> str:
        """Root's login shell on a pty in a new namespace, its pty relayed to the console, until
        the guest powers off or reboots ("poweroff", "reboot") or the shell dies."""
        state_path = os.path.join(self.workdir, "state.json")
        with open(state_path, "w") as f:
            json.dump(self.state, f)
        master, slave = os.openpty()
        shell = os.environ.get("FAKE_FREEBSD_SHELL", "sh")
        argv = ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation",
                "private", "/usr/bin/python3", USERLAND, "enter", state_path, shell]
        namespace = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                     preexec_fn=in_child_be_killed_with_parent)
        os.close(slave)
        over = threading.Event()
        typing = threading.Thread(target=self.typed_to_shell, args=(master, over), daemon=True)
        typing.start()
        output = threading.Thread(target=self.shell_to_console, args=(master, over), daemon=True)
        output.start()
        outcome = self.events.get()
        over.set()
        namespace.kill()  # PR_SET_PDEATHSIG takes the namespace's PID 1, so all of it, along
        namespace.wait()
        typing.join()
        output.join(10)
        os.close(master)
        return outcome

    def shell_to_console(self, master: int, over: threading.Event) -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # the shell and all its children are gone
                data = b""
            if not data:
                if not over.is_set():
                    self.events.put("shell-gone")
                return
            self.say(data)

    def typed_to_shell(self, master: int, over: threading.Event) -> None:
        line = b""
        while not over.is_set():
            data = self.keys.read(0.1)
            if not data:
                continue
            if over.is_set():  # typed after the shell went: the next boot's getty reads it
                self.keys.pending = data + self.keys.pending
                return
            os.write(master, data)
            line += data
            while b"\r" in line:
                typed, line = line.split(b"\r", 1)
                self.note(line=typed.decode(errors="replace"))

    def control(self) -> None:
        """What the stand-ins tell the machine: power off, reboot, or (efivar, efibootmgr) that
        UEFI variables changed and the firmware writes them to the vars file."""
        while True:
            with open(self.state["control"]) as control:
                for line in control:
                    what = line.strip()
                    if what == "nvram" and self.vars_file:
                        with open(self.state["efivars"]) as f:
                            write_store(self.vars_file, json.load(f))
                    elif what in ("poweroff", "reboot"):
                        self.events.put(what)

    def wire_com2(self, path: str) -> None:
        """COM2 (a ``-chardev socket,server=on`` QEMU listens on from the start) is
        /dev/cuau1: a pty whose other end this relays to whoever connects to the socket."""
        master, slave = os.openpty()
        tty.setraw(slave)
        self.com2_slave = slave  # kept open: a pty with no slave open reads EIO
        self.state["uarts"]["cuau1"] = os.ttyname(slave)
        server = listen_unix(path)

        def relay():
            conn, _ = server.accept()
            threading.Thread(target=lambda: pump(master, conn.sendall), daemon=True).start()
            while data := conn.recv(65536):
                os.write(master, data)

        threading.Thread(target=relay, daemon=True).start()


def pump(fd: int, send) -> None:
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            return
        if not data:
            return
        send(data)


def listen_unix(path: str) -> socket.socket:
    """A listening Unix socket at ``path``, which is removed first as QEMU does (a VM started
    again finds its last run's socket there)."""
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    return server


class Qmp:
    def __init__(self, path: str):
        self.server = listen_unix(path)
        self.conn = None
        self.lock = threading.Lock()
        self.cont = threading.Event()

    def serve(self) -> None:
        self.conn, _ = self.server.accept()
        self.send({"QMP": {"version": {"qemu": {"major": 0, "minor": 0, "micro": 0}},
                           "capabilities": []}})
        for line in self.conn.makefile("rb"):
            command = json.loads(line).get("execute")
            if command == "migrate":  # a double has no machine state to write: said at once
                self.send({"error": {"class": "GenericError", "desc": (
                    "refvm test double: no guest state to save (its shell and processes "
                    "cannot be carried into a new process)")}})
                continue
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


def refuse(argv: list[str], message: str) -> None:
    """QEMU's way of refusing a machine it cannot build: QMP answers its greeting, the error
    goes to stderr, exit 1 before the guest runs."""
    qmp = Qmp(option(argv, "-qmp", "unix:")[len("unix:"):].split(",")[0])
    qmp.server.settimeout(10)
    try:
        qmp.conn, _ = qmp.server.accept()
        qmp.send({"QMP": {"version": {"qemu": {"major": 0, "minor": 0, "micro": 0}},
                          "capabilities": []}})
    except OSError:
        pass
    sys.stderr.write(message)
    sys.exit(1)


def main() -> None:
    argv = sys.argv[1:]
    problem = pflash_problem(argv) if argv != ["--version"] else None
    if problem:
        refuse(argv, problem)

    def freebsd(base: str, _uefi: bool, qmp: Qmp) -> Guest:
        workdir = os.path.join(os.path.dirname(argv[argv.index("-pidfile") + 1]),
                               "freebsd-double")
        os.makedirs(workdir, exist_ok=True)
        guest = Guest(base, devices(argv, workdir), workdir, qmp, argv)
        for com2 in (o for o in options(argv, "-chardev") if o.get("id") == "com2"):
            guest.wire_com2(com2["path"])
        return guest

    guest = start(argv, freebsd, "fake_qemu_freebsd.py")
    if guest is not None:
        guest.run()


if __name__ == "__main__":
    main()
