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

Usage: fake_freebsd_userland.py enter STATE SHELL   (inside `unshare --mount --pid --fork`)
       fake_freebsd_userland.py TOOL ARGS...         (via the wrappers `enter` writes)
Only the standard library: the namespace hides the harness's virtualenv.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import threading

ROOT = "/mnt"  # the namespace's private tmpfs: tools, state, home, /tmp and /dev are built here
TOOLS = ("sysctl", "diskinfo", "nvmecontrol", "ifconfig", "sha256", "stty", "nc", "uname",
         "kenv", "shutdown", "dhclient", "pgrep")
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


def sysctl(args: list[str]) -> int:
    state = load()
    names = [a for a in args if not a.startswith("-")]
    quiet = "-n" in args
    values = {"kern.disks": " ".join(d["name"] for d in reversed(state["disks"])),
              "machdep.bootmethod": state["bootmethod"], "kern.ostype": "FreeBSD",
              "kern.osrelease": f"{state['release']}-RELEASE",
              "hw.nvme.use_nvd": "1" if state["nvme_driver"] == "nvd" else "0"}
    for name in names:
        if name not in values:
            return fail("sysctl", f"unknown oid '{name}'")
        print(values[name] if quiet else f"{name}: {values[name]}")
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
    """``shutdown -p now``: the messages, then the double powers the VM off (its QMP event)."""
    if args[:2] != ["-p", "now"]:
        return fail("shutdown", "usage: shutdown [-] [-c | -f | -h | -p | -r | -k] [-o [-n]] "
                                "[-q] time [warning-message ...]")
    print("Shutdown NOW!\nshutdown: [pid 812]")
    sys.stdout.flush()
    with open(load()["control"], "w") as f:
        f.write("poweroff\n")
    threading.Event().wait()
    return 0


def main() -> int:
    tool, args = sys.argv[1], sys.argv[2:]
    if tool == "enter":
        enter(*args)
        return 127
    return globals()[tool](args)


if __name__ == "__main__":
    sys.exit(main())
