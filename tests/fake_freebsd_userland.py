#!/usr/bin/python3
"""TEST DOUBLE: the FreeBSD tools the FreeBSD command sets call, for a real shell on Linux.

tests/fake_qemu_freebsd.py hands its console, after the login it plays, to a *real* shell
(dash as FreeBSD's sh, tcsh as FreeBSD 13's csh, bash) in a private mount and PID namespace
whose /dev holds the VM's devices under their FreeBSD names: each scratch disk of the QEMU
argv is bind-mounted at /dev/vtbdN, /dev/nvdN or /dev/ndaN (read-only disks on a read-only
mount, so writes fail with EROFS as on a read-only virtio disk), and COM2 is a pty at
/dev/cuau1 that the double wires to QEMU's COM2 socket. So the family's command lines are
parsed and run by a real shell with real dd, head, awk, sed, grep and wc, and the data they move
goes to and from the scratch images the harness checks on the host.

What cannot run here is FreeBSD's own userland: this file stands in for it, one function per
tool, printing what the FreeBSD tool prints (formats from freebsd-src: diskinfo.c,
sbin/nvmecontrol, ifconfig(8), md5(1), nc(1) from OpenBSD, sysctl(8)) from the device table
the double wrote (``$FAKE_FREEBSD_STATE``). Its limits: the formats are as read from the
sources, not captured from a running system; the network stand-in maps QEMU's user-network
gateway (10.0.2.2) to the host's loopback as QEMU does, with no DHCP of its own (the image's
rc.conf DHCPs every interface at boot, so vtnet0 has 10.0.2.15 from the start).

The machine's side (vCPUs, RTC, UEFI variables, boots) comes from the double too: hw.ncpu and
kern.smp.* from QEMU's -smp; kern.cp_times counts the CPU time that work pinned with cpuset(1)
really used (cpuset runs it on host CPU N modulo the host's count and adds the child's rusage to
vCPU N: work never pinned to a vCPU leaves it idle); the RTC is the host's clock in UTC or in
QEMU's local time (-rtc base=), read when debug.clock_do_io asks; efivar(8) and efibootmgr(8)
read and write the variables the double keeps in QEMU's pflash vars file (it flushes them there
with virt-firmware when a stand-in says so); iostat(8)'s qlen is the number of processes that
have the disk open at that moment (each dd on FreeBSD's unbuffered disk devices keeps one
request outstanding): a stand-in for devstat's count, not a queue measured in a kernel.

Usage: fake_freebsd_userland.py enter STATE SHELL   (inside `unshare --mount --pid --fork`)
       fake_freebsd_userland.py TOOL ARGS...         (via the wrappers `enter` writes)
Only the standard library: the namespace hides the harness's virtualenv.
"""
from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

ROOT = "/mnt"  # the namespace's private tmpfs: tools, state, home, /tmp and /dev are built here
TOOLS = ("sysctl", "diskinfo", "nvmecontrol", "ifconfig", "sha256", "stty", "nc", "uname",
         "kenv", "shutdown", "dhclient", "pgrep", "cpuset", "dmesg", "efivar", "efibootmgr",
         "iostat")
STATHZ = 127  # kern.cp_times counts statclock ticks (stathz, 127 on amd64 with the i8254/LAPIC)
GLOBAL_GUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"  # EFI_GLOBAL_VARIABLE
DEVICES = ("null", "zero", "random", "urandom", "tty")


