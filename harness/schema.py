"""A small declarative schema for the harness's YAML files.

Why not jsonschema: its errors point at JSON paths, not at the line a person has to edit, and it
cannot convert ``512M`` into a number. Every kind here converts a raw YAML value into the value
the model wants, and reports each problem it finds (all of them, not just the first) as
``file:line: field: message`` through a shared list.

Values are checked whole (``re.fullmatch``: a ``$`` would let a final newline through), quoted
through :func:`errors.show` (escaped, cut short), and bounded: numbers finite, sizes below a
maximum, regular expressions compiled under a guard.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import Problem, show


class _Missing:
    """The value of a field that failed its check (already reported) or is absent."""

    def __repr__(self) -> str:
        return "(missing)"


MISSING = _Missing()

# Names end up in file names, VM names, test ids and libvirt domain names: keep them boring.
SAFE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")  # use with fullmatch
MAX_REGEX_CHARS = 1000     # the longest regex in the repository is under 100 characters
MAX_SECONDS = 7 * 86400.0  # a timeout longer than a week is a typo, and nan/inf never expire
KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


class Invalid(Exception):
    """Raised by a kind's check; the schema turns it into a Problem at the right line."""


@dataclass
class Where:
    """Where a value sits: file, dotted field path and line."""

    file: str
    field: str
    line: int
    problems: list

    def child(self, name: str, line: int) -> "Where":
        path = f"{self.field}.{name}" if self.field else str(name)
        return Where(self.file, path, line, self.problems)

    def at(self, raw, key) -> "Where":
        """The Where of ``raw[key]``: a mapping key or a list index, at its own line."""
        line = raw.line_of(key) if hasattr(raw, "line_of") else self.line
        name = f"[{key}]" if isinstance(key, int) else str(key)
        path = f"{self.field}{name}" if isinstance(key, int) else \
            (f"{self.field}.{name}" if self.field else name)
        return Where(self.file, path, line, self.problems)

    def report(self, message: str) -> None:
        self.problems.append(Problem(self.file, self.line, self.field or "(top)", message))


class Kind:
    """Converts and checks one value. Subclasses implement :meth:`check`."""

    def convert(self, value, where: Where):
        try:
            return self.check(value, where)
        except Invalid as err:
            where.report(str(err))
            return MISSING

    def check(self, value, where: Where):  # pragma: no cover - abstract
        raise NotImplementedError


def _type_name(value) -> str:
    """Name a YAML value's type the way a person writing YAML thinks of it."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true/false"
    for kind, name in ((int, "a number"), (float, "a number"), (str, "a string"),
                       (list, "a list"), (dict, "a mapping")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


class Str(Kind):
    def __init__(self, pattern: str | None = None, what: str = "", nonempty: bool = True):
        self.pattern = re.compile(pattern) if pattern else None
        self.what = what
        self.nonempty = nonempty

    def check(self, value, where):
        if not isinstance(value, str):
            raise Invalid(f"must be a string, got {_type_name(value)}")
        if self.nonempty and not value.strip():
            raise Invalid("must not be empty")
        if self.pattern and not self.pattern.fullmatch(value):
            raise Invalid(f"{show(value)} is not {self.what or 'valid'}")
        return value


class Name(Str):
    """A safe identifier: lower case letters, digits, '.', '_' and '-', starting alphanumeric."""

    def __init__(self):
        super().__init__(SAFE_NAME.pattern,
                         "a safe name (a-z, 0-9, '.', '_', '-'; starting with a letter or digit)")


class Regex(Str):
    """A Python regular expression, compiled now so a typo is reported at load time."""

    def check(self, value, where):
        value = super().check(value, where)
        if len(value) > MAX_REGEX_CHARS:
            raise Invalid(f"a regular expression of {len(value)} characters "
                          f"(at most {MAX_REGEX_CHARS})")
        try:
            re.compile(value)
        except re.error as err:
            raise Invalid(f"invalid regular expression: {err}") from None
        except (OverflowError, RecursionError, ValueError, MemoryError) as err:
            reason = "nested too deep" if isinstance(err, RecursionError) else str(err)
            raise Invalid(f"invalid regular expression: {reason}") from None
        return value


class Sha256(Str):
    def __init__(self):
        super().__init__(r"[0-9a-f]{64}", "a sha256 (64 lower-case hex digits)")


class Sha512(Str):
    """Some publishers (Debian's cloud images) list only SHA512SUMS: a pin takes that too."""

    def __init__(self):
        super().__init__(r"[0-9a-f]{128}", "a sha512 (128 lower-case hex digits)")


class Int(Kind):
    def __init__(self, minimum: int | None = None, maximum: int | None = None):
        self.minimum, self.maximum = minimum, maximum

    def check(self, value, where):
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"must be a whole number, got {_type_name(value)}")
        if self.minimum is not None and value < self.minimum:
            raise Invalid(f"must be at least {self.minimum}, got {value}")
        if self.maximum is not None and value > self.maximum:
            raise Invalid(f"must be at most {self.maximum}, got {value}")
        return value


