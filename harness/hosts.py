"""Hosts files: which hypervisor hosts a matrix may use, and a pool that spreads cases over them.

A hosts file is a YAML list, one entry per host::

    - uri: qemu:///system            # a libvirt URI (the direct backends: this machine)
      name: local                    # optional; defaults to the URI's host name
      max_vms: 2                     # VMs this host runs at once (default 1)
      firmware: [uefi, csm]          # default: uefi, csm
      backends: [libvirt, qemu]      # default: libvirt
    - uri: bhyve+ssh://root@bsd1/system
      max_vms: 4
      firmware: [uefi, bhyveload]

Errors are reported like every other input file: ``file:line: field: message``.

The pool turns hosts into *slots* (one per VM a host may run at once), interleaved so that
consecutive slots sit on different hosts. Each case is pinned to one slot it can run on
(firmware and backend), least-loaded first, deterministically: every pytest-xdist worker
computes the same assignment at collection. The plugin then marks each case with
``xdist_group(slot.group)`` and runs with ``--dist loadgroup``: one slot's cases run on one
worker, one at a time, so no host ever runs more than ``max_vms`` VMs. Without ``-n`` the same
assignment runs in turn in one process. (A static assignment, not a scheduler of our own:
pytest-xdist hands each worker its groups, libvirt's remote protocol reaches the hosts.)
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from . import schema as s
from .errors import ConfigError, InfraError, Problem, show
from .yamlfile import load_text, read_text

FIRMWARES = ("uefi", "csm", "bhyveload")
BACKENDS = ("libvirt", "qemu", "bhyve")
# A URI reaches libvirt, which may hand its parts to ssh (user, host, port, keyfile, ...): so
# every part is held to plain ASCII words that cannot start with '-' (an ssh option such as
# -oProxyCommand=...) and hold no shell syntax. Matched whole (fullmatch).
_URI = re.compile(
    r"(?P<driver>[a-z][a-z0-9]{0,15})(?:\+(?P<transport>[a-z0-9]{1,16}))?://"
    r"(?:(?P<user>[^\s/?#@\[\]]*)@)?"
    r"(?P<host>\[[^\]/\s]*\]|[^\s/?#@\[\]:]*)"
    r"(?::(?P<port>[^/]*))?"
    r"/(?:system|session)(?:\?(?P<query>[^\s#]*))?")
_URI_WHAT = "a libvirt URI such as qemu:///system or qemu+tcp://host/system"
_WORD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")  # a user name
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
TRANSPORTS = ("tls", "tcp", "ssh", "libssh", "libssh2", "unix")  # not ext: it runs a command
# libvirt's URI parameters, less ``command`` (the ext transport's program).
URI_PARAMS = ("name", "socket", "netcat", "keyfile", "no_verify", "no_tty", "pkipath",
              "known_hosts", "known_hosts_verify", "sshauth", "mode", "proxy", "tls_priority")
_PARAM_VALUE = re.compile(r"[A-Za-z0-9_./~:,+][A-Za-z0-9_./~:,+-]{0,255}|")


class Uri(s.Kind):
    """A libvirt URI whose every part is checked, so urllib never raises on it and nothing in
    it can become an ssh option or shell syntax on the way to another host."""

    def check(self, value, where):
        if not isinstance(value, str):
            raise s.Invalid(f"must be a string, got {s._type_name(value)}")
        if len(value) > 500 or not value.isascii() or not value.isprintable():
            raise s.Invalid(f"{show(value)} is not {_URI_WHAT} (plain ASCII, at most 500 "
                            "characters)")
        match = _URI.fullmatch(value)
        if not match:
            raise s.Invalid(f"{show(value)} is not {_URI_WHAT}")
        transport, user, host, port, query = match.group(
            "transport", "user", "host", "port", "query")
        if transport is not None and transport not in TRANSPORTS:
            raise s.Invalid(f"transport {show(transport)} in {show(value)}: expected one of "
                            f"{', '.join(TRANSPORTS)}")
        if user is not None and not _WORD.fullmatch(user):
            raise s.Invalid(f"user {show(user)} in {show(value)} is not a plain user name")
        self._check_host(host, value)
        if port is not None:
            if not host:
                raise s.Invalid(f"{show(value)} has a port but no host")
            if not (port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535):
                raise s.Invalid(f"port {show(port)} in {show(value)} is not 1-65535")
        for param in (query.split("&") if query else []):
            key, _, val = param.partition("=")
            if key not in URI_PARAMS:
                raise s.Invalid(f"parameter {show(key)} in {show(value)}: known parameters "
                                f"are {', '.join(URI_PARAMS)}")
            if not _PARAM_VALUE.fullmatch(val):
                raise s.Invalid(f"parameter {key} in {show(value)}: {show(val)} is not a "
                                "plain value (letters, digits, ./~:,+_-; not starting with -)")
        return value

    @staticmethod
    def _check_host(host: str, value: str) -> None:
        if host.startswith("["):
            inner = host[1:-1]
            try:
                ipaddress.IPv6Address(inner)
            except ValueError:
                hint = " (an IPv4 address is written without brackets)" \
                    if re.fullmatch(r"[0-9.]+", inner) else ""
                raise s.Invalid(f"{show(host)} in {show(value)} is not an IPv6 address"
                                f"{hint}") from None
            return
        if host and (len(host) > 253 or not all(_LABEL.fullmatch(label)
                                                for label in host.split("."))):
            raise s.Invalid(f"host {show(host)} in {show(value)} is not a host name or "
                            "address (letters, digits, '-' and '.', not starting with '-')")


@dataclass(frozen=True)
class Host:
    uri: str
    name: str
    max_vms: int
    firmware: tuple
    backends: tuple

    @property
    def local(self) -> bool:
        return urlparse(self.uri).hostname in (None, "", "localhost", "127.0.0.1", "::1")

    def runs(self, firmware: str, backend: str) -> bool:
        return firmware in self.firmware and backend in self.backends


@dataclass(frozen=True)
class Slot:
    host: Host
    index: int  # 0 .. max_vms - 1

    @property
    def group(self) -> str:
        """The xdist_group name: all cases of one slot run on one worker, in turn."""
        return f"{self.host.name}#{self.index}"


def _check_host(host: dict, where: s.Where, raw) -> None:
    if not Host(host["uri"], "", 1, (), ()).local:
        for index, backend in enumerate(host["backends"]):
            if backend != "libvirt":
                where.at(raw, "backends").at(raw["backends"], index).report(
                    f"backend {backend!r} runs its hypervisor on this machine, but "
                    f"{host['uri']} is another host: use libvirt")
    scheme = urlparse(host["uri"]).scheme.split("+")[0]
    if "bhyveload" in host["firmware"] and scheme != "bhyve" \
            and "bhyve" not in host["backends"]:
        index = list(host["firmware"]).index("bhyveload")
        where.at(raw, "firmware").at(raw["firmware"], index).report(
            "bhyveload boots bhyve guests only: use a bhyve:// URI or the bhyve backend")


def check_uri(uri: str, option: str = "--libvirt-uri") -> str:
    """A URI from the command line, held to the hosts file's rules: ConfigError if not."""
    problems: list[Problem] = []
    Uri().convert(uri, s.Where("(command line)", option, 0, problems))
    if problems:
        raise ConfigError(problems)
    return uri


