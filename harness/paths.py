"""Where things live: the repository's guest and scenario trees, the cache, temp space."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
GUESTS_DIR = REPO_ROOT / "guests"
SCENARIOS_DIR = REPO_ROOT / "scenarios"


def cache_dir() -> Path:
    """Images and probe verdicts, shared by runs: $REFVM_CACHE or ~/.cache/refvm (outside the tree)."""
    env = os.environ.get("REFVM_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "refvm"


def temp_root() -> Path:
    """Per-run scratch (sockets, vars copies, scratch disks). Short: unix sockets max ~107 bytes."""
    return Path(os.environ.get("REFVM_TMP") or tempfile.gettempdir())
