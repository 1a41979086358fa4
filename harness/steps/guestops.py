"""Helpers for steps that run a family's device command and read hashes and numbers back."""
from __future__ import annotations

import re

from ..errors import CommandFailed, GuestFailure

SHA256 = re.compile(r"\b[0-9a-f]{64}\b")


def guest_op(ctx, op: str, timeout: float = 120.0, check: bool = True, **values):
    """Run the guest family's command for ``op``; fail (guest) on a non-zero exit."""
    command = ctx.guest.device_command(op, **values)
    result = ctx.guest.run(command, timeout=ctx.remaining(timeout))
    if check and result.status != 0:
        raise CommandFailed(f"{op}: {command!r} exited {result.status}; output:\n{result.output}")
    return result


def first_sha256(output: str, what: str) -> str:
    match = SHA256.search(output)
    if not match:
        raise GuestFailure(f"{what}: no sha256 in the guest's output {output!r}")
    return match.group(0)


def integers(output: str, what: str, count: int = 1) -> list[int]:
    numbers = [int(n) for n in re.findall(r"^\s*(\d+)\s*$", output, re.MULTILINE)]
    if len(numbers) < count:
        raise GuestFailure(f"{what}: expected {count} number(s) in the guest's output {output!r}")
    return numbers[:count]


def last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else ""
