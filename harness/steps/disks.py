"""Block device steps (virtio-blk, NVMe, AHCI): data moved both ways and checked both sides.

Before boot the host wrote a seeded pattern into each region of the scratch disk
(Run.prepare_attachments). ``disk_check`` makes the guest read every region back and compare
hashes, then write fresh random data into each region and report its hashes; after the VM has
stopped, ``disk_verify`` reads the image file on the host and compares. Regions are read and
written in the scenario's request sizes, so transfers cross request-size boundaries.
"""
from __future__ import annotations

import os
import time

from .. import schema as s
from ..errors import GuestFailure
from ..hostdata import file_sha256, read_region, sha256
from ..model import DiskAttach
from .registry import register
from .guestops import first_sha256, guest_op, integers, last_line

DISK_ARG = s.Map({"disk": s.F(s.Name(), required=True)})


def _disk(ctx, args) -> tuple[DiskAttach, dict]:
    attach = ctx.case.scenario.attachment(DiskAttach, args["disk"])
    return attach, ctx.vm.facts[f"disk:{attach.id}"]


def find_disk(ctx, attach: DiskAttach) -> str:
    found = guest_op(ctx, "disk_by_serial", serial=attach.serial).output.split()
    if len(found) != 1:
        raise GuestFailure(f"disk {attach.id}: expected one device with serial {attach.serial}, "
                           f"the guest found {found or 'none'}")
    return found[0]


@register("disk_check", DISK_ARG)
def disk_check(ctx, args):
    """Size exact; host pattern read back intact; guest writes recorded (or refused if ro)."""
    attach, facts = _disk(ctx, args)
    dev = find_disk(ctx, attach)
    name = os.path.basename(dev)
    size, = integers(guest_op(ctx, "disk_size", name=name, dev=dev).output, "disk size")
    ctx.record(f"{attach.id}_device", dev)
    ctx.record(f"{attach.id}_size", size)
    if size != attach.size:
        raise GuestFailure(f"disk {attach.id} ({dev}): the guest sees {size} bytes, "
                           f"the scenario attached {attach.size}")
    if attach.sector_size:
        sector, = integers(guest_op(ctx, "disk_sector_size", name=name, dev=dev).output,
                           "sector size")
        if sector != attach.sector_size:
            raise GuestFailure(f"disk {attach.id} ({dev}): logical sector size {sector}, "
                               f"expected {attach.sector_size}")
    read_host_regions(ctx, attach, facts, dev)
    if attach.readonly:
        result = guest_op(ctx, "disk_write_probe", check=False, dev=dev)
        if result.status == 0:
            raise GuestFailure(f"disk {attach.id} ({dev}) is read-only, but a write succeeded")
        ctx.record(f"{attach.id}_write_refused", last_line(result.output))
        return
    write_guest_regions(ctx, attach, facts, dev)


def read_host_regions(ctx, attach, facts: dict, dev: str) -> None:
    """The guest reads each region the host wrote: the hashes must be the host's."""
    started, moved = time.monotonic(), 0
    for region in attach.regions:
        out = guest_op(ctx, "disk_read_sha256", dev=dev, block=region.block, skip=region.skip,
                       count=region.count).output
        seen, wrote = first_sha256(out, f"read of {region}"), facts["host_sha"][region]
        if seen != wrote:
            raise GuestFailure(f"disk {attach.id} ({dev}): {region}: the guest read sha256 "
                               f"{seen}, the host wrote {wrote}")
        moved += region.length
    ctx.record(f"{attach.id}_host_to_guest_bytes", moved)
    ctx.record(f"{attach.id}_host_to_guest_sha256",
               " ".join(facts["host_sha"][r] for r in attach.regions))
    ctx.record(f"{attach.id}_read_seconds", round(time.monotonic() - started, 2))


def write_guest_regions(ctx, attach, facts: dict, dev: str) -> None:
    """The guest writes random data over each region, recording its hashes for disk_verify."""
    started, moved = time.monotonic(), 0
    for region in attach.regions:
        out = guest_op(ctx, "disk_write_random", dev=dev, block=region.block, skip=region.skip,
                       count=region.count, length=region.length).output
        facts["guest_sha"][region] = first_sha256(out, f"write of {region}")
        moved += region.length
    ctx.record(f"{attach.id}_guest_to_host_bytes", moved)
    ctx.record(f"{attach.id}_guest_to_host_sha256",
               " ".join(facts["guest_sha"][r] for r in attach.regions))
    ctx.record(f"{attach.id}_write_seconds", round(time.monotonic() - started, 2))


@register("disk_verify", DISK_ARG)
def disk_verify(ctx, args):
    """After the VM stopped: what the guest wrote is in the image file; a ro disk is unchanged."""
    attach, facts = _disk(ctx, args)
    if ctx.vm.machine.poll() is None:
        raise GuestFailure("disk_verify reads the image after the VM stopped: put it after "
                           "poweroff in the scenario")
    path = facts["path"]
    if attach.readonly:
        now = file_sha256(path)
        if now != facts["file_sha"]:
            raise GuestFailure(f"read-only disk {attach.id} changed: sha256 {facts['file_sha']} "
                               f"before boot, {now} after")
        return
    if not facts["guest_sha"]:
        raise GuestFailure(f"disk_verify {attach.id}: the guest wrote nothing (no disk_check?)")
    for region, guest_sha in facts["guest_sha"].items():
        on_disk = sha256(read_region(path, region))
        if on_disk != guest_sha:
            raise GuestFailure(f"disk {attach.id}: {region}: the guest wrote sha256 {guest_sha}, "
                               f"the image file holds {on_disk}")
    ctx.record(f"{attach.id}_verified_regions", len(facts["guest_sha"]))


@register("nvme_identity", s.Map({
    "disk": s.F(s.Name(), required=True),
    "model": s.F(s.Str(), doc="expected model number; default: what the backend presents"),
}))
def nvme_identity(ctx, args):
    """The controller reports the serial the scenario set and the expected model number."""
    attach, _facts = _disk(ctx, args)
    dev = find_disk(ctx, attach)
    lines = [line.strip() for line in guest_op(ctx, "nvme_identity", dev=dev,
                                                 name=os.path.basename(dev)).output.splitlines()
             if line.strip()]
    if len(lines) < 2:
        raise GuestFailure(f"nvme {attach.id}: expected serial and model, got {lines!r}")
    serial, model = lines[0], lines[1]
    if len(lines) > 2:  # how the guest read them: nvme-cli (Identify Controller) or sysfs
        ctx.record(f"{attach.id}_identity_source", lines[2])
    want_model = args["model"] or ctx.vm.machine.nvme_model
    ctx.record(f"{attach.id}_serial", serial)
    ctx.record(f"{attach.id}_model", model)
    if serial != attach.serial:
        raise GuestFailure(f"nvme {attach.id}: serial {serial!r}, the scenario set {attach.serial!r}")
    if model != want_model:
        raise GuestFailure(f"nvme {attach.id}: model {model!r}, expected {want_model!r}")
