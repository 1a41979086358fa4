"""Scenario steps: the verbs a scenario file may use, each with its own argument schema.

A step is written in YAML either as a bare name (``- login``) or as a one-key mapping
(``- run: {command: uname -s, output: '^Linux$'}``). The registry (``registry``) is what
scenario validation checks against, so an unknown step or argument is a load-time error with a
line. Importing this package registers the built-in steps.
"""
from __future__ import annotations

from .. import schema as s
from . import (basic, clock, cpus, disks, lifecycle, network, nvram, queue,  # noqa: F401
               sshdata, uart)  # (they register on import)
from .registry import REGISTRY, StepKind, StepType, register

__all__ = ["REGISTRY", "StepType", "register", "step_schema"]


def step_schema() -> s.Kind:
    """The kind that checks one step of a scenario file against the registry."""
    return StepKind()
