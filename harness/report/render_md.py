"""report.md: the header, the matrix per backend and host, and one row per case."""
from __future__ import annotations

import re
from datetime import datetime, timezone

from .expectations import sections
from .figures import describe
from .grid import grids, hosts_to_show, summary_line
from .text import md

SAFE_LINK = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
MARK = {"pass": "PASS", "fail": "**FAIL**", "error": "**ERROR**", "skip": "skip"}


def link(text: str, target) -> str:
    return f"[{text}]({target})" if target and SAFE_LINK.fullmatch(str(target)) else ""


def when(seconds) -> str:
    try:
        return datetime.fromtimestamp(float(seconds), timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return "unknown"


def header_lines(head: dict) -> list[str]:
    host = head.get("host", {})
    memory = f", {host['memory_mib'] / 1024:.1f} GiB" if host.get("memory_mib") else ""
    refvm = head.get("refvm", {})
    lines = [
        f"- **host**: {md(host.get('name'))}: {md(host.get('os'))}, {md(host.get('system'))} "
        f"{md(host.get('release'))} {md(host.get('machine'))}, {md(host.get('cores'))} cores"
        f"{memory}",
        f"- **hypervisor**: {md(head.get('backend', {}).get('describe'))}",
        f"- **refvm**: {md(refvm.get('version'))}, git {md(refvm.get('git'))}",
        f"- **run**: {when(head.get('started'))} to {when(head.get('finished'))}",
        "", "| firmware | file | sha256 |", "|---|---|---|"]
    for item in head.get("firmware", []):
        lines.append(f"| {md(item.get('profile'))} | {md(item.get('path', ''))} | "
                     f"{md(item.get('sha256') or item.get('error', ''))} |")
    hosts = hosts_to_show(head)
    if hosts:
        lines += ["", "| ran on | hypervisor there |", "|---|---|"]
        lines += [f"| {md(x.get('host'))} | {md(x.get('describe'), 600)} |" for x in hosts]
    lines += ["", "| guest image | sha256 | on this host |", "|---|---|---|"]
    for item in head.get("images", []):
        lines.append(f"| {md(item.get('guest'))} | {md(item.get('sha256'))} | "
                     f"{'yes' if item.get('here') else 'no'} |")
    return lines


def release_lines(release: dict) -> list[str]:
    """What the release file expected, and what the run showed of it."""
    out = ["", f"## Release {md(release.get('release'))}: {md(release.get('verdict'))}"]
    for title, items in sections(release):
        out += ["", f"### {md(title)}", ""] + [f"- {md(what)}: {md(detail)}"
                                                for what, detail in items]
    return out


def render(report: dict) -> str:
    head = report["header"]
    out = ["# refvm report", "", f"{md(summary_line(report))}", ""]
    release = report.get("release")
    if release:
        out += [f"**{md(release.get('verdict'))}** ({md(release.get('file'))})", ""]
    out += header_lines(head)
    if release:
        out += release_lines(release)
    for grid in grids(report):
        out += ["", f"## {md(grid['backend'])} on {md(grid['host'])}", "",
                "| guest | firmware | " + " | ".join(md(s) for s in grid["scenarios"]) + " |",
                "|---|---|" + "---|" * len(grid["scenarios"])]
        for guest, firmware in grid["rows"]:
            cells = []
            for scenario in grid["scenarios"]:
                case = grid["cells"].get((guest, firmware, scenario))
                cells.append(MARK.get(case["result"], md(case["result"])) if case else "")
            out.append(f"| {md(guest)} | {md(firmware)} | " + " | ".join(cells) + " |")
    out += ["", "## Cases", "", "| case | result | seconds | figures | reason | logs |",
            "|---|---|---|---|---|---|"]
    for case in report["cases"]:
        logs = " ".join(filter(None, (link("console", case.get("console_log")),
                                      link("command", case.get("command")))))
        out.append(f"| {md(case['id'])} | {MARK.get(case['result'], md(case['result']))} | "
                   f"{case.get('seconds', 0):.1f} | {md(describe(case.get('figures', {})))} | "
                   f"{md(case.get('reason', ''))} | {logs} |")
    return "\n".join(out) + "\n"
