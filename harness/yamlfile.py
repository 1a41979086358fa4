"""YAML loading that remembers where every value came from.

PyYAML forgets line numbers once it builds Python objects, and silently keeps the last of two
duplicate keys. Error messages must name the file and line a person has to edit, so mappings
are loaded as :class:`LocatedDict` (which knows the line of each key) and lists as
:class:`LocatedList` (which knows the line of each item).
"""
from __future__ import annotations

from pathlib import Path

import yaml

from .errors import ConfigError, Problem


class LocatedDict(dict):
    """A mapping plus the line of the mapping itself and of each of its keys (1-based)."""

    line: int = 0
    key_lines: dict

    def line_of(self, key) -> int:
        return self.key_lines.get(key, self.line)


class LocatedList(list):
    """A list plus the line of the list itself and of each item (1-based)."""

    line: int = 0
    item_lines: list

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if index < len(self.item_lines) else self.line


class _DuplicateKey(Exception):
    def __init__(self, key, line):
        self.key, self.line = key, line


class _LocatingLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        mapping = LocatedDict()
        mapping.line = node.start_mark.line + 1
        mapping.key_lines = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in mapping:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            mapping[key] = self.construct_object(value_node, deep=True)
            mapping.key_lines[key] = key_node.start_mark.line + 1
        return mapping

    def construct_sequence(self, node, deep=False):
        seq = LocatedList(self.construct_object(child, deep=True) for child in node.value)
        seq.line = node.start_mark.line + 1
        seq.item_lines = [child.start_mark.line + 1 for child in node.value]
        return seq


_LocatingLoader.add_constructor("tag:yaml.org,2002:map", _LocatingLoader.construct_mapping)
_LocatingLoader.add_constructor("tag:yaml.org,2002:seq", _LocatingLoader.construct_sequence)


def load_text(text: str, filename: str):
    """Parse YAML text; syntax errors and duplicate keys become a :class:`ConfigError`."""
    try:
        return yaml.load(text, Loader=_LocatingLoader)  # noqa: S506 - SafeLoader subclass
    except _DuplicateKey as dup:
        raise ConfigError([Problem(filename, dup.line, str(dup.key), "duplicate key")]) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else 1
        reason = err.problem or err.context or "invalid YAML"
        raise ConfigError([Problem(filename, line, "(syntax)", f"invalid YAML: {reason}")]) from None
    except yaml.YAMLError as err:
        raise ConfigError([Problem(filename, 1, "(syntax)", f"invalid YAML: {err}")]) from None


def read_text(path: Path, field: str = "(file)") -> str:
    """A YAML file's text (UTF-8); I/O and encoding errors become a ConfigError on ``field``."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError([Problem(str(path), 0, field,
                                   f"cannot read: {err.strerror or err}")]) from None
    except UnicodeDecodeError as err:
        line = err.object[:err.start].count(b"\n") + 1
        raise ConfigError([Problem(str(path), line, field,
                                   f"not UTF-8 text: byte 0x{err.object[err.start]:02x} at "
                                   f"offset {err.start}")]) from None


def load_file(path: Path):
    """Read and parse one YAML file, turning I/O and encoding errors into a ConfigError."""
    return load_text(read_text(path), str(path))
