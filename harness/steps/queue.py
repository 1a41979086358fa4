"""Deep I/O queues: at least ``depth`` requests in flight at once on one disk, with the data
checked both ways (bhyve's block_if.c serves at most BLOCKIF_MAXREQ, 128, outstanding requests
per disk since the queues were deepened from 64; a guest that reaches it exercises the queue).

Every job reads (then writes) its own slice of the scratch disk with O_DIRECT, so each keeps
one request in flight; the guest samples the disk's in-flight count while they run. Reads are
checked against the host's pattern, writes against the image file after power-off.
"""
from __future__ import annotations

import re

from .. import schema as s
from ..errors import GuestFailure
from ..families import families_having
from ..hostdata import Region, read_region, sha256
from .disks import _disk, find_disk
from .guestops import guest_op, last_line
from .registry import register

HASH = re.compile(r"^[0-9a-f]{64}$")


def _run_jobs(ctx, op: str, dev: str, jobs: int, count: int, block: int) -> tuple[int, list]:
    out = guest_op(ctx, op, timeout=1800, dev=dev, name=dev.rsplit("/", 1)[-1], jobs=jobs,
                   count=count, block=block).output
    seen = re.search(r"inflight_max (\d+)", out)
    hashes = [line.strip() for line in out.splitlines() if HASH.match(line.strip())]
    if not seen or len(hashes) != jobs:
        raise GuestFailure(f"{op}: expected 'inflight_max N' and {jobs} hashes, got "
                           f"{out[-400:]!r}")
    return int(seen.group(1)), hashes


@register("queue_depth", s.Map({
    "disk": s.F(s.Name(), required=True),
    "jobs": s.F(s.Int(1, 1024), default=160),
    "depth": s.F(s.Int(1, 1024), default=128, doc="requests that must be in flight at once"),
    "block": s.F(s.Size(minimum=512), default=4096),
}), families=lambda _args: families_having("queue_read", "queue_write", "queue_size"))
def queue_depth(ctx, args):
    attach, facts = _disk(ctx, args)
    dev = find_disk(ctx, attach)
    jobs, block = args["jobs"], args["block"]
    region = attach.regions[0]
    count = region.length // block // jobs
    if region.offset != 0 or count < 1:
        raise GuestFailure(f"queue_depth needs the disk's first region to start at 0 and hold "
                           f"{jobs} x {block} bytes at least")
    slices = [Region(i * count * block, count * block, block) for i in range(jobs)]
    # A number, or the guest's words where its driver exports none (FreeBSD's vtblk).
    said = guest_op(ctx, "queue_size", name=dev.rsplit("/", 1)[-1]).output
    numbers = re.findall(r"^\s*(\d+)\s*$", said, re.MULTILINE)
    tags = int(numbers[0]) if numbers else (last_line(said)[:100] or "not reported")
    ctx.record(f"{attach.id}_queue_tags", tags)
    # Reads: the host's pattern, still untouched in the image file, slice by slice.
    wanted = [sha256(read_region(facts["path"], piece)) for piece in slices]
    most, seen = _run_jobs(ctx, "queue_read", dev, jobs, count, block)
    ctx.record(f"{attach.id}_read_inflight_max", most)
    bad = [i for i, (got, want) in enumerate(zip(seen, wanted)) if got != want]
    if bad:
        raise GuestFailure(f"disk {attach.id}: {len(bad)} of {jobs} concurrent readers read "
                           f"wrong data (first: job {bad[0]}, {slices[bad[0]]})")
    most_w, written = _run_jobs(ctx, "queue_write", dev, jobs, count, block)
    ctx.record(f"{attach.id}_write_inflight_max", most_w)
    facts["guest_sha"].update(zip(slices, written))  # disk_verify checks them after power-off
    if max(most, most_w) < args["depth"]:
        raise GuestFailure(f"disk {attach.id}: at most {max(most, most_w)} requests were in "
                           f"flight at once ({jobs} jobs; the driver's queue size: {tags}), "
                           f"not the {args['depth']} the scenario asks for")