class Seconds(Kind):
    """A positive, finite duration in seconds (int or float), at most :data:`MAX_SECONDS`:
    a nan deadline never expires, and nan compares false with everything."""

    def __init__(self, maximum: float = MAX_SECONDS):
        self.maximum = maximum

    def check(self, value, where):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(f"must be a number of seconds, got {_type_name(value)}")
        if not math.isfinite(value):
            raise Invalid(f"must be a finite number of seconds, got {show(value)}")
        if value <= 0:
            raise Invalid(f"must be positive, got {show(value)}")
        if value > self.maximum:
            raise Invalid(f"must be at most {self.maximum:g} seconds, got {show(value)}")
        return float(value)


class Bool(Kind):
    def check(self, value, where):
        if not isinstance(value, bool):
            raise Invalid(f"must be true or false, got {_type_name(value)}")
        return value


_SIZE = re.compile(r"([0-9]{1,20})[ \t]*([KMGT]?)(i?B)?", re.IGNORECASE | re.ASCII)
_UNITS = {"": 1, "K": KiB, "M": MiB, "G": GiB, "T": TiB}


class Size(Kind):
    """A size such as ``512M``, ``1G``, ``4096K`` or ``64KiB``, converted to bytes.

    A bare number means bytes, unless the field says otherwise with ``bare`` (memory: MiB,
    bhyve's -m rule): a byte count read as MiB turned ``bytes: 65536`` into 64 GiB. Every size
    has a ``maximum`` (default :data:`GiB`: byte counts a step moves; memory and disks set
    their own). ``multiple_of`` rejects sizes a device cannot have (whole sectors).
    """

    def __init__(self, minimum: int = 1, multiple_of: int = 1, maximum: int = GiB,
                 bare: int = 1):
        self.minimum, self.multiple_of, self.maximum, self.bare = \
            minimum, multiple_of, maximum, bare

    def check(self, value, where):
        example = "512M or 1G" if self.bare == MiB else "65536, 64K or 8MiB"
        if isinstance(value, bool):
            raise Invalid(f"must be a size such as {example}, got true/false")
        if isinstance(value, int):
            size = value * self.bare
        elif isinstance(value, str) and (m := _SIZE.fullmatch(value.strip(" \t"))):
            size = int(m.group(1)) * (_UNITS[m.group(2).upper()] if m.group(2) else self.bare)
        else:
            raise Invalid(f"must be a size such as {example}, got {show(value)}")
        if size < self.minimum:
            raise Invalid(f"must be at least {_human(self.minimum)}, got {show(value)}")
        if size > self.maximum:
            raise Invalid(f"must be at most {_human(self.maximum)}, got {show(value)}")
        if size % self.multiple_of:
            raise Invalid(f"must be a multiple of {_human(self.multiple_of)}, got {show(value)}")
        return size


