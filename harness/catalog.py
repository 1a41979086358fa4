"""Find guest and scenario files: the repository's own, plus any the user points at.

``--guest`` takes a guest name (from the repository) or a path to a guest file anywhere, so
private images (a licensed Windows, say) never need to live in the tree.
"""
from __future__ import annotations

import os
from pathlib import Path

from . import model
from .errors import ConfigError, Problem, show
from .model import Guest, Scenario, load_guest
from .paths import GUESTS_DIR, SCENARIOS_DIR
from .steps import step_schema


def repo_guest_files(root: Path = GUESTS_DIR) -> list[Path]:
    """Guest files sit directly in guests/<family>/; deeper folders hold recipes and data."""
    return sorted(root.glob("*/*.yaml"))


def scenario_files(root: Path = SCENARIOS_DIR) -> list[Path]:
    return sorted(root.glob("*.yaml"))


def same_file_key(path: Path):
    """What makes two paths one file: device and inode, or (for a path that cannot be
    stat'ed, such as a symlink loop) its absolute spelling. Never raises."""
    try:
        info = os.stat(path)
        return (info.st_dev, info.st_ino)
    except (OSError, ValueError):
        return os.path.abspath(path)


def unique_files(paths) -> list[Path]:
    """``paths`` without repeats of one file (the same file named twice, or by a symlink)."""
    seen, out = set(), []
    for path in paths:
        key = same_file_key(path)
        if key not in seen:
            seen.add(key)
            out.append(Path(path))
    return out


def load_all(paths, loader) -> list:
    """Load every file once (however often it is named), collecting every problem of every
    file before raising."""
    loaded, problems = [], []
    for path in unique_files(paths):
        try:
            loaded.append(loader(path))
        except ConfigError as err:
            problems += err.problems
    seen: dict[str, object] = {}
    for item in loaded:
        if item.name in seen:
            problems.append(Problem(str(item.file), 1, "name",
                                    f"{item.name!r} is also the name in {seen[item.name].file}"))
        seen.setdefault(item.name, item)
    if problems:
        raise ConfigError(problems)
    return loaded


def _looks_like_path(selector: str) -> bool:
    return "/" in selector or selector.endswith((".yaml", ".yml"))


def matrix_guests(selectors=()) -> list[Guest]:
    """The guests a run's matrix covers: those named, or else every repository guest except
    the ones whose file says ``default_run: false`` (slow guests run when named)."""
    guests = load_guests(selectors)
    return guests if selectors else [g for g in guests if g.default_run]


def load_guests(selectors=(), root: Path = GUESTS_DIR) -> list[Guest]:
    """The repository's guests, or only those selected by name or path (in the order given)."""
    extra = [Path(s) for s in selectors if _looks_like_path(s)]
    missing = [p for p in extra if not os.path.lexists(p)]
    if missing:
        raise ConfigError([Problem(str(p), 0, "--guest", "no such guest file") for p in missing])
    # load_all takes each file once: a repository guest named by its path is that guest, not a
    # second one with its name.
    guests = load_all(repo_guest_files(root) + extra, load_guest)
    if not selectors:
        return [g for g in guests if g.file.parent.parent == root.resolve()]
    by_name = {g.name: g for g in guests}
    by_file = {same_file_key(g.file): g for g in guests}
    chosen, problems = [], []
    for selector in selectors:
        guest = by_file.get(same_file_key(Path(selector))) if _looks_like_path(selector) \
            else by_name.get(selector)
        if guest is None:
            problems.append(Problem("(command line)", 0, "--guest",
                                    f"unknown guest {show(selector)}; known: "
                                    f"{', '.join(sorted(by_name))}"))
        elif guest not in chosen:
            chosen.append(guest)
    if problems:
        raise ConfigError(problems)
    return chosen


def load_scenario(path: Path) -> Scenario:
    """One scenario file, its steps checked against the step registry."""
    return model.load_scenario(path, step_schema())


def load_scenarios(paths=None) -> list[Scenario]:
    """Every scenario, a scenario with variants as one scenario per variant (vcpus-4 ...)."""
    files = load_all(paths if paths is not None else scenario_files(), load_scenario)
    expanded = [one for scenario in files for one in scenario.expanded()]
    seen: dict[str, Scenario] = {}
    problems = []
    for scenario in expanded:
        if scenario.name in seen:
            problems.append(Problem(str(scenario.file), 1, "variants",
                                    f"{scenario.name!r} is also the name of a scenario in "
                                    f"{seen[scenario.name].file}"))
        seen.setdefault(scenario.name, scenario)
    if problems:
        raise ConfigError(problems)
    return expanded


def select_scenarios(scenarios: list[Scenario], names) -> list[Scenario]:
    """The scenarios named (all if none); a scenario's name also selects all its variants
    (``vcpus``: vcpus-1, vcpus-2...). An unknown name is a problem naming the choices."""
    def chosen(scenario: Scenario, name: str) -> bool:
        return name in (scenario.name, scenario.base)

    unknown = [n for n in dict.fromkeys(names) if not any(chosen(s, n) for s in scenarios)]
    if unknown:
        known = {s.name for s in scenarios} | {s.base for s in scenarios if s.base}
        raise ConfigError([Problem("(command line)", 0, "--scenario",
                                   f"unknown scenario {show(n)}; known: "
                                   f"{', '.join(sorted(known))}") for n in unknown])
    return [s for s in scenarios if not names or any(chosen(s, n) for n in names)]
