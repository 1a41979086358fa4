"""The pytest side of a pool of hosts (``--hosts``): distribution mode, pinning, the summary.

harness/hosts.py decides which host slot runs which case; this module tells pytest-xdist
(each slot is an ``xdist_group``, run with ``--dist loadgroup``) and reports per host.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from ..hosts import HostPool


def host_label(host) -> str:
    """The ``host`` property of a result: name and URI."""
    return f"{host.name} {host.uri}"


def distribute_by_host(config) -> None:
    """With -n, a pool needs --dist loadgroup: one host slot's cases on one worker, in turn.

    pytest-xdist turns a bare -n into --dist load, which would let two workers run one
    slot's cases at once (more VMs on a host than its max_vms): loadgroup replaces it.
    Workers parse only the command line, so a worker is told too (xdist's own flag for
    "tag items with their xdist_group"; tests/test_pool_e2e.py checks the groups hold)."""
    if hasattr(config, "workerinput"):  # an xdist worker: its controller chose loadgroup
        config.option.loadgroup = True
        return
    dist = getattr(config.option, "dist", "no")
    if not getattr(config.option, "numprocesses", None) or dist == "loadgroup":
        return
    if dist not in ("no", "load"):
        raise pytest.UsageError(f"--hosts runs with --dist loadgroup (one worker per host "
                                f"slot), not --dist {dist}")
    config.option.dist = "loadgroup"


def pin_to_hosts(pool: HostPool, items) -> None:
    """Give every runnable scenario item (``case``, ``skip_reason``, ``host``) a host slot and
    its xdist group; a case no host can run gets the reason instead. Deterministic, so every
    xdist worker, collecting the same items in the same order, pins them alike."""
    runnable = [item for item in items
                if getattr(item, "case", None) is not None and not item.skip_reason]
    slots = pool.assign((item.nodeid, item.case.firmware, item.case.backend)
                        for item in runnable)
    for item in runnable:
        slot = slots[item.nodeid]
        if slot is None:
            item.skip_reason = pool.why_none(item.case.firmware, item.case.backend)
            continue
        item.host = slot.host
        item.add_marker(pytest.mark.xdist_group(slot.group))


def write_host_summary(terminalreporter, pool: HostPool) -> None:
    """One line per host: what it ran and how that went."""
    by_host: dict[str, Counter] = defaultdict(Counter)
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            host = dict(getattr(report, "user_properties", ())).get("host")
            if host and (report.when == "call" or not report.passed):
                by_host[host][outcome] += 1
    terminalreporter.section("refvm hosts")
    for host in pool.hosts:
        counts = by_host.get(host_label(host), Counter())
        text = ", ".join(f"{n} {outcome}" for outcome, n in counts.items()) or "no case"
        terminalreporter.write_line(f"{host.name} ({host.uri}, max_vms {host.max_vms}): {text}")
