"""The test matrix: guest x firmware x scenario on one backend, with a reason for every skip."""
from __future__ import annotations

from dataclasses import dataclass

from .backends.base import NEED_WORDS
from .families import family
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
    scenario = case.scenario
    why = _firmware_not_applicable(case)
    if why:
        return why
    for need in scenario.needs:
        why = backend.lacks(need, case.firmware)
        if why:
            return f"scenario {scenario.name} needs to {NEED_WORDS[need]}: {why}"
    cpus, topology = vcpus_of(case, backend)
    why = backend.vcpu_problem(cpus, topology)
    if why:
        return f"scenario {scenario.name}: {why}"
    return _guest_not_applicable(case)


def does_not_apply(case: Case) -> str | None:
    """Why the scenario itself rules this case out on any host (firmware it is not for, a
    device the guest lacks, a step with nothing for the guest's OS), or None. A release
    file need not expect these skips: they say nothing about the hypervisor."""
    return _firmware_not_applicable(case) or _guest_not_applicable(case)


def _firmware_not_applicable(case: Case) -> str | None:
    scenario = case.scenario
    if scenario.firmware and case.firmware not in scenario.firmware:
        return (f"scenario {scenario.name} applies to {', '.join(scenario.firmware)} "
                f"firmware only")
    return None


def _guest_not_applicable(case: Case) -> str | None:
    lacking = [d for d in case.scenario.requires if d not in case.guest.devices]
    if lacking:
        return f"guest {case.guest.name} does not declare device(s): {', '.join(lacking)}"
    for step in case.scenario.steps:
        families = REGISTRY[step.kind].families
        allowed = families(step.args) if families else None
        if allowed is not None and case.guest.family not in allowed:
            missing = family(case.guest.family).missing
            why = "; ".join(dict.fromkeys(missing[op] for op in getattr(allowed, "ops", ())
                                          if op in missing))
            return (f"scenario {case.scenario.name} step {step.kind!r} (line {step.line}) "
                    f"has nothing for {case.guest.family} guests" + (f": {why}" if why else ""))
    return None


def vcpus_of(case: Case, backend) -> tuple[int, tuple | None]:
    """The case's vCPU count (the scenario's, "max" resolved, else the guest's) and topology
    ((sockets, cores, threads), or None: the hypervisor's default)."""
    shape = case.scenario.vm
    cpus = shape.cpus if shape.cpus is not None else case.guest.cpus
    if cpus == "max":
        cpus = backend.max_vcpus()[0]
    topology = (shape.sockets, shape.cores, shape.threads) if shape.sockets else None
    return cpus, topology


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
