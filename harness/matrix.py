"""The test matrix: guest x firmware x scenario on one backend, with a reason for every skip."""
from __future__ import annotations

from dataclasses import dataclass

from .model import Guest, Scenario
from .steps import REGISTRY


@dataclass(frozen=True)
class Case:
    scenario: Scenario
    guest: Guest
    firmware: str
    backend: str

    @property
    def param(self) -> str:
        return f"{self.guest.name}-{self.firmware}-{self.backend}"

    @property
    def id(self) -> str:
        return f"{self.scenario.name}[{self.param}]"


def skip_reason(case: Case, backend) -> str | None:
    """Why this case cannot run, or None. Every reason names what is missing."""
    why = backend.unsupported(case.firmware)
    if why:
        return why
    lacking = [d for d in case.scenario.requires if d not in case.guest.devices]
    if lacking:
        return f"guest {case.guest.name} does not declare device(s): {', '.join(lacking)}"
    for step in case.scenario.steps:
        families = REGISTRY[step.kind].families
        if families and case.guest.family not in families(step.args):
            return (f"scenario {case.scenario.name} step {step.kind!r} (line {step.line}) "
                    f"has nothing for {case.guest.family} guests")
    return None


def build(scenarios, guests, backend, firmwares=()) -> list[tuple[Case, str | None]]:
    """Every (case, skip reason) for the selection; firmwares filters if given."""
    out = []
    for scenario in scenarios:
        for guest in guests:
            for fw in guest.firmware:
                if firmwares and fw not in firmwares:
                    continue
                case = Case(scenario, guest, fw, backend.name)
                out.append((case, skip_reason(case, backend)))
    return out
