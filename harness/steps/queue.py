"""Deep I/O queues: at least ``depth`` requests in flight at once on one disk, with the data
checked both ways (bhyve's block_if.c serves at most BLOCKIF_MAXREQ, 128, outstanding requests
per disk since the queues were deepened from 64; a guest that reaches it exercises the queue).

Every job reads (then writes) its own slice of the scratch disk with O_DIRECT, so each keeps
one request in flight; the guest samples the disk's in-flight count while they run. Reads are
checked against the host's pattern, writes against the image file after power-off. That needs
nothing but a shell and dd (busybox), so it is the way on every guest without fio.

Where the guest has fio (a distribution), fio is the way instead: ``depth`` requests queued
through libaio with O_DIRECT on the disk's spare area (past the host's regions), random writes
that carry a crc32c per block, read back and verified by fio itself; its IOPS and MB/s are
recorded as figures, and the in-flight count the guest saw while it ran is checked. Forking 160
shells is what a systemd guest under TCG cannot do fast enough to overlap them (seen on
debian-12: 286 s for the reads, never two requests in flight). The host's pattern is then read
back and the regions written once more with dd, so the host still checks data both ways.
"""
from __future__ import annotations

import re

from .. import schema as s
from ..errors import GuestFailure
from ..families import families_having
from ..hostdata import Region, read_region, sha256
from .disks import _disk, find_disk, read_host_regions, write_guest_regions
from .guestops import guest_op, last_line
from .registry import register

HASH = re.compile(r"^[0-9a-f]{64}$")
MIN_FIO_BYTES = 512 * 1024  # the spare area fio needs at least (128 x 4 KiB is 512 KiB)


def fio_area(disk_size: int, regions) -> tuple[int, int]:
    """(offset, size) of the disk past every host region, from the next MiB on; size 0 when
    too little is left for fio."""
    end = max((r.offset + r.length for r in regions), default=0)
    offset = -(-end // (1 << 20)) << 20
    size = disk_size - offset
    return (offset, size) if size >= MIN_FIO_BYTES else (offset, 0)


def parse_fio(output: str) -> dict:
    """``inflight_max``, ``fio_status`` and fio's terse v3 line (fields 5: error; 7 and 8: read
    KiB/s and IOPS, here the verify pass; 48 and 49: write KiB/s and IOPS)."""
    seen = re.search(r"inflight_max (\d+)", output)
    status = re.search(r"fio_status (\d+)", output)
    terse = next((line.split(";") for line in output.splitlines()
                  if line.startswith("3;fio-")), None)
    if not seen or not status or terse is None or len(terse) < 50:
        raise GuestFailure(f"fio: expected 'inflight_max N', 'fio_status S' and fio's terse "
                           f"line, got {output[-600:]!r}")
    try:
        return {"inflight_max": int(seen.group(1)), "status": int(status.group(1)),
                "error": int(terse[4]), "read_kib": int(terse[5]),
                "read_bw_kib": int(terse[6]), "read_iops": float(terse[7]),
                "write_kib": int(terse[46]), "write_bw_kib": int(terse[47]),
                "write_iops": float(terse[48])}
    except ValueError:
        raise GuestFailure(f"fio: unreadable terse line {';'.join(terse)[:300]!r}") from None


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
    most_f = _fio_phase(ctx, attach, dev, args["depth"], block)
    if most_f is not None:
        read_host_regions(ctx, attach, facts, dev)
        write_guest_regions(ctx, attach, facts, dev)
        _enough(attach, most_f, args["depth"], f"fio at iodepth {args['depth']}", tags)
        return
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
    _enough(attach, max(most, most_w), args["depth"], f"{jobs} jobs", tags)


def _enough(attach, most: int, depth: int, how: str, tags) -> None:
    if most < depth:
        raise GuestFailure(f"disk {attach.id}: at most {most} requests were in flight at once "
                           f"({how}; the driver's queue size: {tags}), not the {depth} the "
                           "scenario asks for")


def _fio_phase(ctx, attach, dev: str, depth: int, block: int) -> int | None:
    """fio with data verification where the guest has it (see module docstring); returns the
    most requests seen in flight, or None where fio did not run (the reason recorded)."""
    if "fio_verify" not in ctx.guest.family.devices or \
            guest_op(ctx, "fio_available").output.strip().splitlines()[-1:] != ["fio"]:
        ctx.record(f"{attach.id}_fio", "not run: the guest has no fio (shell jobs)")
        return None
    offset, size = fio_area(attach.size, attach.regions)
    if not size:
        ctx.record(f"{attach.id}_fio", f"not run: less than {MIN_FIO_BYTES} bytes past the "
                                       "host's regions (shell jobs)")
        return None
    out = guest_op(ctx, "fio_verify", timeout=1800, check=False, dev=dev,
                   name=dev.rsplit("/", 1)[-1], depth=depth, block=block, offset=offset,
                   size=size).output
    fio = parse_fio(out)
    if fio["status"] != 0 or fio["error"] != 0:
        raise GuestFailure(f"disk {attach.id}: fio (iodepth {depth}, verify=crc32c) failed: "
                           f"exit {fio['status']}, error {fio['error']}; output:\n{out[-800:]}")
    if fio["read_kib"] * 1024 != size or fio["write_kib"] * 1024 != size:
        raise GuestFailure(f"disk {attach.id}: fio wrote {fio['write_kib']} KiB and verified "
                           f"{fio['read_kib']} KiB, not the {size // 1024} KiB asked")
    for key in ("inflight_max", "write_iops", "write_bw_kib", "read_iops", "read_bw_kib"):
        ctx.record(f"{attach.id}_fio_{key.replace('read', 'verify')}", fio[key])
    ctx.record(f"{attach.id}_fio", f"iodepth {depth}, {size} bytes written and verified "
                                   "(crc32c)")
    return fio["inflight_max"]
