"""Two runs' report.json side by side: what regressed, what was fixed, what is new, what is
gone, for a release engineer comparing two releases or a patch against its base.

- regressed: passed before, fails or errors now (the exit status says so);
- fixed: failed or errored before, passes now;
- new / gone: a case only one of the two runs has;
- changed: any other change of result (pass to skip: no longer run, which hides rather than
  breaks; skip to fail ...), listed, not counted as a regression.

A report file is input like any other: read only if it is a regular file of at most
:data:`MAX_BYTES`, and each problem is one ``file:line: field: message`` line."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from ..errors import ConfigError, Problem
from .grid import RESULTS

MAX_BYTES = 64 << 20  # a report of 10,000 cases is a few MiB
MAX_CASES = 100_000


def load(path: Path) -> dict:
    """A report's cases by id: {id: {"result", "reason"}}, plus its header as ``None`` key."""
    where = str(path)
    try:
        info = os.stat(path)
    except OSError as err:
        raise ConfigError([Problem(where, 0, "(file)", err.strerror or "cannot read")]) from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError([Problem(where, 0, "(file)", "not a regular file")])
    if info.st_size > MAX_BYTES:
        raise ConfigError([Problem(where, 0, "(file)", f"larger than {MAX_BYTES >> 20} MiB")])
    try:
        data = json.loads(Path(path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError([Problem(where, 1, "(file)", f"not UTF-8: {err.reason}")]) from None
    except json.JSONDecodeError as err:
        raise ConfigError([Problem(where, err.lineno, "(file)", f"not JSON: {err.msg}")]) \
            from None
    except RecursionError:
        raise ConfigError([Problem(where, 1, "(file)", "nested too deeply")]) from None
    return _cases(data, where)


def _cases(data, where: str) -> dict:
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise ConfigError([Problem(where, 1, "cases", "not a refvm report (no list of cases)")])
    if len(data["cases"]) > MAX_CASES:
        raise ConfigError([Problem(where, 1, "cases", f"more than {MAX_CASES} cases")])
    problems, cases = [], {}
    for index, case in enumerate(data["cases"]):
        field = f"cases[{index}]"
        if not isinstance(case, dict) or not isinstance(case.get("id"), str):
            problems.append(Problem(where, 1, f"{field}.id", "must be a string"))
            continue
        if case.get("result") not in RESULTS:
            problems.append(Problem(where, 1, f"{field}.result",
                                    f"must be one of {', '.join(RESULTS)}"))
            continue
        if case["id"] in cases:
            problems.append(Problem(where, 1, f"{field}.id", "a second case with this id"))
            continue
        reason = case.get("reason")
        cases[case["id"]] = {"result": case["result"],
                             "reason": reason if isinstance(reason, str) else ""}
    if problems:
        raise ConfigError(problems)
    return cases


def compare(old: dict, new: dict) -> dict:
    """{kind: [(id, old result or None, new result or None, reason)]} for every kind."""
    out = {kind: [] for kind in ("regressed", "fixed", "new", "gone", "changed")}
    for case_id in sorted(set(old) | set(new)):
        before, after = old.get(case_id), new.get(case_id)
        if before is None:
            kind = "new"
        elif after is None:
            kind = "gone"
        elif before["result"] == after["result"]:
            continue
        elif before["result"] == "pass" and after["result"] in ("fail", "error"):
            kind = "regressed"
        elif before["result"] in ("fail", "error") and after["result"] == "pass":
            kind = "fixed"
        else:
            kind = "changed"
        out[kind].append((case_id, before and before["result"], after and after["result"],
                          (after or before)["reason"]))
    return out
