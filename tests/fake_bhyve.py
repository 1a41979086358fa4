#!/usr/bin/env python3
"""Test double standing in for bhyve, bhyvectl, bhyveload and ifconfig (never for real use).

Installed under each of those names (symlinks); what it plays is the name it was called by.
Every call appends {"prog", "argv"} to a JSON-lines call log. The control file named by the
environment variable FAKE_BHYVE_CONTROL says:

    log      the call log's path
    exits    exit statuses per program: "bhyve": [0, 1] means the first bhyve call exits 0
             and every later one 1; a more specific key "ifconfig:create" (program and any
             argument, the first that has a key) wins over "ifconfig"; anything unlisted exits 0
    interfaces  {name: description} of the network interfaces that exist: `ifconfig NAME`
             and `ifconfig -a` print them as FreeBSD's ifconfig does (a description line when
             there is one); `ifconfig NAME` of any other name exits 1, "does not exist"
    console  text bhyve (and bhyveload) write to their console device, as a guest would
    hang     bhyve does not exit by itself: it waits for SIGTERM, then exits 1 (bhyve(8):
             "SIGTERM  Trigger ACPI poweroff for a VM")
    bridge   what a successful `ifconfig bridge create` prints (ifconfig(8): "the new device
             name is printed to standard output"); default "bridge7"
    run_dir  where a running (hanging) bhyve listens for bhyvectl's snapshot requests, as
             bhyve's checkpoint thread does on a socket under /var/run/bhyve
    snapshot false: a GENERIC build: bhyvectl refuses --suspend and bhyve refuses -r as their
             getopt would (default true: a BHYVE_SNAPSHOT build)
    checkpoint_fails  the checkpoint fails: bhyve says so and keeps running, as snapshot.c's
             handle_message does

bhyve's console is the path after "-l com1,"; bhyveload's the one after "-c". Tests give the
backend a FIFO there instead of /dev/nmdmNA (nmdm is FreeBSD-only).

Snapshots, as bhyve's snapshot.c and bhyvectl.c do them (simulated: the files' contents are the
double's own, only their names, the order of events and the exits are bhyve's):
- `bhyvectl --vm=NAME --suspend=FILE` sends the request on NAME's socket and exits 0 at once;
  with no such socket it fails as bhyvectl does ("Connect to VM socket failed").
- the running bhyve writes FILE.kern (here: the -s and -l options it ran with), FILE (the
  guest's memory: here a JSON header with the last console line, the file as long as -m, with
  a hole) and FILE.meta (JSON: vmname, ncpus, memsize), then exits 0 (vm_destroy; exit(0)).
- `bhyve ... -r FILE NAME` reads the three files, refuses other -s/-l options than the
  snapshot's (bhyve(8): they must match) and prints the saved console line again: the guest
  goes on where it was.
- a vars file given by `-l bootrom,CODE,VARS` under one page (4096 bytes) or over 16 MiB, or
  with CODE over 16 MiB together, is refused as bootrom.c does: "Invalid bootrom variable size
  N" (or "... aggregate size N") on stderr, exit 4, before the guest prints anything.
"""
import fcntl
import json
import os
import select
import signal
import socket
import sys
import time

BOOTROM_SIZE = 16 << 20  # bootrom.c: "#define BOOTROM_SIZE (16 * 1024 * 1024)"
PAGE_SIZE = 4096


def console_path(prog, argv):
    if prog == "bhyve":
        for i, arg in enumerate(argv[:-1]):
            if arg == "-l" and argv[i + 1].startswith("com1,"):
                return argv[i + 1].split(",", 1)[1]
    if prog == "bhyveload" and "-c" in argv:
        return argv[argv.index("-c") + 1]
    return None


