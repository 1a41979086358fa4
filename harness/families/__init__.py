"""What the harness knows about each OS family, kept as data (``<family>.yaml`` beside this file).

Scenario steps ask the family for the command that does a job (``firmware``, ``poweroff``...),
and the console asks it for the console messages that mean the guest is dead. Adding a guest of
a known family therefore needs only its YAML.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .. import schema as s
from ..errors import ConfigError
from ..yamlfile import load_file

HERE = Path(__file__).parent

FAMILY = s.Map({
    "family": s.F(s.Enum("linux", "freebsd", "windows"), required=True),
    "failure_patterns": s.F(s.ListOf(s.Regex()), default=[]),
    "after_login": s.F(s.ListOf(s.Str()), default=[]),
    "commands": s.F(s.Map({
        "firmware": s.F(s.Str(), doc="prints UEFI or BIOS"),
        "poweroff": s.F(s.Str()),
    }), required=True),
})


@dataclass(frozen=True)
class Family:
    name: str
    failure_patterns: tuple
    after_login: tuple
    commands: dict


@lru_cache(maxsize=None)
def family(name: str) -> Family:
    """Load the profile of one OS family (cached: these files ship with the harness)."""
    path = HERE / f"{name}.yaml"
    problems: list = []
    data = s.validate(load_file(path), FAMILY, str(path), problems)
    if problems:
        raise ConfigError(problems)
    return Family(name=data["family"], failure_patterns=tuple(data["failure_patterns"]),
                  after_login=tuple(data["after_login"]), commands=dict(data["commands"]))