# The namespace ----------------------------------------------------------------------------------
def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def enter(state_path: str, shell: str) -> None:
    """Runs as PID 1 of a new PID and mount namespace: build FreeBSD's view, exec the shell."""
    with open(state_path) as f:
        state = json.load(f)
    mount("-t", "tmpfs", "refvm-double", ROOT)
    for sub in ("bin", "home", "tmp", "dev"):
        os.mkdir(f"{ROOT}/{sub}")
    me = f"{ROOT}/userland.py"
    shutil.copy(__file__, me)
    for tool in TOOLS:
        with open(f"{ROOT}/bin/{tool}", "w") as f:
            f.write(f'#!/bin/sh\nexec /usr/bin/python3 {me} {tool} "$@"\n')
        os.chmod(f"{ROOT}/bin/{tool}", 0o755)
    open(f"{ROOT}/control", "w").close()
    mount("--bind", state["control"], f"{ROOT}/control")
    state["control"] = f"{ROOT}/control"
    if state.get("efivars"):  # the double's UEFI variables, outside the namespace
        open(f"{ROOT}/efivars.json", "w").close()
        mount("--bind", state["efivars"], f"{ROOT}/efivars.json")
        state["efivars"] = f"{ROOT}/efivars.json"
    with open(f"{ROOT}/msgbuf", "w") as f:  # the kernel's message buffer (dmesg)
        f.write(state.get("msgbuf", ""))
    state["msgbuf"] = f"{ROOT}/msgbuf"
    state["cp_ticks"] = f"{ROOT}/cp_ticks.json"
    run = os.path.realpath("/var/run")  # /var/run/dmesg.boot, as rc.d/dmesg saves it
    mount("-t", "tmpfs", "refvm-double-run", run)
    with open(f"{run}/dmesg.boot", "w") as f:
        f.write(open(state["msgbuf"]).read())
    with open(f"{ROOT}/state.json", "w") as f:
        json.dump(state, f)
    mount("-t", "tmpfs", "refvm-double-dev", f"{ROOT}/dev")
    binds = {name: f"/dev/{name}" for name in DEVICES}
    binds.update({d["name"]: d["file"] for d in state["disks"]})
    binds.update(state["uarts"])
    for name, source in binds.items():
        open(f"{ROOT}/dev/{name}", "w").close()
        mount("--bind", source, f"{ROOT}/dev/{name}")
    for disk in state["disks"]:
        if disk["readonly"]:
            mount("-o", "remount,bind,ro", f"{ROOT}/dev/{disk['name']}")
    for name, fd in (("stdin", 0), ("stdout", 1), ("stderr", 2)):
        os.symlink(f"/proc/self/fd/{fd}", f"{ROOT}/dev/{name}")
    mount("--move", f"{ROOT}/dev", "/dev")
    mount("--bind", f"{ROOT}/tmp", "/tmp")
    path = f"{ROOT}/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    write_dotfiles(f"{ROOT}/home", state["prompt"], path)
    mount("--bind", f"{ROOT}/home", "/root")
    os.chdir("/root")
    paths = {"sh": "/bin/sh", "csh": "/usr/bin/tcsh", "bash": "/bin/bash"}
    env = {"PATH": path, "HOME": "/root",
           "USER": "root", "LOGNAME": "root", "TERM": "vt100",
           "SHELL": "/bin/csh" if shell == "csh" else paths[shell],
           "FAKE_FREEBSD_STATE": f"{ROOT}/state.json"}
    os.execve(paths[shell], [f"-{shell}"], env)  # a login shell, as login(1) starts it


def write_dotfiles(home: str, prompt: str, path: str) -> None:
    """Root's PATH and prompt as FreeBSD's dot files set them (.profile's PATH, .shrc's PS1,
    .cshrc's ``set path`` and ``set prompt``), after the host's /etc/profile and csh.login."""
    for name in (".profile", ".bash_profile"):
        with open(f"{home}/{name}", "w") as f:
            f.write(f"PATH={path}\nexport PATH\nPS1='{prompt}'\n")
    with open(f"{home}/.cshrc", "w") as f:
        f.write(f'set path = ({path.replace(":", " ")})\nset prompt = "{prompt}"\n')


# The tools --------------------------------------------------------------------------------------
def load() -> dict:
    with open(os.environ["FAKE_FREEBSD_STATE"]) as f:
        return json.load(f)


def save(state: dict) -> None:
    with open(os.environ["FAKE_FREEBSD_STATE"], "w") as f:
        json.dump(state, f)


def fail(tool: str, message: str, status: int = 1) -> int:
    print(f"{tool}: {message}", file=sys.stderr)
    return status


def disk_named(state: dict, arg: str) -> dict | None:
    name = arg[len("/dev/"):] if arg.startswith("/dev/") else arg
    return next((d for d in state["disks"] if d["name"] == name), None)


