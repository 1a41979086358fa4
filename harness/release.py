"""Release validation files (``releases/14.3.yaml``): a bhyve release's matrix and its skips.

A release file names what validating one FreeBSD release's bhyve means: the backend, the
guests, the firmware profiles, the scenarios, and the skips expected on such a host, each with
the reason it must be skipped for (exact text, or a regular expression searched in the
reason). ``refvm run --release FILE`` runs exactly that matrix and the report says which
expectations held (harness/report/expectations.py); ``refvm plan --release FILE`` shows it.

The file is hostile input like a guest file: every problem is one ``file:line: field:
message`` (schema.py), names must exist (a guest, a scenario, a firmware the release lists),
and an expected skip must select at least one case of the release's own matrix, so a typo
cannot quietly expect nothing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from . import schema as s
from .backends import BACKENDS
from .catalog import load_guests, load_scenarios
from .errors import ConfigError, Problem, show
from .model import FIRMWARES
from .yamlfile import load_text, read_text

RELEASE_RE = re.compile(r"(\d{1,2})\.(\d{1,2})")
SELECTORS = ("scenario", "guest", "firmware")


def parse_freebsd_release(text: str) -> tuple[int, int]:
    """``"14.3"`` -> (14, 3); ValueError for anything that is not a FreeBSD release X.Y (11.0
    or later, the first with the bhyve facts the backend knows)."""
    match = RELEASE_RE.fullmatch(text) if isinstance(text, str) else None
    if not match or not 11 <= int(match.group(1)) <= 99:
        raise ValueError(f"must be a FreeBSD release such as 13.2 (11.0 or later), got "
                         f"{show(text)}")
    return int(match.group(1)), int(match.group(2))


class ReleaseNumber(s.Kind):
    """X.Y as a quoted string: unquoted, YAML reads 14.10 as the number 14.1."""

    def check(self, value, where):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise s.Invalid(f"write the release as a quoted string such as '14.3', got the "
                            f"number {show(value)} (YAML reads 14.10 as 14.1)")
        try:
            return parse_freebsd_release(value)
        except ValueError as err:
            raise s.Invalid(str(err)) from None


class Names(s.Kind):
    """One name or a list of names: always a tuple after."""

    def __init__(self, item: s.Kind):
        self.one = s.OneOrList(item, max_items=64)

    def check(self, value, where):
        return tuple(self.one.check(value, where))


def _one_reason(skip: dict, where: s.Where, raw) -> None:
    given = [k for k in ("reason", "reason_pattern") if skip.get(k) is not None]
    if len(given) != 1:
        where.report("needs exactly one of reason (the exact text) or reason_pattern (a "
                     "regular expression searched in the reason)"
                     + (", got both" if len(given) == 2 else ""))


EXPECTED_SKIP = s.Map({
    "scenario": s.F(Names(s.Name()), doc="the cases this expectation covers; absent: any"),
    "guest": s.F(Names(s.Name())),
    "firmware": s.F(Names(s.Enum(*FIRMWARES))),
    "reason": s.F(s.Str(), doc="the skip's reason, whole"),
    "reason_pattern": s.F(s.Regex(), doc="searched in the skip's reason"),
    "why": s.F(s.Str(), doc="for people: why a host of this release skips these"),
}, extra=_one_reason)

RELEASE = s.Map({
    "release": s.F(ReleaseNumber(), required=True),
    "description": s.F(s.Str()),
    "backend": s.F(s.Enum(*BACKENDS), required=True),
    "guests": s.F(s.ListOf(s.Name(), unique=True, nonempty=True), required=True),
    "firmware": s.F(s.ListOf(s.Enum(*FIRMWARES), unique=True, nonempty=True), required=True),
    "scenarios": s.F(s.ListOf(s.Name(), unique=True, nonempty=True), required=True),
    "expected_skips": s.F(s.ListOf(EXPECTED_SKIP), default=[]),
})


@dataclass(frozen=True)
class ExpectedSkip:
    scenario: tuple  # names (a scenario's or its base's); empty: any
    guest: tuple
    firmware: tuple
    reason: str | None
    reason_pattern: str | None
    why: str | None
    line: int

    def covers(self, scenario_name: str, scenario_base: str | None, guest: str,
               firmware: str) -> bool:
        return ((not self.scenario or scenario_name in self.scenario
                 or scenario_base in self.scenario)
                and (not self.guest or guest in self.guest)
                and (not self.firmware or firmware in self.firmware))

    def reason_matches(self, reason: str) -> bool:
        if self.reason is not None:
            return reason.strip() == self.reason.strip()
        return re.search(self.reason_pattern, reason) is not None

    def describe(self) -> str:
        where = ", ".join(f"{k} {'/'.join(getattr(self, k))}" for k in SELECTORS
                          if getattr(self, k)) or "every case"
        wanted = f"reason {self.reason!r}" if self.reason is not None else \
            f"reason matching /{self.reason_pattern}/"
        return f"{where}: {wanted}"


@dataclass(frozen=True)
class Release:
    path: str
    release: tuple
    description: str | None
    backend: str
    guests: tuple
    firmware: tuple
    scenarios: tuple
    expected_skips: tuple

    @property
    def name(self) -> str:
        return f"{self.release[0]}.{self.release[1]}"

    def expectation_for(self, scenario_name, scenario_base, guest, firmware):
        """The first expected skip covering this case, or None: the case must run."""
        for skip in self.expected_skips:
            if skip.covers(scenario_name, scenario_base, guest, firmware):
                return skip
        return None


def parse_release(text: str, filename: str) -> Release:
    """A Release from YAML text; ConfigError with every problem (file:line: field: message).
    Names are checked against the repository's guests and scenarios."""
    raw = load_text(text, filename)
    problems: list[Problem] = []
    if not isinstance(raw, dict):
        raise ConfigError([Problem(filename, getattr(raw, "line", 1) or 1, "(top)",
                                   "must be a mapping (release: ..., backend: ..., ...)")])
    data = s.validate(raw, RELEASE, filename, problems)
    if problems:
        raise ConfigError(problems)
    top = s.Where(filename, "", raw.line, problems)
    known = _known()
    _check_names(data, raw, top, known)
    skips = []
    for index, (skip, raw_skip) in enumerate(zip(data["expected_skips"],
                                                 raw.get("expected_skips") or [])):
        where = top.at(raw, "expected_skips").at(raw["expected_skips"], index)
        _check_selectors(skip, raw_skip, where, data, known)
        skips.append(ExpectedSkip(skip["scenario"] or (), skip["guest"] or (),
                                  skip["firmware"] or (), skip["reason"], skip["reason_pattern"],
                                  skip["why"], where.line))
    if problems:
        raise ConfigError(problems)
    return Release(filename, data["release"], data["description"], data["backend"],
                   tuple(data["guests"]), tuple(data["firmware"]), tuple(data["scenarios"]),
                   tuple(skips))