HOST = s.Map({
    "uri": s.F(Uri(), required=True),
    "name": s.F(s.Name(), doc="defaults to the URI's host name, or 'local'"),
    "max_vms": s.F(s.Int(minimum=1, maximum=256), default=1),
    "firmware": s.F(s.ListOf(s.Enum(*FIRMWARES), unique=True, nonempty=True),
                    default=["uefi", "csm"]),
    "backends": s.F(s.ListOf(s.Enum(*BACKENDS), unique=True, nonempty=True),
                    default=["libvirt"]),
}, extra=_check_host)


def _default_name(uri: str) -> str:
    host = urlparse(uri).hostname
    if not host or host in ("localhost", "127.0.0.1", "::1"):
        host = "local"
    return re.sub(r"[^a-z0-9_.-]+", "-", host.lower()).strip("-") or "local"


def parse_hosts(text: str, filename: str) -> list[Host]:
    """Hosts from YAML text; ConfigError listing every problem as file:line: field: message."""
    raw = load_text(text, filename)
    problems: list[Problem] = []
    if not isinstance(raw, list) or not raw:
        line = getattr(raw, "line", 1) or 1
        raise ConfigError([Problem(filename, line, "(top)",
                                   "must be a non-empty list of hosts (- uri: ...)")])
    entries = s.validate(raw, s.ListOf(HOST), filename, problems)
    hosts, seen_uri, seen_name = [], {}, {}
    for index, entry in enumerate(entries if entries is not s.MISSING else []):
        if entry is s.MISSING or any(v is s.MISSING for v in entry.values()):
            continue
        item = raw[index]
        where = s.Where(filename, f"[{index}]", raw.line_of(index), problems)
        name = entry["name"] or _default_name(entry["uri"])
        if entry["uri"] in seen_uri:
            where.at(item, "uri").report(f"{entry['uri']} is already host "
                                         f"[{seen_uri[entry['uri']]}]")
        elif name in seen_name:
            field = "name" if "name" in item else "uri"
            where.at(item, field).report(f"host name {name!r} is already used by host "
                                         f"[{seen_name[name]}]: give this one a name")
        seen_uri.setdefault(entry["uri"], index)
        seen_name.setdefault(name, index)
        hosts.append(Host(entry["uri"], name, entry["max_vms"], tuple(entry["firmware"]),
                          tuple(entry["backends"])))
    if problems:
        raise ConfigError(problems)
    return hosts