def say(path, text):
    """Write to the console device; a FIFO nobody reads (ENXIO) is a guest nobody watches."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def main():
    prog, argv = os.path.basename(sys.argv[0]), sys.argv[1:]
    with open(os.environ["FAKE_BHYVE_CONTROL"]) as f:
        control = json.load(f)
    with open(control["log"], "a+") as log:
        fcntl.flock(log, fcntl.LOCK_EX)
        log.seek(0)
        earlier = sum(1 for line in log if json.loads(line)["prog"] == prog)
        log.write(json.dumps({"prog": prog, "argv": argv}) + "\n")
    exits = control.get("exits", {})
    keys = [f"{prog}:{arg}" for arg in argv if f"{prog}:{arg}" in exits]
    codes = exits.get(keys[0] if keys else prog, [0])
    code = codes[min(earlier, len(codes) - 1)]

    if prog == "ifconfig" and argv[:2] == ["bridge", "create"] and code == 0:
        print(control.get("bridge", "bridge7"))
    if prog == "ifconfig" and len(argv) == 1:
        interfaces = control.get("interfaces", {})
        names = sorted(interfaces) if argv == ["-a"] else [argv[0]]
        if names and names[0] not in interfaces:
            print(f"ifconfig: interface {argv[0]} does not exist", file=sys.stderr)
            sys.exit(1)
        for name in names:
            print(f"{name}: flags=8843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST> metric 0 mtu 1500")
            if interfaces[name]:
                print(f"\tdescription: {interfaces[name]}")
            print("\toptions=80000<LINKSTATE>")

    snapshots = control.get("snapshot", True)
    if prog == "bhyvectl" and any(a.startswith("--suspend=") for a in argv):
        suspend(control, argv, snapshots)
    if prog == "bhyve":
        check_bootrom(argv)
    path = console_path(prog, argv)
    line = f"{prog}: {control['console']} (run {earlier + 1})" if control.get("console") else ""
    if prog == "bhyve" and "-r" in argv:
        if not snapshots:
            print("bhyve: illegal option -- r", file=sys.stderr)
            sys.exit(1)
        line = "resumed: " + restore(argv)["console"]
    if path and line:
        say(path, line + "\r\n")
    if prog == "bhyve" and control.get("hang"):
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
        serve(control, argv, line)
    sys.exit(code)


def vm_name(argv):
    return argv[-1]


def option_values(argv, flag):
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == flag]


def devices(argv):
    return {"-s": option_values(argv, "-s"), "-l": option_values(argv, "-l")}


def check_bootrom(argv):
    """bootrom.c bootrom_loadrom's size checks, with its words."""
    for value in option_values(argv, "-l"):
        parts = value.split(",")
        if parts[0] != "bootrom" or len(parts) < 3:
            continue
        rom, var = os.path.getsize(parts[1]), os.path.getsize(parts[2])
        if var > BOOTROM_SIZE or (var != 0 and var < PAGE_SIZE):
            print(f"Invalid bootrom variable size {var}", file=sys.stderr)
            sys.exit(4)
        if rom + var > BOOTROM_SIZE:
            print(f"Invalid bootrom and variable aggregate size {rom + var}", file=sys.stderr)
            sys.exit(4)


def memory_bytes(argv):
    size = option_values(argv, "-m")[0]
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(size[:-1]) * units[size[-1].upper()] if size[-1].isalpha() else int(size) << 20


def suspend(control, argv, snapshots):
    """bhyvectl: hand the request to the VM's bhyve and return, as bhyvectl does."""
    target = next(a.split("=", 1)[1] for a in argv if a.startswith("--suspend="))
    if not snapshots:
        print(f"bhyvectl: unrecognized option `--suspend={target}'", file=sys.stderr)
        sys.exit(1)
    name = next(a.split("=", 1)[1] for a in argv if a.startswith("--vm="))
    os.chdir(control["run_dir"])  # short socket paths, like /var/run/bhyve/NAME
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(name)
        except OSError as err:
            print(f"Connect to VM socket failed: {err.strerror}", file=sys.stderr)
            sys.exit(1)
        sock.send(json.dumps({"cmd": "checkpoint", "filename": target,
                              "suspend": True}).encode())
    sys.exit(0)


def serve(control, argv, line):
    """A running guest: wait for SIGTERM (an ACPI power-off) or a snapshot request."""
    run_dir = control.get("run_dir")
    if not run_dir:
        while True:
            time.sleep(0.1)
    os.makedirs(run_dir, exist_ok=True)
    os.chdir(run_dir)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if os.path.exists(vm_name(argv)):
        os.unlink(vm_name(argv))
    sock.bind(vm_name(argv))
    try:
        while True:
            if not select.select([sock], [], [], 0.1)[0]:
                continue
            request = json.loads(sock.recv(65536))
            if control.get("checkpoint_fails"):
                print("Unable to perform the requested operation", file=sys.stderr)
                continue
            checkpoint(argv, request["filename"], line)
            if request["suspend"]:
                sys.exit(0)
    finally:
        sock.close()
        os.unlink(vm_name(argv))


def checkpoint(argv, target, line):
    """snapshot.c vm_checkpoint's files, in its order: FILE.kern, FILE, FILE.meta."""
    with open(target + ".kern", "w") as kern:
        json.dump({"refvm test double": "vmm.ko and device state", "devices": devices(argv)},
                  kern)
    memsize = memory_bytes(argv)
    with open(target, "wb") as memory:
        memory.write(json.dumps({"console": line}).encode() + b"\n")
        memory.truncate(memsize)
    with open(target + ".meta", "w") as meta:
        json.dump({"basic metadata": {"vmname": vm_name(argv), "memsize": memsize,
                                      "ncpus": option_values(argv, "-c")[0]}}, meta)


def restore(argv):
    """bhyve -r FILE: the guest's state back from the three files."""
    target = option_values(argv, "-r")[0]
    try:
        with open(target + ".meta") as meta:
            json.load(meta)
        with open(target + ".kern") as kern:
            saved = json.load(kern)["devices"]
        with open(target, "rb") as memory:
            state = json.loads(memory.readline())
    except (OSError, ValueError) as err:
        print(f"(refvm test double) cannot restore from {target}: {err}", file=sys.stderr)
        sys.exit(4)
    if saved != devices(argv):
        print("(refvm test double) the -s and -l options differ from the snapshot's",
              file=sys.stderr)
        sys.exit(4)
    return state


if __name__ == "__main__":
    main()