def sysctl_values(state: dict) -> dict:
    """The OIDs the family's commands read, from the double's VM (sysctl(8) prints each as
    ``name: value``, or the value alone with -n)."""
    cpu = state["cpu"]
    boot = state["boottime"]
    sec, usec = int(boot), int(round(boot % 1 * 1e6)) % 1000000
    values = {"kern.disks": " ".join(d["name"] for d in reversed(state["disks"])),
              "machdep.bootmethod": state["bootmethod"], "kern.ostype": "FreeBSD",
              "kern.osrelease": f"{state['release']}-RELEASE",
              "hw.nvme.use_nvd": "1" if state["nvme_driver"] == "nvd" else "0",
              "hw.ncpu": str(cpu["cpus"]), "kern.smp.cpus": str(cpu["cpus"]),
              "kern.smp.cores": str(cpu["cpus"] // cpu["threads"]),
              "kern.smp.threads_per_core": str(cpu["threads"]),
              "kern.cp_times": cp_times(state),
              # sysctl.c S_timeval: "{ sec = %jd, usec = %ld } " and ctime() without its newline
              "kern.boottime": f"{{ sec = {sec}, usec = {usec} }} "
                               + time.strftime("%a %b %e %H:%M:%S %Y", time.gmtime(sec)),
              "machdep.wall_cmos_clock": "0",
              "debug.clock_show_io": str(state.get("clock_show_io", 0)),
              "debug.clock_do_io": "0"}
    for disk in state["disks"]:
        if disk.get("controller"):
            # FreeBSD's default I/O queue (NVME_IO_ENTRIES, 256) fits QEMU's CAP.MQES (2047)
            values[f"dev.{disk['controller'].replace('nvme', 'nvme.')}.ioq0.num_entries"] = "256"
    return values


def cp_times(state: dict) -> str:
    """Five counters per CPU (user nice sys intr idle) in statclock ticks: user is the CPU time
    cpuset(1) measured for work pinned to that vCPU, idle the rest of the uptime."""
    try:
        with open(state["cp_ticks"]) as f:
            busy = json.load(f)
    except FileNotFoundError:
        busy = {}
    up = int((time.time() - state["boottime"]) * STATHZ)
    rows = []
    for cpu in range(state["cpu"]["cpus"]):
        user = busy.get(str(cpu), 0)
        rows += [user, 0, 0, 0, max(up - user, 0)]
    return " ".join(map(str, rows))


def sysctl(args: list[str]) -> int:
    state = load()
    names = [a for a in args if not a.startswith("-")]
    quiet = "-n" in args
    values = sysctl_values(state)
    for name in names:
        name, _, new = name.partition("=")
        if name not in values:
            return fail("sysctl", f"unknown oid '{name}'")
        if new:
            if name not in ("debug.clock_show_io", "debug.clock_do_io"):
                return fail("sysctl", f"oid '{name}' is read only")
            if name == "debug.clock_show_io":
                state["clock_show_io"] = int(new)
                save(state)
            elif new == "1":
                read_rtc(state)
            print(f"{name}: {values[name]} -> {new}")  # sysctl.c: old -> new
            continue
        print(values[name] if quiet else f"{name}: {values[name]}")
    return 0


def read_rtc(state: dict) -> None:
    """debug.clock_do_io=1: the kernel reads every RTC; with debug.clock_show_io & 1,
    clock_dbgprint_bcd() logs ``atrtc0: read  at <system time>: <RTC>`` (subr_rtc.c
    clock_dbgprint_hdr: device_printf "%s at " with "read "; subr_clock.c clock_print_bcd:
    %4.4x-%2.2x-%2.2x %2.2x:%2.2x:%2.2x.%09ld of BCD fields, the year two BCD digits as
    atrtc reads it without USE_RTC_CENTURY). The chip holds QEMU's -rtc base: the host's
    clock plus the offset the double fixed at start (0 for UTC)."""
    if not state.get("clock_show_io", 0) & 1:
        return
    now = time.time()
    rtc = time.gmtime(int(now) + state["rtc_offset"])
    system = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}"
    line = (f"atrtc0: read  at {system}: {rtc.tm_year % 100:04d}-{rtc.tm_mon:02d}-"
            f"{rtc.tm_mday:02d} {rtc.tm_hour:02d}:{rtc.tm_min:02d}:{rtc.tm_sec:02d}.000000000\n")
    with open(state["msgbuf"], "a") as f:
        f.write(line)


def dmesg(args: list[str]) -> int:
    """dmesg(8): the kernel's message buffer (the boot messages, then what was logged)."""
    with open(load()["msgbuf"]) as f:
        sys.stdout.write(f.read().replace("\r", ""))
    return 0


