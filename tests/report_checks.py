"""Checks of the report a real `refvm run` wrote (called by the e2e test that boots once)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from harness.firmware import QEMU_SEABIOS
from harness.hostdata import file_sha256
from harness.paths import REPO_ROOT

from tests import browser

PASS_GREEN = (0xB7, 0xE1, 0xB0)  # render_html's .pass background


def check_boot_csm_report(artifacts: Path, image: Path) -> dict:
    """report.json of `refvm run --scenario boot --firmware csm` (refguest) says what ran
    and on what, and report.html is drawn by a real browser without a fetch."""
    report = json.loads((artifacts / "report.json").read_text())
    head = report["header"]
    case, = report["cases"]
    assert (case["id"], case["result"], case["reason"]) == ("boot[refguest-csm-qemu]", "pass", "")
    assert 0 < case["figures"]["login_seconds"] < case["seconds"]
    assert case["figures"]["vcpus"] >= 1
    assert "refguest login:" in (artifacts / case["console_log"]).read_text()
    assert case["command_line"].startswith("qemu-img create ")  # the boot disk's overlay
    assert "\nqemu-system-x86_64 " in case["command_line"] and " -bios " in \
        case["command_line"]
    bios = QEMU_SEABIOS.find()
    assert head["firmware"] == [{"profile": "csm", "file": bios.name, "path": str(bios),
                                 "sha256": file_sha256(bios)}]
    image_fact = next(i for i in head["images"] if i["guest"] == "refguest")
    assert image_fact["sha256"] == file_sha256(image) and image_fact["here"]
    rev = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    assert head["refvm"]["git"].startswith(rev) and head["backend"]["describe"].startswith("QEMU")
    assert head["host"]["os"] and head["host"]["cores"] >= 1
    assert "| refguest | csm | PASS |" in (artifacts / "report.md").read_text()
    assert browser.available(), f"{browser.BROWSER} is missing (./bootstrap installs it)"
    check_in_browser(artifacts / "report.html", artifacts)
    return report


def check_in_browser(page: Path, scratch: Path) -> None:
    netlog, png = scratch / "netlog.json", scratch / "report.png"
    dom = browser.dom(page, netlog)
    assert '<td class="cell pass" title=""><a href="#case-boot_refguest-csm-qemu_">PASS</a>' \
        in dom
    assert "<svg" in dom and "Boot and case times" in dom
    assert browser.fetched_urls(netlog) == set(), "the report fetched something"
    browser.screenshot(page, png)
    assert browser.colour_count(png, PASS_GREEN) > 500  # the matrix cell and the case's row
