"""One line per case as it starts and as it ends, and an estimate of the whole matrix.

``refvm run`` prints these instead of pytest's dots (``--quiet``: neither, for CI logs). The
estimate comes from earlier runs' durations, kept per case id in the cache directory
(``durations.json``: the last time each case took on this host), divided by the workers: a
guess, said as one (how many cases it knows). Runs in the process that sees every report
(pytest-xdist's controller relays each worker's start and reports)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from ..report.collect import CaseResult, case_id_of
from ..report.figures import describe, key_figures

DURATIONS_FILE = "durations.json"
MAX_REMEMBERED = 5000  # case ids kept; a matrix is a few hundred


def load_durations(cache: Path) -> dict:
    try:
        data = json.loads((cache / DURATIONS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in data.items()
            if isinstance(k, str) and isinstance(v, (int, float))} \
        if isinstance(data, dict) else {}


def save_durations(cache: Path, measured: dict) -> None:
    """Merge this run's durations into the file (atomically: parallel runs may share it)."""
    known = load_durations(cache)
    known.update(measured)
    keep = dict(list(known.items())[-MAX_REMEMBERED:])
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{DURATIONS_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(keep, indent=0, sort_keys=True))
    tmp.replace(cache / DURATIONS_FILE)


def estimate(case_ids, known: dict, workers: int) -> str:
    """``about 95 s (4 cases known from earlier runs, 2 not; 2 workers)``, or why not."""
    ids = list(case_ids)
    seen = [known[i] for i in ids if i in known]
    if not seen:
        return f"no estimate yet: no earlier run of these {len(ids)} case(s) on this host"
    unknown = len(ids) - len(seen)
    total = sum(seen) + unknown * (sum(seen) / len(seen))
    guess = f" and {unknown} guessed at their mean" if unknown else ""
    return (f"about {total / max(workers, 1):.0f} s ({len(seen)} case(s) timed by earlier "
            f"runs{guess}; {total:.0f} s of VM time over {workers} worker(s))")


def durations_worth_keeping(cases) -> dict:
    """Case id -> seconds, for the cases whose time says what the next run will take: passes,
    failures, and skips (a skip the matrix decides costs next to nothing, and counting it at
    the mean of the cases that boot inflated the estimate by a sixth on refguest). Errors
    are left out: a timeout or a broken host says nothing about the case."""
    return {c.id: round(c.seconds, 2) for c in cases if c.result in ("pass", "fail", "skip")}


class Progress:
    def __init__(self, cache: Path, workers: int, write):
        self.cache, self.workers, self.write = cache, workers, write
        self.total = 0
        self.done = 0
        self.cases: dict[str, CaseResult] = {}
        self.started: dict[str, float] = {}
        self.run_started = time.monotonic()

    # What will run: the items (a plain run) or a worker's collection (pytest-xdist).
    def pytest_collection_finish(self, session):
        if not getattr(session.config.option, "numprocesses", None):
            self._announce([item.nodeid for item in session.items])

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids):
        if not self.total:  # every worker collects the same items; announce once
            self._announce(ids)

    def _announce(self, nodeids) -> None:
        ids = [i for i in map(case_id_of, nodeids) if i]
        self.total = len(ids)
        self.write(f"refvm: {len(ids)} case(s); estimate: "
                   f"{estimate(ids, load_durations(self.cache), self.workers)}")

    # One line as a case starts and one as it ends.
    def pytest_runtest_logstart(self, nodeid, location):
        case_id = case_id_of(nodeid)
        if case_id:
            self.started[case_id] = time.monotonic()
            self.write(f"refvm: start {case_id} ({len(self.started)} of {self.total})")

    def pytest_runtest_logreport(self, report):
        case_id = case_id_of(report.nodeid)
        if not case_id:
            return
        case = self.cases.setdefault(case_id, CaseResult(case_id))
        case.add(report)
        if report.when != "teardown":
            return
        self.done += 1
        elapsed = time.monotonic() - self.started.get(case_id, time.monotonic())
        figures = describe(key_figures(case.properties))
        detail = f": {case.reason}" if case.reason else f" ({figures})" if figures else ""
        self.write(f"refvm: [{self.done}/{self.total}] {case.result.upper()} {case_id} "
                   f"{elapsed:.1f} s{detail}"[:400])

    @pytest.hookimpl(tryfirst=True)
    def pytest_report_teststatus(self, report, config):
        """No dot or letter for a case: its lines above say it (pytest still counts it)."""
        if not case_id_of(report.nodeid):
            return None
        if report.when in ("setup", "teardown"):
            return ("error" if report.failed else "skipped" if report.skipped else ""), "", ""
        return report.outcome, "", ""

    def pytest_sessionfinish(self, session):
        measured = durations_worth_keeping(self.cases.values())
        if measured:
            save_durations(self.cache, measured)
        busy = sum(c.seconds for c in self.cases.values())
        self.write(f"refvm: matrix took {time.monotonic() - self.run_started:.1f} s wall, "
                   f"{busy:.1f} s of case time, {self.workers} worker(s)")
