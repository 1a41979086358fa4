"""The matrix a report draws: per backend and host, guest x firmware rows, scenario columns."""
from __future__ import annotations

from collections import Counter

RESULTS = ("pass", "fail", "error", "skip")


def grids(report: dict) -> list[dict]:
    """One grid per (backend, host): its scenarios (columns), its (guest, firmware) rows and
    the case in each cell (absent: that combination was not in the matrix)."""
    by_place: dict[tuple, dict] = {}
    for case in report["cases"]:
        grid = by_place.setdefault((case["backend"], case["host"]), {
            "backend": case["backend"], "host": case["host"], "scenarios": [], "rows": [],
            "cells": {}})
        if case["scenario"] not in grid["scenarios"]:
            grid["scenarios"].append(case["scenario"])
        row = (case["guest"], case["firmware"])
        if row not in grid["rows"]:
            grid["rows"].append(row)
        grid["cells"][row + (case["scenario"],)] = case
    for grid in by_place.values():
        grid["scenarios"].sort()
        grid["rows"].sort()
    return list(by_place.values())


def totals(report: dict) -> Counter:
    return Counter(case["result"] for case in report["cases"])


def summary_line(report: dict) -> str:
    """``3 pass, 1 fail, 0 error, 6 skip; wall 95.2 s, cases 180.4 s (2 workers)``."""
    count = totals(report)
    head = report["header"]
    wall = head.get("finished", 0) - head.get("started", 0)
    busy = sum(case.get("seconds", 0) for case in report["cases"])
    return (", ".join(f"{count.get(r, 0)} {r}" for r in RESULTS)
            + f"; wall {wall:.1f} s, sum of case times {busy:.1f} s "
              f"({head.get('workers', 1)} worker(s))")


def hosts_to_show(head: dict) -> list[dict]:
    """The header's hosts table, when it says more than its hypervisor line (a local run's one
    host with the same description: nothing)."""
    hosts = head.get("hosts") or []
    if [x.get("describe") for x in hosts] == [head.get("backend", {}).get("describe")]:
        return []
    return hosts
