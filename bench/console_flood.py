"""Benchmark: cost of reaching a login prompt behind a console flood, bounded vs unbounded search.

Runs the harness's SerialConsole against a scripted guest that prints N MB of kernel-style
lines before its login prompt, once with the harness's bounded pexpect search window and once
with pexpect's default (search the whole buffer), side by side in one run, at two flood sizes.
Reports CPU seconds and ratios. Usage: python bench/console_flood.py [--sizes 2 8]
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.console import serial as serial_mod  # noqa: E402
from harness.console.log import ConsoleLog  # noqa: E402
from harness.model import DEFAULT_LOGIN_PROMPT, DEFAULT_SHELL_PROMPT  # noqa: E402
from tests.doubles import ScriptedGuestConsole  # noqa: E402

LINE = "[   12.345678] virtio_blk virtio2: [vdc] 131072 512-byte logical blocks (67.1 MB)\r\n"


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def one(megabytes: int, window: int | None) -> tuple[float, float]:
    flood = LINE * (megabytes * (1 << 20) // len(LINE))
    guest = ScriptedGuestConsole(password="pw", boot_output=flood, echo=False)
    with tempfile.TemporaryDirectory() as tmp:
        log = ConsoleLog(Path(tmp) / "console.log")
        console = serial_mod.SerialConsole(guest.harness_side, log)
        console.spawn.searchwindowsize = window
        started_cpu, started = cpu(), time.monotonic()
        console.login("root", "pw", DEFAULT_LOGIN_PROMPT, DEFAULT_SHELL_PROMPT,
                      "Login incorrect", timeout=1800, nudge_after=600)
        result = cpu() - started_cpu, time.monotonic() - started
        log.close()
    guest.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 8], metavar="MB")
    args = parser.parse_args()
    print(f"{'flood':>6} {'bounded cpu s':>14} {'unbounded cpu s':>16} {'unbounded/bounded':>18}")
    rows = []
    for mb in args.sizes:
        bounded, _ = one(mb, serial_mod.SEARCH_WINDOW)
        unbounded, _ = one(mb, None)
        rows.append((mb, bounded, unbounded))
        print(f"{mb:>4}MB {bounded:>14.2f} {unbounded:>16.2f} {unbounded / bounded:>18.1f}x")
    if len(rows) >= 2:
        (m0, b0, u0), (m1, b1, u1) = rows[0], rows[-1]
        print(f"growth from {m0}MB to {m1}MB ({m1 / m0:.0f}x the output): "
              f"bounded {b1 / b0:.1f}x, unbounded {u1 / u0:.1f}x")


if __name__ == "__main__":
    main()
