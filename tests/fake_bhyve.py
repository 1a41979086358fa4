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

bhyve's console is the path after "-l com1,"; bhyveload's the one after "-c". Tests give the
backend a FIFO there instead of /dev/nmdmNA (nmdm is FreeBSD-only).
"""
import fcntl
import json
import os
import signal
import sys
import time


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

    path = console_path(prog, argv)
    if path and control.get("console"):
        say(path, f"{prog}: {control['console']} (run {earlier + 1})\r\n")
    if prog == "bhyve" and control.get("hang"):
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
        while True:
            time.sleep(0.1)
    sys.exit(code)


if __name__ == "__main__":
    main()
