"""Decoys: things named like refvm's that refvm did not make, planted to prove it leaves them.

Shared by the reaper's unit tests and the end-to-end runs (refvm run, refvm clean, a pool run).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from harness.ownership import OWNER_FILE

DATA = b"a person's data"
REPO = Path(__file__).resolve().parent.parent


def dead_claim(directory: Path, kind: str = "run") -> Path:
    """``directory`` claimed by a process that has exited since (a SIGKILLed run)."""
    subprocess.run([sys.executable, "-c", "import sys; from harness.ownership import claim; "
                    "claim(sys.argv[1], sys.argv[2])", str(directory), kind], check=True,
                   cwd=REPO)
    return directory


def make_decoys(root: Path) -> list[Path]:
    """Plant things named like refvm's that refvm did not make (all must survive a reap) and
    one real dead run's directory, ``root/refvm-aaaaaaaa`` (which must go); return the decoys."""
    an_hour_ago = time.time() - 3600
    decoys = []
    for name in ("refvm-photos", "refvm-0123abcd", "refvm-build-notmine", "refvm-xdist-1234",
                 "refvm-fedcba98", "refvm-deadbeef-1", "refvm-00000000x"):
        folder = root / name
        folder.mkdir()
        (folder / "disk.img").write_bytes(DATA)
        decoys.append(folder)
    # refvm-fedcba98 has a marker that is not refvm's; refvm-0123abcd none at all
    (root / "refvm-fedcba98" / OWNER_FILE).write_text('{"pid": 1, "start": "0"}')
    # a copy of a dead run's directory under another name: its marker names the original
    copied = dead_claim(root / "refvm-aaaaaaaa")
    copy = root / "refvm-bbbbbbbb"
    copy.mkdir()
    (copy / OWNER_FILE).write_text((copied / OWNER_FILE).read_text())
    (copy / "disk.img").write_bytes(DATA)
    decoys.append(copy)
    (root / "refvm-notes.txt").write_text("a file")
    decoys.append(root / "refvm-notes.txt")
    (root / "refvm-11111111").symlink_to(root / "refvm-photos")
    decoys.append(root / "refvm-11111111")
    for path in decoys:
        os.utime(path, (an_hour_ago, an_hour_ago), follow_symlinks=False)
    return decoys


def intact(decoys: list[Path]) -> bool:
    """Every decoy still there, each folder's data unchanged."""
    return all(path.is_symlink() or (path.exists() and (
        not path.is_dir() or (path / "disk.img").read_bytes() == DATA)) for path in decoys)
