"""Benchmark: a matrix's wall time against the sum of its cases' times, one VM at a time and
with refvm run's parallel default, side by side in one run.

Runs the real `refvm run` (a subprocess, QEMU, the reference guest) over the same selection
with ``-j 1`` and then each ``-j N`` asked for (default: 2 and what refvm run would choose
here), and reads each run's artifacts/report.json: wall time (first case start to the report),
the sum of the cases' own times (setup + call + teardown), and their ratio, which says how much
of the machine the run used (1.0: one VM at a time; N: N VMs busy the whole run).

Usage: python bench/parallel_matrix.py [--scenario boot --scenario uart] [--firmware csm]
       [--jobs 2 --jobs 4]
Defaults: the boot and uart scenarios under both firmware (4 cases).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_matrix(jobs: int, selection: list[str], scratch: Path) -> dict:
    artifacts = scratch / f"j{jobs}"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--guest", "refguest", "-j", str(jobs),
         "--quiet", "--artifacts", str(artifacts), *selection, "-p", "no:cacheprovider"],
        cwd=REPO, capture_output=True, text=True, env=dict(os.environ, REFVM_TMP=str(scratch)))
    elapsed = time.monotonic() - started
    report = json.loads((artifacts / "report.json").read_text())
    head = report["header"]
    cases = report["cases"]
    return {"jobs": jobs, "status": proc.returncode, "process": elapsed,
            "wall": head["finished"] - head["started"],
            "sum": sum(c["seconds"] for c in cases), "cases": len(cases),
            "passed": sum(c["result"] == "pass" for c in cases)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", action="append", default=[])
    parser.add_argument("--firmware", action="append", default=[])
    parser.add_argument("--jobs", action="append", type=int, default=[])
    args = parser.parse_args()
    selection = [a for name in (args.scenario or ["boot", "uart"]) for a in ("--scenario", name)]
    selection += [a for name in args.firmware for a in ("--firmware", name)]
    jobs = [1] + (args.jobs or [2])
    print(f"refvm run --guest refguest {' '.join(selection)}; {os.cpu_count()} cores")
    print(f"{'-j':>3} {'cases':>5} {'passed':>6} {'wall s':>7} {'sum of cases s':>15} "
          f"{'sum/wall':>8} {'wall vs -j 1':>12} {'process s':>9}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-parallel-") as scratch:
        for count in jobs:
            row = run_matrix(count, selection, Path(scratch))
            rows.append(row)
            print(f"{row['jobs']:>3} {row['cases']:>5} {row['passed']:>6} {row['wall']:>7.1f} "
                  f"{row['sum']:>15.1f} {row['sum'] / row['wall']:>8.2f} "
                  f"{rows[0]['wall'] / row['wall']:>11.2f}x {row['process']:>9.1f}", flush=True)
    if any(row["status"] for row in rows):
        print("(a run did not pass: see its exit status; the times still stand)")


if __name__ == "__main__":
    main()