def _human(size: int) -> str:
    for unit, name in ((TiB, "TiB"), (GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return "1 byte" if size == 1 else f"{size} bytes"


class Mac(Str):
    """A lower-case unicast MAC address: not all-zero, not broadcast, not multicast (the low
    bit of the first octet), none of which a NIC can have as its own address."""

    def __init__(self):
        super().__init__(r"(?:[0-9a-f]{2}:){5}[0-9a-f]{2}", "a lower-case MAC address")

    def check(self, value, where):
        value = super().check(value, where)
        if value == "00:00:00:00:00:00":
            raise Invalid(f"{show(value)} is the all-zero MAC address")
        if int(value[:2], 16) & 1:
            raise Invalid(f"{show(value)} is a multicast or broadcast MAC address; a NIC "
                          "needs a unicast one (first octet even)")
        return value


class Enum(Kind):
    def __init__(self, *choices: str):
        self.choices = choices

    def check(self, value, where):
        if not isinstance(value, str) or value not in self.choices:
            raise Invalid(f"unknown value {show(value)}; expected one of: "
                          f"{', '.join(self.choices)}")
        return value


class ListOf(Kind):
    def __init__(self, item: Kind, unique: bool = False, nonempty: bool = False):
        self.item, self.unique, self.nonempty = item, unique, nonempty

    def check(self, value, where):
        if not isinstance(value, list):
            raise Invalid(f"must be a list, got {_type_name(value)}")
        if self.nonempty and not value:
            raise Invalid("must not be empty")
        out, seen = [], set()
        for index, item in enumerate(value):
            line = value.line_of(index) if hasattr(value, "line_of") else where.line
            item_where = Where(where.file, f"{where.field}[{index}]", line, where.problems)
            converted = self.item.convert(item, item_where)
            if self.unique and isinstance(converted, str):
                if converted in seen:
                    item_where.report(f"{show(converted)} is listed twice")
                seen.add(converted)
            out.append(converted)
        return out


class OneOrList(Kind):
    """One value or a list of them (a guest's image URLs: an end-of-life release moves from
    the download site to the archive, with the same file and sha256); always a list after."""

    def __init__(self, item: Kind, max_items: int = 8):
        self.item = item
        self.list = ListOf(item, unique=True, nonempty=True)
        self.max_items = max_items

    def check(self, value, where):
        if isinstance(value, list):
            if len(value) > self.max_items:
                raise Invalid(f"at most {self.max_items} items, got {len(value)}")
            return self.list.check(value, where)
        return [self.item.check(value, where)]


@dataclass
class F:
    """A field of a mapping: its kind, whether it is required, its default and a doc line."""

    kind: Kind
    required: bool = False
    default: Any = None
    doc: str = ""


@dataclass
class Map(Kind):
    """A mapping with known fields; unknown keys are errors (typos must not pass silently).

    ``extra(converted, where, raw)`` checks what spans fields; ``raw`` is the located mapping,
    so it can point at the line of the very field (or list item) that is wrong.
    """

    fields: dict = field(default_factory=dict)
    extra: Callable[[dict, Where, dict], None] | None = None

    def check(self, value, where):
        if not isinstance(value, dict):
            raise Invalid(f"must be a mapping, got {_type_name(value)}")
        out = {}
        line_of = value.line_of if hasattr(value, "line_of") else (lambda _k: where.line)
        for key in value:
            if key not in self.fields:
                known = ", ".join(sorted(self.fields))
                where.child(str(key), line_of(key)).report(f"unknown key; known keys: {known}")
        for name, spec in self.fields.items():
            if name in value:
                out[name] = spec.kind.convert(value[name], where.child(name, line_of(name)))
            elif spec.required:
                where.child(name, where.line).report("required field is missing")
                out[name] = MISSING
            else:
                out[name] = spec.default
        if self.extra and not any(v is MISSING for v in out.values()):
            self.extra(out, where, value)
        return out


class FamilyMap(Kind):
    """Either one string for every OS family, or a mapping ``{linux: ..., freebsd: ...}``.
    ``families``: the OS families' names (harness.families.NAMES)."""

    def __init__(self, families: tuple, item: Kind | None = None):
        self.families = tuple(families)
        self.item = item or Str()

    def check(self, value, where):
        if isinstance(value, dict):
            if not value:  # nothing for any family: every case would skip, silently
                raise Invalid(f"must name at least one of: {', '.join(self.families)}")
            return Map({f: F(self.item) for f in self.families}).check(value, where)
        return {f: self.item.check(value, where) for f in self.families}


def validate(value, schema: Kind, file: str, problems: list):
    """Convert ``value`` against ``schema``; append problems; return the converted value."""
    line = getattr(value, "line", 1) or 1
    return schema.convert(value, Where(file, "", line, problems))
