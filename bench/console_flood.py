"""Benchmark: harness CPU per console MB during a flood, today's console code vs the baseline.

Issue #10 part 3. Two kinds of delivery, each run with the harness's SerialConsole ("new") and
with bench/baseline_console.py (the code before the fix, "base") side by side in one run:

- a double (tests.doubles.TricklingConsole): a separate process writes N MB of kernel-style
  lines and then a login prompt in small writes (1..16 bytes) at a set rate, as a 16550 under
  TCG hands its chardev a few bytes at a time; the harness waits for the login prompt;
- a real flooding guest: the reference guest booted under QEMU (TCG) through the harness's
  QEMU backend (Run.boot), logged in, then made to print N MB of kernel-style lines on its
  serial console (``yes LINE | head -c N``) while the harness waits for the command's end.
  QEMU's CPU for the same interval is read from /proc/PID/stat.

Harness CPU is this process's own CPU (time.process_time) over the wait: the feeder and QEMU
are other processes. "floor" (with --floor for the double) is a reader that does nothing but
read the same delivery every 2 ms: mostly the kernel's cost of many tiny socket writes (and of
waking up), which no reader avoids.

Usage: python bench/console_flood.py [--sizes 0.5 2] [--rates 80000 400000] [--guest-mb 1]
       python bench/console_flood.py --full   # 5 and 20 MB at 80 KB/s (takes ~15 minutes)
"""
from __future__ import annotations

import argparse
import os
import select
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.baseline_console import BaselineConsoleLog, BaselineSerialConsole  # noqa: E402
from harness.console.log import ConsoleLog  # noqa: E402
from harness.console.serial import SerialConsole  # noqa: E402
from harness.guestos import UnixShell  # noqa: E402
from harness.model import DEFAULT_LOGIN_PROMPT  # noqa: E402
from tests.doubles import TricklingConsole  # noqa: E402

LINE = "[   12.345678] virtio_blk virtio2: [vdc] 131072 512-byte logical blocks (67.1 MB)\r\n"
LINUX_FAILURES = (r"Kernel panic - not syncing", r"\bBUG: (?:unable|kernel|soft lockup|scheduling)",
                  r"\bOops: [0-9a-fx]+")
MB = 1 << 20
KINDS = {"new": (SerialConsole, ConsoleLog), "base": (BaselineSerialConsole, BaselineConsoleLog)}


