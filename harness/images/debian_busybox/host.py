"""Running host programs for the builder: argv lists only, and failures as one-line errors.

Why this exists: every step shells out (dpkg-deb, apt-get, busybox, grub-mkimage, mtools,
xorriso). They share one way to fail: a missing program names the Debian package to install,
and a failed one becomes a :class:`RecipeError` with its last line of output instead of a
traceback. The argv is never a shell string, so nothing from a recipe is shell-parsed.
"""
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Sequence

from .recipe import RecipeError

# Host programs the build runs, with the Debian package to install when one is missing.
HOST_TOOLS = {"dpkg-deb": "dpkg", "xorriso": "xorriso", "mformat": "mtools", "mcopy": "mtools"}


def _require_tools(tools: Mapping[str, str]) -> None:
    """Fail before any work when a host program is missing, naming what to apt-get install."""
    missing = [(tool, package) for tool, package in tools.items() if shutil.which(tool) is None]
    if missing:
        names = ", ".join(f"{tool} (Debian package {package})" for tool, package in missing)
        packages = " ".join(sorted({package for _, package in missing}))
        raise RecipeError(f"missing host tools: {names}; install with: apt-get install {packages}")


def _last_line(output: bytes) -> str:
    lines = [line.strip() for line in output.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _run(argv: Sequence[object], *, what: str | None = None, check: bool = True,
         cwd: Path | None = None, env: Mapping[str, str] | None = None,
         input: bytes | None = None) -> subprocess.CompletedProcess:
    """Run an argv list (never a shell string), capturing output; failures become one line."""
    args = [str(a) for a in argv]
    try:
        proc = subprocess.run(args, cwd=cwd, env=env, input=input, capture_output=True,
                              check=False)
    except OSError as err:
        raise RecipeError(f"cannot run {args[0]}: {err.strerror or err}") from None
    if check and proc.returncode != 0:
        raise RecipeError(f"{what or args[0]} failed (exit {proc.returncode}): "
                          f"{_last_line(proc.stderr or proc.stdout)}")
    return proc
