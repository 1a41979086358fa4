"""Host-side data for device checks: reproducible patterns, scratch disks, hashing of regions.

The host writes a pattern the guest must read back bit for bit, and later reads back what the
guest wrote. Patterns come from a seeded PRNG so a failing run can be reproduced exactly.
"""
from __future__ import annotations

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
