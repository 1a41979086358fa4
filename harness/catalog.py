"""Find guest and scenario files: the repository's own, plus any the user points at.

``--guest`` takes a guest name (from the repository) or a path to a guest file anywhere, so
private images (a licensed Windows, say) never need to live in the tree.
"""
from __future__ import annotations

from pathlib import Path

from .errors import ConfigError, Problem
from .model import Guest, Scenario, load_guest, load_scenario
from .paths import GUESTS_DIR, SCENARIOS_DIR


def repo_guest_files(root: Path = GUESTS_DIR) -> list[Path]:
    """Guest files sit directly in guests/<family>/; deeper folders hold recipes and data."""
    return sorted(root.glob("*/*.yaml"))


def scenario_files(root: Path = SCENARIOS_DIR) -> list[Path]:
    return sorted(root.glob("*.yaml"))


def load_all(paths, loader) -> list:
    """Load every file, collecting every problem of every file before raising."""
    loaded, problems = [], []
    for path in paths:
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


def load_guests(selectors=(), root: Path = GUESTS_DIR) -> list[Guest]:
    """The repository's guests, or only those selected by name or path (in the order given)."""
    extra = [Path(s) for s in selectors if _looks_like_path(s)]
    missing = [p for p in extra if not p.is_file()]
    if missing:
        raise ConfigError([Problem(str(p), 0, "--guest", "no such guest file") for p in missing])
    guests = load_all(repo_guest_files(root) + extra, load_guest)
    if not selectors:
        return [g for g in guests if g.file.parent.parent == root.resolve()]
    by_name = {g.name: g for g in guests}
    by_file = {g.file: g for g in guests}
    chosen, problems = [], []
    for selector in selectors:
        guest = by_file.get(Path(selector).resolve()) if _looks_like_path(selector) \
            else by_name.get(selector)
        if guest is None:
            problems.append(Problem("(command line)", 0, "--guest",
                                    f"unknown guest {selector!r}; known: {', '.join(sorted(by_name))}"))
        elif guest not in chosen:
            chosen.append(guest)
    if problems:
        raise ConfigError(problems)
    return chosen


def load_scenarios(paths=None) -> list[Scenario]:
    return load_all(paths if paths is not None else scenario_files(), load_scenario)