def load_hosts(path: Path) -> list[Host]:
    return parse_hosts(read_text(Path(path), "--hosts"), str(path))


class HostPool:
    def __init__(self, hosts: list[Host]):
        if not hosts:
            raise InfraError("the hosts file lists no host")
        self.hosts = list(hosts)
        # Interleaved: a0 b0 c0 a1 b1 a2 ... so the first N slots span as many hosts as can be.
        self.slots: list[Slot] = []
        for index in range(max(h.max_vms for h in hosts)):
            self.slots += [Slot(h, index) for h in hosts if index < h.max_vms]

    @property
    def capacity(self) -> int:
        return len(self.slots)

    def assign(self, cases) -> dict:
        """Pin each case to a slot: ``cases`` is an ordered iterable of (key, firmware,
        backend); returns {key: Slot or None (no host runs that firmware with that backend)}.

        Least-loaded eligible slot first; among equally loaded slots, the host that has run
        this firmware least, then slot order. So a matrix spreads over every host that can
        run it, each firmware over several hosts where it can (not uefi on one host and csm
        on the other), and the result is the same on every worker for the same collection.
        """
        load = {id(slot): 0 for slot in self.slots}
        by_firmware: dict[tuple, int] = {}
        out = {}
        for key, firmware, backend in cases:
            eligible = [slot for slot in self.slots if slot.host.runs(firmware, backend)]
            if not eligible:
                out[key] = None
                continue
            best = min(eligible, key=lambda slot: (
                load[id(slot)], by_firmware.get((slot.host.name, firmware), 0)))
            load[id(best)] += 1
            by_firmware[(best.host.name, firmware)] = \
                by_firmware.get((best.host.name, firmware), 0) + 1
            out[key] = best
        return out

    def offer(self, backend: str) -> "PoolOffer":
        return PoolOffer(self, backend)

    def why_none(self, firmware: str, backend: str) -> str:
        return (f"no host in the hosts file runs {firmware} firmware with the {backend} "
                f"backend (hosts: " + ", ".join(
                    f"{h.name}: {'/'.join(h.firmware)} via {'/'.join(h.backends)}"
                    for h in self.hosts) + ")")


@dataclass(frozen=True)
class PoolOffer:
    """What a pool offers one backend, in the shape the matrix reads (``name``,
    ``unsupported``): a firmware is runnable when at least one host runs it with the backend."""

    pool: HostPool
    name: str

    def unsupported(self, firmware: str) -> str | None:
        if any(host.runs(firmware, self.name) for host in self.pool.hosts):
            return None
        return self.pool.why_none(firmware, self.name)

    @property
    def needs(self) -> tuple:
        from .backends import backend_class
        return backend_class(self.name).needs

    def lacks(self, need: str, firmware: str) -> str | None:
        from .backends.base import Backend
        return Backend.lacks(self, need, firmware)

    def max_vcpus(self) -> tuple[int, str]:
        from .backends.base import Backend
        return Backend.max_vcpus(self)

    def vcpu_problem(self, cpus: int, topology) -> str | None:
        from .backends.base import Backend
        return Backend.vcpu_problem(self, cpus, topology)

    def describe(self) -> str:
        return f"{self.name} on a pool of {len(self.pool.hosts)} host(s): " + ", ".join(
            f"{h.name} ({h.uri}, max_vms {h.max_vms})" for h in self.pool.hosts)
