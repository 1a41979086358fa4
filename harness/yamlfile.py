"""YAML loading that remembers where every value came from, and survives hostile files.

PyYAML forgets line numbers once it builds Python objects, and silently keeps the last of two
duplicate keys. Error messages must name the file and line a person has to edit, so mappings
are loaded as :class:`LocatedDict` (which knows the line of each key) and lists as
:class:`LocatedList` (which knows the line of each item).

Every input file is hostile until parsed, so this module also refuses, each with one
``file:line: field: message`` problem and never a hang or a traceback:

* anything but a regular file (a FIFO would block the read forever, ``/dev/zero`` never ends),
  and files larger than :data:`MAX_BYTES`;
* characters YAML refuses or counts differently from an editor (NUL and other controls,
  U+0085/U+2028/U+2029, which PyYAML takes as line breaks), at their real line;
* nesting deeper than :data:`MAX_DEPTH` (PyYAML composes recursively: thousands of levels are
  a RecursionError), more than :data:`MAX_NODES` values (a 1 MiB list takes PyYAML 8 s), more
  than :data:`MAX_ALIASES` aliases, documents whose aliases expand to more than
  :data:`MAX_NODES` values (a "billion laughs" bomb is a few hundred bytes) and aliases that
  contain themselves;
* keys that are lists or mappings, numbers longer than :data:`MAX_DIGITS` digits, and scalars
  Python cannot build (a 13th month).
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import yaml

from .errors import ConfigError, Problem

MAX_BYTES = 256 << 10  # guest, scenario and hosts files are a few KiB; PyYAML reads ~1 MiB/s
MAX_DEPTH = 32         # the deepest real file nests 5 levels
MAX_ALIASES = 100      # the repository's files use none
MAX_NODES = 10_000     # values in a file, and after alias expansion (what validation walks);
                       # the largest real file has a few hundred, and PyYAML composes ~40k/s
MAX_DIGITS = 40        # enough for any size in bytes; int("9" * 5000) is a ValueError

# What PyYAML refuses (its Reader.NON_PRINTABLE), plus the line breaks only YAML knows of:
# NEL, U+2028, U+2029 and a CR without its LF (an editor shows no new line there).
_BAD_CHAR = re.compile("[^\x09\x0a\x0d\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd"
                       "\U00010000-\U0010ffff]|\r(?!\n)")
_CHAR_NAMES = {"\x85": "NEL", "\u2028": "LINE SEPARATOR", "\u2029": "PARAGRAPH SEPARATOR",
               "\x00": "NUL", "\r": "a carriage return without a line feed"}


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


class _Refused(Exception):
    """A problem the loader found at a line; becomes one Problem."""

    def __init__(self, line: int, field: str, message: str):
        super().__init__(message)
        self.line, self.field, self.message = line, field, message


def _line(node_or_event) -> int:
    return node_or_event.start_mark.line + 1


class _LocatingLoader(yaml.SafeLoader):
    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0
        self._nodes = 0

    # composing: bounded depth and aliases ---------------------------------------------------
    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Refused(_line(event), "(syntax)",
                               f"more than {MAX_ALIASES} aliases (*name) in one file")
            return super().compose_node(parent, index)
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Refused(_line(event), "(syntax)", f"more than {MAX_NODES} values in one file")
        if not isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(_line(event), "(syntax)",
                               f"lists and mappings nested more than {MAX_DEPTH} deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_mapping_node(self, anchor):
        """PyYAML's, plus: a key must be a scalar. Checked here, at the key's own line (an
        alias's, not its anchor's), before a list key could be hashed or a bomb expanded."""
        start_event = self.get_event()
        tag = start_event.tag
        if tag is None or tag == "!":
            tag = self.resolve(yaml.MappingNode, None, start_event.implicit)
        node = yaml.MappingNode(tag, [], start_event.start_mark, None,
                                flow_style=start_event.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node
        while not self.check_event(yaml.MappingEndEvent):
            key_event = self.peek_event()
            item_key = self.compose_node(node, None)
            if not isinstance(item_key, yaml.ScalarNode):
                raise _Refused(_line(key_event), "(key)",
                               "a key must be a plain value, not a list or mapping")
            item_value = self.compose_node(node, item_key)
            node.value.append((item_key, item_value))
        node.end_mark = self.get_event().end_mark
        return node

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _check_expansion(node)
        return node

    # constructing: located containers, plain keys, sane scalars -----------------------------
    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (_Refused, yaml.YAMLError):
            raise
        except (ValueError, TypeError, OverflowError) as err:  # e.g. date 2020-13-45
            raise _Refused(_line(node), "(syntax)",
                           f"cannot read value: {str(err).splitlines()[0][:80]}") from None

    def construct_mapping(self, node, deep=False):
        if not isinstance(node, yaml.MappingNode):
            raise _Refused(_line(node), "(syntax)", "expected a mapping")
        mapping = LocatedDict()
        mapping.line = _line(node)
        mapping.key_lines = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Refused(_line(key_node), "(key)",
                               "a key must be a plain value, not a list or mapping")
            key = self.construct_object(key_node, deep=True)
            if key in mapping:
                raise _Refused(_line(key_node), str(key), "duplicate key")
            mapping[key] = self.construct_object(value_node, deep=True)
            mapping.key_lines[key] = _line(key_node)
        return mapping

    def construct_sequence(self, node, deep=False):
        seq = LocatedList(self.construct_object(child, deep=True) for child in node.value)
        seq.line = _line(node)
        seq.item_lines = [_line(child) for child in node.value]
        return seq

    def construct_yaml_int(self, node):
        digits = sum(c.isalnum() for c in str(node.value))
        if digits > MAX_DIGITS:
            raise _Refused(_line(node), "(syntax)",
                           f"a number of {digits} digits (at most {MAX_DIGITS})")
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node):
        if len(str(node.value)) > MAX_DIGITS:
            raise _Refused(_line(node), "(syntax)",
                           f"a number of {len(str(node.value))} characters "
                           f"(at most {MAX_DIGITS})")
        return super().construct_yaml_float(node)


_LocatingLoader.add_constructor("tag:yaml.org,2002:map", _LocatingLoader.construct_mapping)
_LocatingLoader.add_constructor("tag:yaml.org,2002:seq", _LocatingLoader.construct_sequence)
_LocatingLoader.add_constructor("tag:yaml.org,2002:int", _LocatingLoader.construct_yaml_int)
_LocatingLoader.add_constructor("tag:yaml.org,2002:float", _LocatingLoader.construct_yaml_float)


def _check_expansion(root) -> None:
    """Refuse a node graph whose aliases expand to more than MAX_NODES nodes, or contain
    themselves. Iterative, and each shared node is sized once: a bomb costs its own size."""
    size: dict[int, int] = {}
    active: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            active.discard(key)
            children = _children(node)
            size[key] = 1 + sum(size[id(c)] for c in children)
            if size[key] > MAX_NODES:
                raise _Refused(_line(node), "(syntax)",
                               f"aliases expand this document past {MAX_NODES} values")
            continue
        if key in size:
            continue
        if key in active:
            raise _Refused(_line(node), "(syntax)", "an alias contains itself")
        active.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in active:
                raise _Refused(_line(child), "(syntax)", "an alias contains itself")
            stack.append((child, False))


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_characters(text: str, filename: str) -> None:
    match = _BAD_CHAR.search(text)
    if match:
        char = match.group()
        line = text.count("\n", 0, match.start()) + 1
        name = _CHAR_NAMES.get(char, "a control character" if ord(char) < 0xa0 else
                               "a character YAML refuses")
        raise ConfigError([Problem(filename, line, "(file)",
                                   f"U+{ord(char):04X} ({name}) is not allowed here")])


def load_text(text: str, filename: str):
    """Parse YAML text; every problem (syntax, duplicate keys, bombs) becomes a ConfigError."""
    _check_characters(text, filename)
    try:
        return yaml.load(text, Loader=_LocatingLoader)  # noqa: S506 - SafeLoader subclass
    except _Refused as err:
        raise ConfigError([Problem(filename, err.line, err.field, err.message)]) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else 1
        reason = err.problem or err.context or "invalid YAML"
        if err.problem and err.context and not err.context.startswith("while "):
            reason = f"{err.context}, {err.problem}"  # "expected a single document ..., but"
        raise ConfigError([Problem(filename, line, "(syntax)", f"invalid YAML: {reason}")]) from None
    except yaml.YAMLError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError([Problem(filename, 1, "(syntax)", f"invalid YAML: {first}")]) from None
    except RecursionError:  # the caps above should make this unreachable
        raise ConfigError([Problem(filename, 1, "(syntax)", "nested too deep")]) from None


def read_text(path: Path, field: str = "(file)") -> str:
    """A YAML file's text (UTF-8). Only a regular file of at most MAX_BYTES is read: opened
    without blocking (a FIFO), checked after opening (no race with a swapped path). I/O and
    encoding errors become a ConfigError on ``field``."""
    name = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise ConfigError([Problem(name, 0, field,
                                   f"cannot read: {err.strerror or err}")]) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            what = "a directory" if stat.S_ISDIR(info.st_mode) else \
                "a FIFO" if stat.S_ISFIFO(info.st_mode) else \
                "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else \
                "a socket" if stat.S_ISSOCK(info.st_mode) else "a special file"
            raise ConfigError([Problem(name, 0, field, f"not a regular file: {what}")])
        with os.fdopen(fd, "rb", closefd=True) as stream:
            fd = -1
            data = stream.read(MAX_BYTES + 1)
    except OSError as err:
        raise ConfigError([Problem(name, 0, field,
                                   f"cannot read: {err.strerror or err}")]) from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > MAX_BYTES:
        raise ConfigError([Problem(name, 0, field, f"larger than {MAX_BYTES} bytes")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = err.object[:err.start].count(b"\n") + 1
        raise ConfigError([Problem(name, line, field,
                                   f"not UTF-8 text: byte 0x{err.object[err.start]:02x} at "
                                   f"offset {err.start}")]) from None


def load_file(path: Path):
    """Read and parse one YAML file, turning I/O and encoding errors into a ConfigError."""
    return load_text(read_text(path), str(path))
