"""Gather every case's result from pytest's reports, and write the run's report files.

Runs in the process that sees every report: a plain pytest run, or pytest-xdist's controller
(workers relay each report with its ``user_properties``). A case is known by its id
(``scenario[guest-firmware-backend]``); its result is

- ``skip``  skipped in setup or call (the reason is pytest's skip message),
- ``error`` setup or teardown failed (the host's fault: ``category`` infra),
- ``fail``  the call failed (the guest's fault, or infra raised while the guest ran),
- ``pass``  the call passed and nothing failed after it,

with its one-line ``reason`` (recorded by the plugin as a property), its properties and the
time it took (setup + call + teardown)."""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..backends import BACKENDS
from ..model import FIRMWARES
from ..runner import safe_dirname
from . import header as facts
from .figures import key_figures

FORMAT = "refvm-report/1"
CASE_ID = re.compile(rf"(?P<scenario>[^\[\]]+)\[(?P<guest>[^\[\]]+)-(?P<firmware>"
                     rf"{'|'.join(FIRMWARES)})-(?P<backend>{'|'.join(BACKENDS)})\]")
COMMAND_CHARS = 16384  # a command line shown in the report (command.txt keeps it whole)


def case_id_of(nodeid: str) -> str | None:
    """``scenarios/boot.yaml::boot[refguest-csm-qemu]`` -> ``boot[refguest-csm-qemu]``; None
    for anything that is not a scenario case (the harness's own tests)."""
    name = nodeid.rsplit("::", 1)[-1]
    return name if CASE_ID.fullmatch(name) else None


@dataclass
class CaseResult:
    id: str
    result: str = "pending"
    reason: str = ""
    seconds: float = 0.0
    properties: dict = field(default_factory=dict)

    @property
    def parts(self) -> dict:
        return CASE_ID.fullmatch(self.id).groupdict()

    def add(self, report) -> None:
        """Fold one phase's report (setup, call, teardown) into the result."""
        self.seconds += getattr(report, "duration", 0.0) or 0.0
        self.properties.update((str(k), v) for k, v in getattr(report, "user_properties", ()))
        if report.skipped:
            self.result, self.reason = "skip", skip_message(report)
        elif report.failed:
            if report.when == "call":
                self.result = "fail"
            elif self.result != "fail":  # a teardown error after a failure keeps the failure
                self.result = "error"
            self.reason = self.reason if self.result == "fail" and report.when == "teardown" \
                else str(self.properties.get("reason") or first_line(report))
        elif report.when == "call":
            self.result = "pass"


def skip_message(report) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def first_line(report) -> str:
    text = str(getattr(report, "longrepr", "") or "").strip()
    return text.splitlines()[0] if text else "failed"


class ReportCollector:
    """A pytest plugin object: one per run, in the process that sees every report."""

    def __init__(self, artifacts: Path, state, options, release=None):
        self.artifacts = Path(artifacts)
        self.state, self.options = state, options
        self.release = release  # a release file's expectations (harness/release.py), or None
        self.cases: dict[str, CaseResult] = {}
        self.started = time.time()

    def pytest_runtest_logreport(self, report):
        case_id = case_id_of(report.nodeid)
        if case_id is not None:
            self.cases.setdefault(case_id, CaseResult(case_id)).add(report)

    def pytest_sessionfinish(self, session):
        write_all(self.build(), self.artifacts)

    def build(self) -> dict:
        guests = {g.name: g for g in self.state.guests}
        report = build_report(self.cases.values(), self.header(), guests, self.artifacts)
        if self.release is not None:
            from .expectations import check
            report["release"] = check(self.release, report["cases"])
        return report

    def header(self) -> dict:
        backend = self.state.backend
        ran = sorted({c.parts["firmware"] for c in self.cases.values()
                      if c.result in ("pass", "fail", "error")})
        try:
            described = backend.describe()
        except Exception as err:  # noqa: BLE001 - a header fact; the run's results stand
            described = f"unknown: {err}"
        return {
            "started": self.started, "finished": time.time(),
            "host": facts.host_facts(), "refvm": facts.refvm_facts(),
            "backend": {"name": backend.name, "describe": described,
                        "where": facts.backend_where(backend)},
            "firmware": facts.firmware_facts(backend, ran) if self.state.pool is None else [],
            "images": facts.image_facts(self.state.cache, self.state.guests),
            "selection": {k: list(getattr(self.options, k) or []) for k in
                          ("guest", "firmware", "scenario")},
            "workers": int(getattr(self.options, "numprocesses", 0) or 0) or 1,
        }


def build_report(cases, header: dict, guests: dict, artifacts: Path) -> dict:
    """report.json's content: the header and one entry per case, sorted by id."""
    rows = []
    for case in sorted(cases, key=lambda c: c.id):
        parts = case.parts
        props = {k: v for k, v in case.properties.items()}
        folder = artifacts / safe_dirname(case.id)
        row = dict(parts, id=case.id, result=case.result, reason=case.reason,
                   category=props.get("category"), seconds=round(case.seconds, 2),
                   host=props.get("host") or header["backend"].get("where")
                   or header["host"]["name"],
                   figures=key_figures(props, guests.get(parts["guest"])), properties=props)
        for name, key in (("console.log", "console_log"), ("command.txt", "command")):
            if (folder / name).is_file():
                row[key] = f"{folder.name}/{name}"
        if "command" in row:
            row["command_line"] = (folder / "command.txt").read_text(errors="replace") \
                .strip()[:COMMAND_CHARS]
        rows.append(row)
    return {"format": FORMAT, "header": dict(header, hosts=hosts_seen(rows)), "cases": rows}


def hosts_seen(rows) -> list[dict]:
    """Each host the cases ran on and the hypervisor there as its backend described itself
    when the case started (a pool's hosts, or a remote libvirt host: the header's "host" is
    the machine refvm ran on, not these)."""
    seen = {}
    for row in rows:
        describe = row["properties"].get("backend")
        if describe:
            seen.setdefault((str(row["host"]), str(describe)), None)
    return [{"host": host, "describe": describe} for host, describe in sorted(seen)]


def write_all(report: dict, artifacts: Path) -> list[Path]:
    """report.json, report.md and report.html in ``artifacts``, each replaced whole."""
    from .render_html import render as html
    from .render_md import render as markdown

    artifacts.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("report.json", json.dumps(report, indent=1, default=str) + "\n"),
                       ("report.md", markdown(report)), ("report.html", html(report))):
        path = artifacts / name
        tmp = path.with_name(f".{name}.{os.getpid()}")
        tmp.write_text(text)
        tmp.replace(path)
        written.append(path)
    return written
