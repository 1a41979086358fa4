"""Clean-up that finishes: every step runs even when a step before it raised.

Teardown is where a second Ctrl-C or SIGTERM lands (a person pressing it again while VMs stop,
a CI runner signalling twice) and where libvirt or a child process may fail. Every destroy()
and close() here runs once (a second call is a no-op), so the first call must get through all
of its steps. The first exception is raised again once every step has had its turn, so an
interrupt is still an interrupt and an error is still reported.
"""
from __future__ import annotations

from typing import Callable


def run_all(*steps: Callable[[], object]) -> None:
    """Call each step in order, whatever the ones before raised; then raise the first error."""
    first: BaseException | None = None
    for step in steps:
        try:
            step()
        except BaseException as err:  # noqa: BLE001 - held, then raised: nothing is lost
            if first is None:
                first = err
    if first is not None:
        raise first
