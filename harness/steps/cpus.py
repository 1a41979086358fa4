"""vCPUs: the guest sees exactly the count and topology the VM was given, and runs work on
every one of them (each CPU's busy ticks grow while as many busy loops as CPUs run)."""
from __future__ import annotations

import re

from .. import schema as s
from ..errors import GuestFailure
from ..families import families_having
from .guestops import guest_op, integers
from .registry import register


def topology_seen(output: str) -> tuple[int, int, int]:
    """(sockets, cores per socket, threads per core) from lines ``cpu package core`` (Linux's
    sysfs, per CPU), or from one line ``sockets S cores C threads T`` (FreeBSD's kernel gives
    the summary, not per-CPU ids)."""
    summary = re.search(r"^sockets (\d+) cores (\d+) threads (\d+)\s*$", output, re.MULTILINE)
    if summary:
        return tuple(int(n) for n in summary.groups())
    cpus = [tuple(line.split()) for line in output.splitlines() if len(line.split()) == 3]
    if not cpus:
        raise GuestFailure(f"cpu topology: no 'cpu package core' lines in {output!r}")
    packages = {package for _cpu, package, _core in cpus}
    cores = {(package, core) for _cpu, package, core in cpus}
    return len(packages), len(cores) // len(packages), len(cpus) // len(cores)


def busy_ticks(output: str) -> dict[str, int]:
    return {name: int(ticks) for name, ticks in
            (line.split() for line in output.splitlines() if line.startswith("cpu"))}


@register("cpu_check", s.Map({
    "load_seconds": s.F(s.Int(1, 600), default=5),
}), families=lambda _args: families_having("cpu_count", "cpu_ticks", "cpu_load"))
def cpu_check(ctx, args):
    spec = ctx.vm.spec
    count, = integers(guest_op(ctx, "cpu_count").output, "vCPU count")
    ctx.record("vcpus", spec.cpus)
    ctx.record("vcpus_seen", count)
    if count != spec.cpus:
        raise GuestFailure(f"the guest sees {count} vCPUs, the VM has {spec.cpus}")
    if spec.topology:
        wanted = tuple(spec.topology)
        ctx.record("topology", "{} sockets x {} cores x {} threads".format(*wanted))
        if "cpu_topology" not in ctx.guest.family.devices:
            ctx.record("topology_seen", f"not asked: no cpu_topology command for "
                                        f"{ctx.guest.family.name} guests")
        else:
            seen = topology_seen(guest_op(ctx, "cpu_topology").output)
            ctx.record("topology_seen", "{} sockets x {} cores x {} threads".format(*seen))
            if seen != wanted:
                raise GuestFailure("the guest sees {} sockets x {} cores x {} threads, "
                                   "the VM has {} x {} x {}".format(*seen, *wanted))
    before = busy_ticks(guest_op(ctx, "cpu_ticks").output)
    guest_op(ctx, "cpu_load", timeout=args["load_seconds"] * 4 + 60, count=count,
             seconds=args["load_seconds"])
    after = busy_ticks(guest_op(ctx, "cpu_ticks").output)
    grown = {cpu: after.get(cpu, 0) - ticks for cpu, ticks in before.items()}
    ctx.record("busy_ticks_min", min(grown.values()) if grown else 0)
    idle = sorted((cpu for cpu, delta in grown.items() if delta <= 0), key=len)
    if len(grown) != count or idle:
        raise GuestFailure(f"{count} busy loops ran, but {', '.join(idle) or 'some CPUs'} did "
                           f"no work (busy ticks before {before}, after {after})")
