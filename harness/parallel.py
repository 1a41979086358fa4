"""How many VMs one ``refvm run`` starts at once on this host, when not told (``-j``).

As many as there are cores (a TCG guest keeps one busy; KVM guests less, but the harness's
console reading and the guests' boot both want CPU), as fit in the memory free now (each VM:
its guest's memory plus :data:`VM_OVERHEAD` for QEMU and the pytest-xdist worker driving it,
keeping :data:`HOST_RESERVE` for everything else) and as there are cases. Memory comes from
psutil, so this works on FreeBSD too."""
from __future__ import annotations

import os

import psutil

VM_OVERHEAD = 512 << 20   # QEMU's own (TCG translation cache ~ 256 MiB) + a worker (~80 MiB)
HOST_RESERVE = 1 << 30


def default_jobs(cases: int, guest_memory: int, cores: int | None = None,
                 available: int | None = None) -> int:
    cores = cores or os.cpu_count() or 1
    if available is None:
        available = psutil.virtual_memory().available
    by_memory = (available - HOST_RESERVE) // (guest_memory + VM_OVERHEAD)
    return max(1, min(cores, by_memory, cases))