def cpuset(args: list[str]) -> int:
    """cpuset(1) ``-l N cmd [args]``: run the command on vCPU N. Here: pinned to host CPU N
    modulo the host's count, and the CPU time it used (its rusage, as the kernel's statclock
    would have charged vCPU N) added to vCPU N's busy ticks for kern.cp_times. A CPU the VM
    does not have: kern_cpuset.c refuses a mask outside the root set with EDEADLK."""
    state = load()
    if len(args) < 3 or args[0] != "-l" or not args[1].isdigit():
        return fail("cpuset", "usage: cpuset [-l cpu-list] [-s setid] cmd ...")
    vcpu = int(args[1])
    if vcpu >= state["cpu"]["cpus"]:
        return fail("cpuset", "setaffinity: Resource deadlock avoided")
    host = os.cpu_count() or 1
    pid = os.fork()
    if pid == 0:
        os.sched_setaffinity(0, {vcpu % host})
        try:
            os.execvp(args[2], args[2:])
        except OSError as e:
            print(f"cpuset: {args[2]}: {e.strerror}", file=sys.stderr)
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    ticks = int((usage.ru_utime + usage.ru_stime) * STATHZ)
    with open(state["cp_ticks"], "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        busy = json.loads(f.read() or "{}")
        busy[str(vcpu)] = busy.get(str(vcpu), 0) + ticks
        f.seek(0)
        f.truncate()
        json.dump(busy, f)
    return os.waitstatus_to_exitcode(status)


def iostat(args: list[str]) -> int:
    """iostat(8) ``-x -d DISK``: the extended statistics table (its header and column order as
    FreeBSD prints it). qlen: the processes that have the disk open now, a stand-in for
    devstat's started-minus-ended count (each dd on an unbuffered FreeBSD disk keeps one
    request outstanding); the rates are not measured and print as 0."""
    state = load()
    names = [a for a in args if not a.startswith("-")]
    print("                        extended device statistics  ")
    print("device       r/s     w/s     kr/s     kw/s  ms/r  ms/w  ms/o  ms/t qlen  %b  ")
    for disk in state["disks"]:
        if names and disk["name"] not in names:
            continue
        qlen = openers(os.stat(f"/dev/{disk['name']}"))
        print(f"{disk['name']:<8}{0:>8}{0:>8}{0.0:>9.1f}{0.0:>9.1f}{0:>6}{0:>6}{0:>6}{0:>6}"
              f"{qlen:>5}{0:>4} ")
    return 0


def openers(device: os.stat_result) -> int:
    """How many processes have the file ``device`` open (read from /proc/PID/fd)."""
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (device.st_dev, device.st_ino):
                count += 1
                break
    return count


def efivars_load(state: dict) -> dict | None:
    """The variables, or None where the guest did not boot by UEFI (no efi(4) device)."""
    if state["bootmethod"] != "UEFI" or not state.get("efivars"):
        return None
    with open(state["efivars"]) as f:
        return json.load(f)


def efivars_save(state: dict, variables: dict) -> None:
    """Keep the variables, then ask the double (the firmware) to write the NV ones to flash."""
    with open(state["efivars"], "w") as f:
        json.dump(variables, f)
    with open(state["control"], "w") as f:
        f.write("nvram\n")


def efivar(args: list[str]) -> int:
    """efivar(8) (usr.sbin/efivar/efivar.c): ``[-N] [-q] -n GUID-NAME`` prints the data as
    efiutil.c's hexdump ("%04x: " then "%02x " per byte, 16 a line), with the name line
    "GUID-NAME" first unless -N; a missing variable: ``efivar: fetching GUID-NAME: No such
    file or directory`` (verr), silent with -q, exit 1. ``-w -n GUID-NAME`` writes what one
    read() of standard input gives, attributes NV|BS|RT (or -t HEX)."""
    state = load()
    variables = efivars_load(state)
    flags = {a for a in args if a.startswith("-") and a != "-n"}
    name = args[args.index("-n") + 1] if "-n" in args else next(
        (a for a in args if not a.startswith("-")), None)
    if name is None or len(name) < 38 or name[36] != "-":
        return fail("efivar", f"Invalid guid in: {name}")
    if variables is None:  # libefivar finds no /dev/efi: verr's words, unless -q
        what = "efi_set_variable" if "-w" in flags else f"fetching {name}"
        return 1 if "-q" in flags else fail("efivar", f"{what}: No such file or directory")
    if "-w" in flags:
        data = os.read(0, 16 * 1024)
        attr = int(args[args.index("-t") + 1], 16) if "-t" in args else 7
        variables[name] = {"attr": attr, "data": data.hex()}
        efivars_save(state, variables)
        return 0
    found = variables.get(name)
    if found is None:
        if "-q" in flags:
            return 1
        return fail("efivar", f"fetching {name}: No such file or directory")
    data = bytes.fromhex(found["data"])
    out = [] if "-N" in flags else [name]
    line = ""
    for i, byte in enumerate(data):
        if i % 16 == 0:
            if i:
                out.append(line)
            line = f"{i:04x}: "
        line += f"{byte:02x} "
    out.append(line)
    sys.stdout.write("\n".join(out) + "\n" + ("" if "-N" in flags else "\n"))
    return 0


def efibootmgr(args: list[str]) -> int:
    """efibootmgr(8) (usr.sbin/efibootmgr/efibootmgr.c): ``-n -b NNNN`` sets BootNext
    (EFI_GLOBAL_GUID, NV|BS|RT, the number little-endian); then, as after every command, the
    epilogue: "BootNext : %04x", "BootCurrent: %04x", "BootOrder  : %04X, ...", one line per
    entry ("+Boot0001* description", + for the current one, * for active)."""
    state = load()
    variables = efivars_load(state)
    if variables is None:  # efibootmgr.c main(): efi_variables_supported() is false
        return fail("efibootmgr", "efi variables not supported on this system. kldload efirt?")
    if "-n" in args:
        if "-b" not in args:
            return fail("efibootmgr", "       efibootmgr [-n | -N] -b bootnum")
        number = args[args.index("-b") + 1]
        number = int(number[4:] if number.lower().startswith("boot") else number, 16)
        variables[f"{GLOBAL_GUID}-BootNext"] = {"attr": 7,
                                                "data": number.to_bytes(2, "little").hex()}
        efivars_save(state, variables)

    def word(name):
        found = variables.get(f"{GLOBAL_GUID}-{name}")
        return bytes.fromhex(found["data"]) if found else None

    if word("BootNext") is not None:
        print(f"BootNext : {int.from_bytes(word('BootNext'), 'little'):04x}")
    current = int.from_bytes(word("BootCurrent") or b"\0\0", "little")
    print(f"BootCurrent: {current:04x}")
    order = word("BootOrder") or b""
    numbers = [int.from_bytes(order[i:i + 2], "little") for i in range(0, len(order), 2)]
    if numbers:
        print("BootOrder  : " + ", ".join(f"{n:04X}" for n in numbers))
    for n in numbers:
        option = word(f"Boot{n:04X}")
        if option is None:
            print(f"Boot{n:04X}: MISSING!")
            continue
        text = option[6:].decode("utf-16-le").split("\0", 1)[0]
        active = "*" if int.from_bytes(option[:4], "little") & 1 else " "
        print(f"{'+' if n == current else ' '}Boot{n:04X}{active} {text}")
    return 0


def diskinfo(args: list[str]) -> int:
    """diskinfo(8): ``-s`` the ident (serial); otherwise name, sector size, media size in
    bytes and in sectors, stripe size and offset, tab-separated (diskinfo.c)."""
    state = load()
    ident = "-s" in args
    status = 0
    for arg in (a for a in args if not a.startswith("-")):
        disk = disk_named(state, arg)
        if disk is None:
            status = fail("diskinfo", f"{arg}: No such file or directory")
            continue
        if ident:
            if not disk["serial"]:
                status = fail("diskinfo", f"{arg}: ioctl(DIOCGIDENT) failed")
                continue
            print(disk["serial"])
            continue
        size = os.stat(f"/dev/{disk['name']}").st_size
        sector = disk["sector_size"]
        print(f"{arg}\t{sector}\t{size}\t{size // sector}\t0\t0")
    return status


def nvmecontrol(args: list[str]) -> int:
    """``identify nvmeN`` (controller data; identify_ext.c's labels and order) and ``devlist``."""
    state = load()
    controllers = {d["controller"]: d for d in state["disks"] if d.get("controller")}
    if args[:1] == ["devlist"]:
        if not controllers:
            print("No NVMe controllers found.")
            return 69
        for name, disk in sorted(controllers.items()):
            size = os.stat(f"/dev/{disk['name']}").st_size >> 20
            print(f"{name:>6}: {disk['model']}\n  {name + 'ns1':>10} ({size}MB)")
        return 0
    if args[:1] == ["identify"] and len(args) == 2:
        disk = controllers.get(args[1])
        if disk is None:
            return fail("nvmecontrol", f"could not open /dev/{args[1]}: No such file or directory")
        rows = [("Vendor ID", disk["vendor"]), ("Subsystem Vendor ID", disk["subvendor"]),
                ("Serial Number", disk["serial"]), ("Model Number", disk["model"]),
                ("Firmware Version", disk["firmware"]), ("Recommended Arb Burst", "6"),
                ("IEEE OUI Identifier", "52 54 00"), ("Multi-Path I/O Capabilities",
                                                     "Not Supported"),
                ("Max Data Transfer Size", "Unlimited"), ("Controller ID", "0x0000"),
                ("Version", "1.4.0")]
        print("Controller Capabilities/Features\n================================")
        for label, value in rows:
            print(f"{label + ':':<29}{value}")
        print(f"\nNVM Command Set Attributes\n==========================\n"
              f"{'Number of Namespaces:':<29}256")
        return 0
    return fail("nvmecontrol", "usage: nvmecontrol <command> [<args>]")


def ifconfig(args: list[str]) -> int:
    """ifconfig(8): ``-l ether``, ``IF [inet]`` (the interface's lines; an address family
    shows only its own), ``IF inet ADDR/PREFIX [up]``."""
    state = load()
    nics = {n["name"]: n for n in state["nics"]}
    if args[:1] == ["-l"]:
        print(" ".join(nics) if args[1:] == ["ether"] else " ".join(["lo0", *nics]))
        return 0
    nic = nics.get(args[0]) if args else None
    if nic is None:
        return fail("ifconfig", f"interface {args[0] if args else ''} does not exist")
    rest = args[1:]
    if rest[:1] == ["inet"] and len(rest) >= 2:
        address = ipaddress.IPv4Interface(rest[1])
        nic["ipv4"], nic["prefix"] = str(address.ip), address.network.prefixlen
        save(state)
        return 0
    if rest and rest != ["inet"]:
        return 0  # up, down, media...: accepted
    inet = ""
    if nic["ipv4"]:
        network = ipaddress.IPv4Network((nic["ipv4"], nic["prefix"]), strict=False)
        inet = (f"\tinet {nic['ipv4']} netmask 0x{int(network.netmask):08x} "
                f"broadcast {network.broadcast_address}\n")
    print(f"{nic['name']}: flags=1008843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST,LOWER_UP> "
          f"metric 0 mtu 1500")
    if rest == ["inet"]:
        print(inet, end="")
        return 0
    print("\toptions=4c07bb<RXCSUM,TXCSUM,VLAN_MTU,VLAN_HWTAGGING,JUMBO_MTU,VLAN_HWCSUM,TSO4,"
          f"TSO6,LRO,VLAN_HWTSO,LINKSTATE,TXCSUM_IPV6>\n\tether {nic['mac']}\n{inet}"
          "\tmedia: Ethernet autoselect (10Gbase-T <full-duplex>)\n\tstatus: active\n"
          "\tnd6 options=29<PERFORMNUD,IFDISABLED,AUTO_LINKLOCAL>")
    return 0


def dhclient(args: list[str]) -> int:
    """dhclient(8) on QEMU's user network: its server (10.0.2.2) leases 10.0.2.15/24."""
    state = load()
    nic = next((n for n in state["nics"] if args and n["name"] == args[-1]), None)
    if nic is None:
        return fail("dhclient", f"{args[-1] if args else ''}: no such interface")
    print(f"DHCPDISCOVER on {nic['name']} to 255.255.255.255 port 67 interval 1\n"
          "DHCPOFFER from 10.0.2.2\nDHCPREQUEST on {0} to 255.255.255.255 port 67\n"
          "DHCPACK from 10.0.2.2\nbound to 10.0.2.15 -- renewal in 43200 seconds."
          .format(nic["name"]))
    nic["ipv4"], nic["prefix"] = "10.0.2.15", 24
    state.setdefault("running", []).append("dhclient")
    save(state)
    return 0


def pgrep(args: list[str]) -> int:
    """pgrep(1) ``-q NAME``: whether a program the stand-ins started is running."""
    names = [a for a in args if not a.startswith("-")]
    return 0 if names and names[-1] in load().get("running", []) else 1


def sha256(args: list[str]) -> int:
    """md5(1)'s sha256: stdin -> the digest alone; files -> ``SHA256 (f) = d`` or, with -q,
    the digest alone."""
    quiet = "-q" in args
    files = [a for a in args if not a.startswith("-")]
    if not files:
        digest = hashlib.sha256()
        while chunk := sys.stdin.buffer.read(1 << 20):
            digest.update(chunk)
        print(digest.hexdigest())
        return 0
    for name in files:
        with open(name, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        print(digest if quiet else f"SHA256 ({name}) = {digest}")
    return 0


def stty(args: list[str]) -> int:
    """FreeBSD's ``stty -f DEV`` is GNU's ``stty -F DEV``; the settings read the same."""
    argv = ["/bin/stty", *("-F" if a == "-f" else a for a in args)]
    os.execv(argv[0], argv)


def nc(args: list[str]) -> int:
    """nc(1) (FreeBSD's, from OpenBSD): ``[-N] [-d] host port``. -N: shut the socket down for
    writing at end of input; -d: do not read standard input. QEMU's user network carries
    connections to its gateway 10.0.2.2 to the host's loopback: so does this stand-in."""
    flags = {a for a in args if a.startswith("-")}
    host, port = [a for a in args if not a.startswith("-")]
    host = "127.0.0.1" if host == "10.0.2.2" else host
    try:
        sock = socket.create_connection((host, int(port)), timeout=30)
    except OSError as e:
        return fail("nc", f"connect to {host} port {port} (tcp) failed: {e.strerror}")
    sock.settimeout(None)

    def pump_stdin():
        while chunk := sys.stdin.buffer.read1(1 << 16):
            sock.sendall(chunk)
        if "-N" in flags:
            sock.shutdown(socket.SHUT_WR)

    if "-d" not in flags:
        threading.Thread(target=pump_stdin, daemon=True).start()
    while chunk := sock.recv(1 << 16):
        sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()
    return 0


def uname(args: list[str]) -> int:
    state = load()
    if "-r" in args:
        print(f"{state['release']}-RELEASE")
    elif "-a" in args:
        release = f"{state['release']}-RELEASE"
        print(f"FreeBSD freebsd {release} FreeBSD {release} GENERIC amd64")
    else:
        print("FreeBSD")
    return 0


def kenv(args: list[str]) -> int:
    values = {"kernelname": "/boot/kernel/kernel", "smbios.system.product": "Standard PC"}
    name = args[-1] if args else ""
    if name not in values:
        return 1 if "-q" in args else fail("kenv", f"unable to get {name}")
    print(values[name])
    return 0


def shutdown(args: list[str]) -> int:
    """``shutdown -p|-r now`` (sbin/shutdown/shutdown.c): prints "Shutdown NOW!", forks the
    shutdown and returns 0 at once ("shutdown: [pid N]" on stderr, errx(0)); the child waits
    2 s (die_you_gravy_sucking_pig_dog's sleep(2)) and signals init, here: tells the double,
    which plays the rest (power-off, or the reset and the next boot)."""
    if len(args) != 2 or args[0] not in ("-p", "-r") or args[1] != "now":
        print("usage: shutdown [-] [-h | -p | -r | -k] [-o [-n]] time [warning-message ...]\n"
              "       poweroff", file=sys.stderr)
        return 1
    print("Shutdown NOW!")
    sys.stdout.flush()
    pid = os.fork()
    if pid:
        print(f"shutdown: [pid {pid}]", file=sys.stderr)
        return 0
    os.setsid()
    time.sleep(2)
    with open(load()["control"], "w") as f:
        f.write("poweroff\n" if args[0] == "-p" else "reboot\n")
    os._exit(0)


def main() -> int:
    tool, args = sys.argv[1], sys.argv[2:]
    if tool == "enter":
        enter(*args)
        return 127
    return globals()[tool](args)


if __name__ == "__main__":
    sys.exit(main())
