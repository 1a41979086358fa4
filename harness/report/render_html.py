"""report.html: one self-contained file (inline CSS and SVG; no script, no fetch of any kind),
the matrix as a coloured grid whose cells link to each case's details, and the boot and
transfer times as charts."""
from __future__ import annotations

from .expectations import sections
from .figures import describe, transfers
from .grid import grids, hosts_to_show, summary_line
from .render_md import SAFE_LINK, when
from .svg import bar_chart
from .text import h

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #bbb;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eee}
td.cell{text-align:center;font-weight:bold;min-width:5em}
.pass{background:#b7e1b0}.fail{background:#f2a7a0}.error{background:#f6c97f}
.skip{background:#e4e4e4;color:#555;font-weight:normal}
p.verdict{font-weight:bold;padding:4px 8px}p.holds{background:#b7e1b0}p.broken{background:#f2a7a0}
td.cell a{color:inherit;text-decoration:none;display:block}
code,pre{font:12px ui-monospace,monospace}pre{white-space:pre-wrap;word-break:break-all}
svg.chart text{font:12px system-ui,sans-serif}svg.chart .chart-title{font-weight:bold}
"""


def _anchor(case_id: str) -> str:
    return "case-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in case_id)


def _link(text: str, target) -> str:
    if not target or not SAFE_LINK.fullmatch(str(target)):
        return ""
    return f'<a href="{h(target)}">{h(text)}</a>'


def _header(head: dict) -> list[str]:
    host, refvm = head.get("host", {}), head.get("refvm", {})
    memory = f", {host['memory_mib'] / 1024:.1f} GiB" if host.get("memory_mib") else ""
    out = ["<table class=header>",
           f"<tr><th>host</th><td>{h(host.get('name'))}: {h(host.get('os'))}, "
           f"{h(host.get('system'))} {h(host.get('release'))} {h(host.get('machine'))}, "
           f"{h(host.get('cores'))} cores{memory}</td></tr>",
           f"<tr><th>hypervisor</th><td>{h(head.get('backend', {}).get('describe'), 600)}"
           "</td></tr>",
           f"<tr><th>refvm</th><td>{h(refvm.get('version'))}, git "
           f"<code>{h(refvm.get('git'))}</code></td></tr>",
           f"<tr><th>run</th><td>{when(head.get('started'))} to {when(head.get('finished'))}"
           "</td></tr></table>",
           "<table class=firmware><tr><th>firmware</th><th>file</th><th>sha256</th></tr>"]
    for item in head.get("firmware", []):
        out.append(f"<tr><td>{h(item.get('profile'))}</td><td>{h(item.get('path', ''))}</td>"
                   f"<td><code>{h(item.get('sha256') or item.get('error', ''))}</code></td></tr>")
    hosts = hosts_to_show(head)
    if hosts:
        out.append("</table><table class=hosts><tr><th>ran on</th><th>hypervisor there</th></tr>")
        out += [f"<tr><td>{h(x.get('host'))}</td><td>{h(x.get('describe'), 600)}</td></tr>"
                for x in hosts]
    out.append("</table><table class=images><tr><th>guest image</th><th>sha256</th>"
               "<th>on this host</th></tr>")
    for item in head.get("images", []):
        out.append(f"<tr><td>{h(item.get('guest'))}</td><td><code>{h(item.get('sha256'))}"
                   f"</code></td><td>{'yes' if item.get('here') else 'no'}</td></tr>")
    out.append("</table>")
    return out


def _release(release: dict) -> list[str]:
    out = [f"<h2>Release {h(release.get('release'))}</h2>"]
    for title, items in sections(release):
        out.append(f"<h3>{h(title)}</h3><ul>" + "".join(
            f"<li>{h(what)}: {h(detail)}</li>" for what, detail in items) + "</ul>")
    return out


def _grid(grid: dict) -> list[str]:
    out = [f"<h2>{h(grid['backend'])} on {h(grid['host'])}</h2>", "<table class=matrix>",
           "<tr><th>guest</th><th>firmware</th>"
           + "".join(f"<th>{h(s)}</th>" for s in grid["scenarios"]) + "</tr>"]
    for guest, firmware in grid["rows"]:
        cells = []
        for scenario in grid["scenarios"]:
            case = grid["cells"].get((guest, firmware, scenario))
            if case is None:
                cells.append("<td></td>")
                continue
            result = case["result"] if case["result"] in ("pass", "fail", "error", "skip") \
                else "error"
            cells.append(f'<td class="cell {result}" title="{h(case.get("reason", ""))}">'
                         f'<a href="#{_anchor(case["id"])}">{h(case["result"]).upper()}</a>'
                         "</td>")
        out.append(f"<tr><td>{h(guest)}</td><td>{h(firmware)}</td>{''.join(cells)}</tr>")
    out.append("</table>")
    return out


def _charts(report: dict) -> list[str]:
    ran = [c for c in report["cases"] if c["result"] in ("pass", "fail", "error")]
    times = bar_chart("Boot and case times", [
        (c["id"], [c.get("figures", {}).get("login_seconds"), c.get("seconds")]) for c in ran],
        ["login (s)", "whole case (s)"], "s")
    moves = bar_chart("Transfers", [
        (f"{c['id']} {m['device']} {m['direction']}", [m["mb_per_s"]])
        for c in ran for m in transfers(c.get("properties", {}))], ["MB/s"], "MB/s")
    return [chart for chart in (times, moves) if chart]


def _cases(report: dict) -> list[str]:
    out = ["<h2>Cases</h2><table class=cases><tr><th>case</th><th>result</th><th>seconds</th>"
           "<th>figures</th><th>reason</th><th>logs</th></tr>"]
    for case in report["cases"]:
        result = case["result"] if case["result"] in ("pass", "fail", "error", "skip") \
            else "error"
        logs = " ".join(filter(None, (_link("console log", case.get("console_log")),
                                      _link("command line", case.get("command")))))
        command = ""
        if case.get("command_line"):
            command = (f"<details><summary>command line</summary><pre>"
                       f"{h(case['command_line'], 16384)}</pre></details>")
        out.append(f'<tr id="{_anchor(case["id"])}"><td>{h(case["id"])}</td>'
                   f'<td class="cell {result}">{h(case["result"]).upper()}</td>'
                   f"<td>{case.get('seconds', 0):.1f}</td>"
                   f"<td>{h(describe(case.get('figures', {})))}</td>"
                   f"<td>{h(case.get('reason', ''))}</td><td>{logs}{command}</td></tr>")
    out.append("</table>")
    return out


def render(report: dict) -> str:
    body = [f"<h1>refvm report</h1><p class=summary>{h(summary_line(report))}</p>"]
    release = report.get("release")
    if release:
        body.append(f'<p class="verdict {"holds" if release.get("holds") else "broken"}">'
                    f'{h(release.get("verdict"))} ({h(release.get("file"))})</p>')
    body += _header(report["header"])
    if release:
        body += _release(release)
    for grid in grids(report):
        body += _grid(grid)
    body += _charts(report) + _cases(report)
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width'>"
            "<meta http-equiv=Content-Security-Policy content=\"default-src 'none'; "
            "style-src 'unsafe-inline'; img-src data:\">"
            f"<title>refvm report</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