def _known():
    guests = {g.name: g for g in load_guests()}
    scenarios = load_scenarios()
    names = {sc.name for sc in scenarios} | {sc.base for sc in scenarios if sc.base}
    return guests, scenarios, names


def _check_names(data: dict, raw, top: s.Where, known) -> None:
    guests, _, scenario_names = known
    for field, known in (("guests", guests), ("scenarios", scenario_names)):
        for index, name in enumerate(data[field]):
            if name not in known:
                top.at(raw, field).at(raw[field], index).report(
                    f"no {field[:-1]} {show(name)}; known: {', '.join(sorted(known))}")


def _check_selectors(skip: dict, raw_skip, where: s.Where, data: dict, known) -> None:
    """Each selector names something of the release, and the whole selects some case."""
    all_guests, scenarios, _ = known
    listed = set(data["scenarios"])  # a scenario's base name stands for all its variants
    chosen = {"guest": set(data["guests"]), "firmware": set(data["firmware"]),
              "scenario": listed | {sc.name for sc in scenarios if sc.base in listed}}
    bad = False
    for key in SELECTORS:
        for name in skip[key] or ():
            if name not in chosen[key]:
                bad = True
                where.at(raw_skip, key).report(
                    f"{show(name)} is not one of this release's {key}s "
                    f"({', '.join(sorted(chosen[key]))})")
    if bad:
        return
    guests = [g for name, g in all_guests.items() if name in chosen["guest"]]
    expectation = ExpectedSkip(skip["scenario"] or (), skip["guest"] or (),
                               skip["firmware"] or (), None, "", None, 0)
    for scenario in scenarios:
        if scenario.name not in chosen["scenario"]:
            continue
        for guest in guests:
            for firmware in guest.firmware:
                if firmware in chosen["firmware"] and expectation.covers(
                        scenario.name, scenario.base, guest.name, firmware):
                    return
    where.report("selects no case of this release's matrix (no such guest x firmware x "
                 "scenario among the guests' own firmware)")


def load_release(path: Path) -> Release:
    return parse_release(read_text(Path(path), "--release"), str(path))
