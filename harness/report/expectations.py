"""Which of a release file's expectations a run's results bear out, and the verdict.

Every case of the release's matrix is expected to run and pass, unless

- the scenario itself rules it out on any host (matrix.does_not_apply: not applicable, and
  counted apart: it says nothing about the hypervisor), or
- an expected skip of the release file covers it: then it may skip, for that reason only.

So each case lands in one bucket: passed; failed (fail or error); skipped as expected (the
expected reason seen); skipped for another reason than the one expected; an unexpected skip (no
expectation covers it: it was expected to run); expected to skip but ran (said, not a fault:
an expected skip is a permission, e.g. csm on a host given --csm-firmware); not applicable; or
missing (in the release's matrix, absent from the results: an interrupted run). The release
holds when nothing failed, nothing skipped unexpectedly or for another reason, nothing is
missing and at least one case passed.
"""
from __future__ import annotations

from ..catalog import load_guests, load_scenarios, select_scenarios
from ..matrix import Case, does_not_apply

FAULTS = ("failed", "unexpected_skips", "skipped_for_another_reason", "missing")


def release_matrix(release) -> dict:
    """{case id: Case} of the release's own matrix (the guests' firmware within the release's)."""
    scenarios = select_scenarios(load_scenarios(), release.scenarios)
    guests = load_guests(release.guests)
    return {case.id: case for case in (
        Case(scenario, guest, firmware, release.backend)
        for scenario in scenarios for guest in guests for firmware in guest.firmware
        if firmware in release.firmware)}


def check(release, cases: list[dict]) -> dict:
    """The release section of report.json, from the report's case rows."""
    matrix = release_matrix(release)
    seen = {row["id"]: row for row in cases}
    out = {"file": release.path, "release": release.name, "backend": release.backend,
           "expected_skips": [], "passed": [], "failed": [], "unexpected_skips": [],
           "skipped_for_another_reason": [], "expected_skips_ran": [], "not_applicable": [],
           "missing": sorted(set(matrix) - set(seen)), "outside_release": []}
    by_expectation = {id(skip): {"line": skip.line, "expects": skip.describe(),
                                 "why": skip.why, "held": []} for skip in release.expected_skips}
    for case_id in sorted(seen):
        row, case = seen[case_id], matrix.get(case_id)
        if case is None:
            out["outside_release"].append(case_id)
            continue
        result, reason = row.get("result"), str(row.get("reason") or "")
        skip = release.expectation_for(case.scenario.name, case.scenario.base,
                                       case.guest.name, case.firmware)
        entry = {"id": case_id, "result": result, "reason": reason}
        if result == "skip" and does_not_apply(case):
            out["not_applicable"].append(entry)
        elif result in ("pass", "run"):  # run: `refvm plan`'s "this case will run"
            (out["expected_skips_ran"] if skip else out["passed"]).append(entry)
        elif result != "skip":
            out["failed"].append(entry)
        elif skip is None:
            out["unexpected_skips"].append(entry)
        elif skip.reason_matches(reason):
            by_expectation[id(skip)]["held"].append(case_id)
        else:
            out["skipped_for_another_reason"].append(dict(entry, expected=skip.describe(),
                                                          line=skip.line))
    out["expected_skips"] = list(by_expectation.values())
    faults = {key: len(out[key]) for key in FAULTS}
    out["holds"] = not any(faults.values()) and bool(out["passed"] or out["expected_skips_ran"])
    out["verdict"] = verdict_line(out, faults)
    return out


def verdict_line(out: dict, faults: dict) -> str:
    held = sum(len(e["held"]) for e in out["expected_skips"])
    ran = out["passed"] + out["expected_skips_ran"]
    planned = sum(1 for e in ran if e["result"] == "run")
    counts = (f"{len(ran) - planned} passed, " + (f"{planned} to run, " if planned else "")
              + f"{held} skipped as expected, {len(out['not_applicable'])} not applicable")
    if out["holds"]:
        return f"release {out['release']} holds: {counts}"
    wrong = ", ".join(f"{n} {key.replace('_', ' ')}" for key, n in faults.items() if n) \
        or "no case passed"
    return f"release {out['release']} does not hold: {wrong}; {counts}"


def sections(release: dict) -> list[tuple[str, list[tuple[str, str]]]]:
    """The release section as (title, [(what, detail)]) blocks, for report.md and report.html
    alike; empty blocks left out."""
    def rows(key: str, detail=lambda e: e["reason"]) -> list[tuple[str, str]]:
        return [(e["id"], detail(e)) for e in release.get(key, [])]

    expected = [(f"line {e['line']}: {e['expects']}",
                 f"held for {len(e['held'])} case(s)" + (f": {', '.join(e['held'])}"
                                                         if e["held"] else " (none seen)"))
                for e in release.get("expected_skips", [])]
    blocks = [
        ("Expected skips", expected),
        ("Failed", rows("failed", lambda e: f"{e['result']}: {e['reason']}")),
        ("Unexpected skips (expected to run)", rows("unexpected_skips")),
        ("Skipped for another reason than expected", rows(
            "skipped_for_another_reason",
            lambda e: f"{e['reason']} (expected by line {e['line']}: {e['expected']})")),
        ("Expected to skip, but ran", rows("expected_skips_ran", lambda e: e["result"])),
        ("Missing from the results", [(case_id, "in the release's matrix, not run")
                                      for case_id in release.get("missing", [])]),
        ("Not applicable (the scenario rules them out on any host)", rows("not_applicable")),
    ]
    return [(title, items) for title, items in blocks if items]
