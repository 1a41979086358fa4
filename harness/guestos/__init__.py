"""Guest-OS drivers: everything OS-specific between a console transport and the steps.

A driver gets from a booted VM's console to a shell (boot loader, login, root), runs one
command and returns its status and output, and knows its OS family's commands (firmware,
power-off, devices: harness/families/*.yaml) and failure patterns. Steps talk to the driver,
never to the console. Linux and FreeBSD share the Unix-shell driver (differences are data:
prompts, shell flavour, tools); Windows over EMS/SAC is a driver of its own (harness/guestos/
sac.py): the same interface, other code.
"""
from __future__ import annotations

from ..errors import Unsupported
from .base import CommandResult, GuestDriver
from .sac import SacConsole
from .unix import UnixShell

__all__ = ["CommandResult", "GuestDriver", "SacConsole", "UnixShell", "driver_for"]

DRIVERS = {"linux": UnixShell, "freebsd": UnixShell, "windows": SacConsole}


def driver_for(guest, console, family):
    """The driver for ``guest`` (its family's) on ``console``."""
    driver = DRIVERS.get(guest.family)
    if driver is None:
        raise Unsupported(f"no guest-OS driver for {guest.family} guests yet")
    return driver(console, family, guest.console)
