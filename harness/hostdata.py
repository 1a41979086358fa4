"""Host-side data for device checks: reproducible patterns, scratch disks, hashing of regions.

The host writes a pattern the guest must read back bit for bit, and later reads back what the
guest wrote. Patterns come from a seeded PRNG so a failing run can be reproduced exactly.
"""
from __future__ import annotations

import errno
import hashlib
import os
import random
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Region:
    """A byte range of a disk, read and written in ``block``-sized requests."""

    offset: int
    length: int
    block: int

    @property
    def skip(self) -> int:
        return self.offset // self.block

    @property
    def count(self) -> int:
        return self.length // self.block

    def __str__(self) -> str:
        return f"{_human(self.length)} at offset {_human(self.offset)} in {_human(self.block)} blocks"


def _human(n: int) -> str:
    for unit, size in (("M", 1 << 20), ("K", 1 << 10)):
        if n and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}B"


def pattern(seed: int, region: Region) -> bytes:
    """The host's pattern for one region: same seed and region, same bytes, on any host."""
    return random.Random(f"refvm:{seed}:{region.offset}:{region.length}").randbytes(region.length)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_scratch_disk(path: Path, size: int) -> None:
    """A sparse file of exactly ``size`` bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)


def write_region(path: Path, region: Region, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(region.offset)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def read_region(path: Path, region: Region) -> bytes:
    with open(path, "rb") as f:
        f.seek(region.offset)
        return f.read(region.length)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


COPY_CHUNK = 1 << 20


def sparse_copy(source: Path, dest: Path) -> None:
    """Copy ``source`` to ``dest`` keeping its holes: a 20 GB guest image that holds 2 GB of
    data costs 2 GB. Data ranges are found with SEEK_DATA/SEEK_HOLE (Linux, FreeBSD); on a
    file system without them, chunks of zeros are skipped instead. (shutil copies every byte,
    and neither FreeBSD's cp nor Python has a portable sparse copy.)

    Each data range goes through copy_file_range(2) where the OS has it: a file system that
    clones blocks (XFS and btrfs on Linux, ZFS with block cloning on FreeBSD 14 and later)
    then shares them, a copy-on-write view that costs neither the time nor the space of a
    copy; elsewhere the kernel copies. Not seen here: these machines' ext4 copies."""
    size = os.path.getsize(source)
    with open(source, "rb") as src, open(dest, "wb") as out:
        out.truncate(size)
        for start, end, known in _data_ranges(src.fileno(), size):
            if known:
                start = _kernel_copy(src.fileno(), out.fileno(), start, end)
            src.seek(start)
            out.seek(start)
            while start < end:
                chunk = src.read(min(COPY_CHUNK, end - start))
                if not chunk:
                    break
                if chunk.count(0) != len(chunk):
                    out.seek(start)
                    out.write(chunk)
                start += len(chunk)


def _kernel_copy(src: int, out: int, start: int, end: int) -> int:
    """copy_file_range(2) of [start, end); returns where it stopped (``end`` when done, less
    where the kernel cannot: the caller copies the rest by reading and writing)."""
    copy_range = getattr(os, "copy_file_range", None)
    while copy_range is not None and start < end:
        try:
            done = copy_range(src, out, min(end - start, 1 << 30), start, start)
        except OSError as err:
            if err.errno in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP,
                             errno.EPERM):
                return start
            raise
        if done <= 0:
            return start
        start += done
    return start


def _data_ranges(fd: int, size: int):
    """(start, end, known) of each range that may hold data; ``known`` is False for the whole
    rest when the file system cannot say where its holes are (then zeros are skipped by
    reading: a kernel copy of that range would write them all)."""
    if not hasattr(os, "SEEK_DATA"):
        yield 0, size, False
        return
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as err:
            if err.errno != errno.ENXIO:  # ENXIO: only a hole from here on
                yield offset, size, False  # the file system cannot say
            return
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, end, True
        offset = end
