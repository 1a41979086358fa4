"""The step registry: each step's name, argument schema and function, and the scenario-file
kind that checks a step against it (used by harness.steps.step_schema)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .. import schema as s


@dataclass(frozen=True)
class StepType:
    name: str
    args: s.Map
    run: Callable  # run(ctx, args) -> None; raises GuestFailure / InfraError
    doc: str = ""
    # Which OS families the step can run on given its args (None: all families).
    families: Callable[[dict], set] | None = None
    # What the step leaves the VM as, when it changes that: "stopped" (poweroff), "running"
    # (restart); None: as it found it. `refvm repro` holds back the steps after the last one
    # that leaves it running, so the person gets a live console (repro.steps_until).
    vm_after: str | None = None


REGISTRY: dict[str, StepType] = {}
# How a step reaches the guest: its serial console, or SSH (guests with devices: [ssh]).
CHANNELS = ("console", "ssh")


VM_AFTER = (None, "stopped", "running")


def register(name: str, args: s.Map | None = None, doc: str = "", families=None,
             vm_after: str | None = None):
    """Decorator: make ``fn(ctx, args)`` available to scenario files as step ``name``."""
    assert vm_after in VM_AFTER, vm_after

    def wrap(fn):
        REGISTRY[name] = StepType(name, args or s.Map({}), fn, doc or (fn.__doc__ or ""), families,
                                  vm_after)
        return fn

    return wrap


class StepKind(s.Kind):
    def check(self, value, where):
        if isinstance(value, str):
            name, args = value, {}
        elif isinstance(value, dict) and len(value) == 1:
            (name, args), = value.items()
            args = {} if args is None else args
        else:
            raise s.Invalid("a step is a name or a mapping with one key: the step's name")
        if name not in REGISTRY:
            raise s.Invalid(f"unknown step {name!r}; known steps: {', '.join(sorted(REGISTRY))}")
        line = value.line_of(name) if hasattr(value, "line_of") else where.line
        channel = None
        if isinstance(args, dict) and "channel" in args:  # every step may choose its channel
            args = dict(args)
            channel = args.pop("channel")
            if channel not in CHANNELS:
                raise s.Invalid(f"{name}.channel: must be one of {', '.join(CHANNELS)}, got "
                                f"{s.show(channel)}")
        converted = REGISTRY[name].args.convert(args, s.Where(where.file, f"{where.field}.{name}",
                                                              line, where.problems))
        if channel and isinstance(converted, dict):
            converted["channel"] = channel
        return (name, converted, where.line)