def flood_parts(megabytes: float):
    return [(LINE, int(megabytes * MB) // len(LINE)), ("\r\nrefguest login: ", 1)]


def double_run(kind: str, megabytes: float, rate: float,
               transport: str = "fifo") -> tuple[float, float]:
    """(harness CPU s, wall s) to reach the login prompt behind the flood."""
    console_type, log_type = KINDS[kind]
    guest = TricklingConsole(flood_parts(megabytes), rate=rate, transport=transport)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            log = log_type(Path(tmp) / "console.log")
            console = console_type(guest.harness_side, log, LINUX_FAILURES)
            cpu, wall = time.process_time(), time.monotonic()
            console.expect([DEFAULT_LOGIN_PROMPT], 3600, "the login prompt")
            result = time.process_time() - cpu, time.monotonic() - wall
            console.close()
            log.close()
    finally:
        guest.close()
    return result


def floor_run(megabytes: float, rate: float, transport: str = "fifo") -> float:
    """CPU of a reader that only reads the same delivery, every 2 ms (no log, no search)."""
    guest = TricklingConsole(flood_parts(megabytes), rate=rate, transport=transport)
    fd, total = guest.harness_side.fileno(), 0
    cpu = time.process_time()
    try:
        while total < guest.size:
            if not select.select([fd], [], [], 30)[0]:
                break
            time.sleep(0.002)
            while select.select([fd], [], [], 0)[0]:
                data = os.read(fd, MB)
                total += len(data)
                if not data:
                    break
    finally:
        guest.close()
    return time.process_time() - cpu


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def raw_read(stream, command: str) -> None:
    """The floor: type ``command``, then only read (every 2 ms) until its end marker."""
    os.write(stream.write_fileno(), f"{command}; echo __FLOOR''DONE__\r".encode())
    tail = b""
    while b"__FLOORDONE__" not in tail:
        if not select.select([stream], [], [], 60)[0]:
            raise SystemExit("floor: the guest went silent")
        tail = (tail + os.read(stream.fileno(), MB))[-64:]
        time.sleep(0.002)


def guest_runs(megabytes: float, rounds: int) -> list[tuple[str, float, float, float]]:
    """Boot the reference guest once; flood its console with each console code in turn.
    Returns (kind, harness CPU s, QEMU CPU s, wall s) per flood."""
    from harness.backends import get_backend
    from harness.catalog import load_guests
    from harness.images.cache import ImageCache
    from harness.matrix import Case
    from harness.catalog import load_scenario
    from harness.paths import cache_dir
    from harness.runner import Run

    guest, = load_guests(["refguest"])
    image = ImageCache(cache_dir(), log=lambda _t: None).prepare(guest)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        scenario = Path(tmp) / "flood.yaml"
        scenario.write_text("name: flood\nsteps:\n  - login\n")
        run = Run(get_backend("qemu", accel="tcg"), Path(tmp) / "artifacts")
        case = Case(load_scenario(scenario), guest, "csm", "qemu")
        try:
            vm = run.boot(case, image)
            c = guest.console
            vm.guest.reach_shell(c.boot_timeout)  # the family's set-up: no stray kernel messages
            pid = vm.machine.proc.pid
            size = int(megabytes * MB)
            command = f"yes '{LINE.rstrip()}' | head -c {size}"
            for _ in range(rounds):
                qemu, cpu, wall = proc_cpu(pid), time.process_time(), time.monotonic()
                raw_read(vm.console._stream, command)
                rows.append(("floor", time.process_time() - cpu, proc_cpu(pid) - qemu,
                             time.monotonic() - wall))
                for kind in ("new", "base"):
                    console_type, log_type = KINDS[kind]
                    log = log_type(Path(tmp) / f"{kind}.log", secrets=[c.password])
                    console = console_type(vm.console._stream, log, LINUX_FAILURES)
                    shell = UnixShell(console, vm.guest.family, c)  # the same dialogue on top
                    qemu, cpu, wall = proc_cpu(pid), time.process_time(), time.monotonic()
                    result = shell.run(command, timeout=3600)
                    rows.append((kind, time.process_time() - cpu, proc_cpu(pid) - qemu,
                                 time.monotonic() - wall))
                    console.close()
                    log.close()
                    if len(result.output) < size * 0.99:  # CRs removed; LF counted once
                        raise SystemExit(f"{kind}: the flood came back short "
                                         f"({len(result.output)} of {size} bytes)")
        finally:
            run.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.5, 2], metavar="MB")
    parser.add_argument("--rates", type=float, nargs="+", default=[80_000, 400_000],
                        metavar="BYTES_PER_S", help="the first rate runs every size, "
                        "the others the smallest size only")
    parser.add_argument("--guest-mb", type=float, default=1.0,
                        help="MB the real guest floods (0: skip the real guest)")
    parser.add_argument("--floor", action="store_true", help="also measure a read-only reader")
    parser.add_argument("--full", action="store_true", help="5 and 20 MB at 80 KB/s")
    parser.add_argument("--transports", nargs="+", default=["fifo", "socket"],
                        choices=("fifo", "socket"),
                        help="how the new code gets the console: fifo (QEMU's pipe chardev, "
                             "the QEMU backend's console) or socket (QEMU's socket chardev)")
    args = parser.parse_args()
    if args.full:
        args.sizes, args.rates = [5, 20], [80_000]

    print("new: the harness's console; base: the code before issue #10 part 3, over QEMU's "
          "socket chardev as it was then")
    print(f"{'delivery':<32} {'flood':>6} {'new cpu s':>10} {'new s/MB':>9} "
          f"{'base cpu s':>11} {'base s/MB':>10} {'base/new':>9}"
          + (f" {'floor s/MB':>11}" if args.floor else ""), flush=True)
    runs = [(args.rates[0], mb) for mb in args.sizes] + [(r, min(args.sizes))
                                                         for r in args.rates[1:]]
    for rate, mb in runs:
        base, _ = double_run("base", mb, rate, "socket")
        for transport in args.transports:
            new, _ = double_run("new", mb, rate, transport)
            label = f"double {rate / 1000:.0f} KB/s, 1-16 B, {transport}"
            line = (f"{label:<32} {mb:>4.1f}MB {new:>10.2f} {new / mb:>9.3f} {base:>11.2f} "
                    f"{base / mb:>10.3f} {base / new:>8.1f}x")
            if args.floor:
                line += f" {floor_run(mb, rate, transport) / mb:>11.3f}"
            print(line, flush=True)

    if args.guest_mb > 0:
        if shutil.which("qemu-system-x86_64") is None:
            print("real guest: skipped (qemu-system-x86_64 not installed)")
            return
        rows = guest_runs(args.guest_mb, rounds=1)
        print(f"\nreal guest (refguest, QEMU TCG, csm): {args.guest_mb:.1f} MB printed by "
              "`yes | head -c` on ttyS0 after login")
        print(f"{'console code':<13} {'harness cpu s':>14} {'s/MB':>7} {'qemu cpu s':>11} "
              f"{'harness/qemu':>13} {'wall s':>7} {'KB/s':>6}")
        for kind, harness_cpu, qemu_cpu, wall in rows:
            print(f"{kind:<13} {harness_cpu:>14.2f} {harness_cpu / args.guest_mb:>7.3f} "
                  f"{qemu_cpu:>11.2f} {harness_cpu / qemu_cpu:>12.1%} {wall:>7.1f} "
                  f"{args.guest_mb * 1024 / wall:>6.0f}")
        print("(floor: a reader that only reads the same flood every 2 ms, no log, no search)")
        new = sum(r[1] for r in rows if r[0] == "new")
        base = sum(r[1] for r in rows if r[0] == "base")
        print(f"base/new harness cpu: {base / new:.1f}x")


if __name__ == "__main__":
    main()
