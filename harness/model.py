"""Guests and scenarios as the harness sees them, loaded from YAML and checked on the way in.

A guest file says *what* to boot (image, firmware it supports, how its console talks, which
devices it can exercise). A scenario file says *what to do* with it (steps). Neither names a
hypervisor: the same files drive QEMU, bhyve and libvirt.
"""
from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import schema as s
from .errors import ConfigError, Problem
from .families import NAMES as FAMILY_NAMES
from .yamlfile import load_file

FAMILIES = FAMILY_NAMES  # the family files' names (harness/families/*.yaml)
FIRMWARES = ("uefi", "csm", "bhyveload")
MAX_DISK_BYTES = 2 * s.TiB  # scratch disks are sparse files, but not without end
# "ssh": not a device but a way in: the guest runs sshd, reachable through its NIC.
DEVICES = ("virtio-blk", "nvme", "virtio-net", "uart", "ssh")
IMAGE_FORMATS = ("raw", "qcow2")
COMPRESSIONS = ("none", "xz", "gzip", "zstd")
# A login prompt at the end of the output, or one a kernel message was printed right over
# ("login: [   12.3] virtio_net ..."): getty is waiting for the user name either way.
DEFAULT_LOGIN_PROMPT = r"login:[ \t]*(?:$|(?=\[ *\d+\.\d+\]))"
# A shell prompt at the end of the output. Line editors (busybox ash, bash) may follow it with
# terminal queries such as ESC[6n (where is the cursor?), which must not hide the prompt; a
# kernel message printed right over the first prompt (before the login's dmesg -n 1) neither.
DEFAULT_SHELL_PROMPT = r"[#$>] ?(?:\x1b\[[0-9;?]*[A-Za-z])*(?:$|(?=\[ *\d+\.\d+\]))"


@dataclass(frozen=True)
class ImageSpec:
    """Where a guest's boot disk comes from; always pinned by sha256 or by a build recipe."""

    urls: tuple  # where to download it from, tried in order (empty: not downloaded)
    path: Path | None
    build: Path | None
    sha256: str | None
    format: str
    compression: str
    install: str | None = None  # "windows": an unattended install the harness runs once
    sha512: str | None = None  # instead of sha256, for files published with SHA512SUMS only

    @property
    def pin(self) -> tuple[str, str] | None:
        """(algorithm, hex digest) of the downloaded file: ("sha512", ...) or ("sha256", ...)."""
        return ("sha512", self.sha512) if self.sha512 else \
            ("sha256", self.sha256) if self.sha256 else None

    @property
    def url(self) -> str | None:
        """The first download URL (the others are fallbacks for the same file)."""
        return self.urls[0] if self.urls else None

    @property
    def source(self) -> str:
        return "url" if self.urls else "path" if self.path else \
            "install" if self.install else "build"


@dataclass(frozen=True)
class Media:
    """A file the harness downloads (or is given with ``refvm images import``), pinned by
    sha256: an installer ISO, a driver disc."""

    urls: tuple
    sha256: str
    size: int | None = None


@dataclass(frozen=True)
class WindowsInstall:
    """How the harness installs Windows unattended (harness/images/windows): the installer
    ISO, which image of its install.wim (by /IMAGE/NAME or /IMAGE/INDEX), the virtio-win
    driver disc (needed only for virtio disks and NICs), the system disk's size."""

    iso: Media
    image_name: str | None
    image_index: int | None
    edition: str
    driver_os: str
    virtio_win: Media | None
    disk_size: int
    install_timeout: float


@dataclass(frozen=True)
class BecomeRoot:
    """How a console user who is not root becomes root for the steps' privileged commands:
    ``su`` (root's password), ``sudo`` or ``doas`` (the user's password, or none)."""

    method: str
    password: str = ""

    @property
    def command(self) -> str:
        return BECOME_ROOT_COMMANDS[self.method]


# A root login shell, so the steps' commands run as root from then on.
BECOME_ROOT_COMMANDS = {"su": "su -", "sudo": "sudo -i", "doas": "doas -s"}


@dataclass(frozen=True)
class ConsoleSpec:
    """How to talk to the guest on its serial console."""

    login_prompt: str
    user: str
    password: str
    shell_prompt: str
    boot_timeout: float
    login_incorrect: str
    become_root: BecomeRoot | None = None
    stop_loader: bool = False  # stop the FreeBSD loader to set console=comconsole
    domain: str = ""  # Windows (SAC's "Domain  :"); empty: the local machine
    type_delay: float = 0.0  # seconds between typed characters (consoles that drop keys)

    @property
    def secrets(self) -> list[str]:
        """Every password the console may see: masked in logs."""
        return [p for p in (self.password, self.become_root and self.become_root.password) if p]


@dataclass(frozen=True)
class Guest:
    name: str
    family: str
    description: str
    file: Path
    image: ImageSpec
    memory: int  # bytes
    cpus: int
    firmware: tuple
    devices: tuple
    utc_clock: bool
    console: ConsoleSpec
    boot_bus: str = "virtio-blk"  # the boot disk's bus (Windows without virtio-win: ahci-hd)
    windows: WindowsInstall | None = None  # image.install: windows
    ssh: "SshSpec | None" = None
    default_run: bool = True
    cloud_init: "CloudInit | None" = None  # a NoCloud seed disc at every boot


@dataclass(frozen=True)
class Step:
    """One step of a scenario: a registered step type plus its converted arguments."""

    kind: str
    args: dict
    line: int


@dataclass(frozen=True)
class DiskAttach:
    """A scratch disk the scenario adds; the host fills ``regions`` with seeded data first."""

    id: str
    bus: str
    size: int
    serial: str
    readonly: bool
    sector_size: int | None
    seed: int
    regions: tuple  # of hostdata.Region
    # Requests per second the hypervisor serves, where it can limit them (QEMU's block
    # throttling): it stands in for a disk slower than the guest, which is what lets a guest
    # under TCG fill its queue. bhyve has no such limit; a guest with hardware virtualization
    # outruns the host disk there by itself.
    iops_limit: int | None = None


@dataclass(frozen=True)
class NicAttach:
    id: str
    model: str
    mac: str
    ssh: bool = False  # the harness reaches the guest's sshd through this NIC


@dataclass(frozen=True)
class SerialAttach:
    id: str
    port: str  # com2 .. com4 (com1 is the console)


# What a scenario can ask of the machine beyond booting it, so that a scenario asks for a
# capability and each backend says whether (and why not) it has it: start the same VM again
# with the same vars file and disks; let the guest reboot; suspend it to a file and restore it
# into a new hypervisor process; a UEFI variable store kept in a file apart from the ROM.
MACHINE_NEEDS = ("restart", "reboot", "save-restore", "vars-file", "ssh")


@dataclass(frozen=True)
class VmShape:
    """What a scenario (or one of its variants) sets on the VM over the guest file's values:
    the vCPU count (a number, or "max": the backend's maximum), the CPU topology, the RTC."""

    cpus: int | str | None = None
    sockets: int | None = None
    cores: int | None = None
    threads: int | None = None
    utc_clock: bool | None = None

    def over(self, base: "VmShape") -> "VmShape":
        """This shape's values where set, else ``base``'s."""
        return VmShape(*(mine if mine is not None else theirs
                         for mine, theirs in zip(astuple_shallow(self), astuple_shallow(base))))

    def describe(self) -> str:
        parts = [f"{self.cpus} vCPUs"] if self.cpus is not None else []
        if self.sockets:
            parts.append(f"{self.sockets} sockets x {self.cores} cores x {self.threads} threads")
        if self.utc_clock is not None:
            parts.append("RTC in UTC" if self.utc_clock else "RTC in local time")
        return ", ".join(parts)


def astuple_shallow(obj) -> tuple:
    return tuple(getattr(obj, f) for f in obj.__dataclass_fields__)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    file: Path
    requires: tuple
    timeout: float
    steps: tuple = field(default_factory=tuple)
    attach: tuple = field(default_factory=tuple)
    firmware: tuple = ()  # the firmware profiles it applies to; () = all
    needs: tuple = ()     # MACHINE_NEEDS
    vm: VmShape = VmShape()
    variants: tuple = ()  # (id, VmShape) pairs: one case each, named "<name>-<id>"
    base: str = ""        # a variant's scenario name ("vcpus" for vcpus-4)

    def attachment(self, kind: type, ident: str):
        return next(a for a in self.attach if isinstance(a, kind) and a.id == ident)

    def expanded(self) -> list["Scenario"]:
        """This scenario, or one scenario per variant (its shape over the scenario's)."""
        from dataclasses import replace
        if not self.variants:
            return [self]
        return [replace(self, name=f"{self.name}-{ident}", vm=shape.over(self.vm), variants=(),
                        base=self.name) for ident, shape in self.variants]


def _check_image(image: dict, where: s.Where, _raw) -> None:
    sources = [k for k in ("url", "path", "build", "install") if image[k]]
    if len(sources) != 1:
        where.report("give exactly one of url, path, build or install "
                     f"(found {', '.join(sources) if sources else 'none'})")
    elif image["sha256"] and image["sha512"]:
        where.child("sha512", where.line).report("give sha256 or sha512, not both")
    elif image["sha512"] and sources[0] != "url":
        where.child("sha512", where.line).report(
            f"only with url (a downloaded file); {sources[0]} takes sha256")
    elif sources[0] in ("url", "path") and not (image["sha256"] or image["sha512"]):
        where.child("sha256", where.line).report(
            f"required with {sources[0]}: images are never used unverified")
    elif sources[0] in ("build", "install") and image["sha256"]:
        where.child("sha256", where.line).report(
            f"not allowed with {sources[0]}: the built image's hash is recorded by the cache")


IMAGE = s.Map({
    "url": s.F(s.OneOrList(s.Str(r"https?://[!-~]{1,2000}",
                                 "an http(s) URL (printable ASCII, no spaces)")),
               doc="one URL, or a list tried in order (the same file: one sha256)"),
    "path": s.F(s.Str()),
    "build": s.F(s.Str(), doc="recipe file, relative to the guest file"),
    "sha256": s.F(s.Sha256()),
    "sha512": s.F(s.Sha512(), doc="instead of sha256, for a download published with "
                                  "SHA512SUMS only"),
    "format": s.F(s.Enum(*IMAGE_FORMATS), default="raw"),
    "compression": s.F(s.Enum(*COMPRESSIONS), default="none"),
    "install": s.F(s.Enum("windows"), doc="windows: installed unattended by the harness from "
                                          "the ISO in the guest's windows section"),
}, extra=_check_image)

URLS = s.OneOrList(s.Str(r"https?://[!-~]{1,2000}", "an http(s) URL (printable ASCII, no spaces)"))
MEDIA = s.Map({
    "url": s.F(URLS, required=True, doc="one URL, or a list tried in order (one file)"),
    "sha256": s.F(s.Sha256(), required=True,
                  doc="the file's sha256: never guessed (refvm refuses any other file)"),
    "size": s.F(s.Int(1, 1 << 40), doc="bytes, when known: a short download is named as such"),
})
DRIVER_OS = ("2k16", "2k19", "2k22", "2k25", "w10", "w11")  # virtio-win's folder names


def _check_windows(windows: dict, where: s.Where, raw) -> None:
    if (windows["image_name"] is None) == (windows["image_index"] is None):
        where.report("give exactly one of image_name (/IMAGE/NAME, e.g. 'Windows Server 2022 "
                     "SERVERSTANDARD') or image_index (/IMAGE/INDEX)")


WINDOWS = s.Map({
    "iso": s.F(MEDIA, required=True, doc="the installer ISO"),
    "image_name": s.F(s.Str(r"[A-Za-z0-9 ()._-]{1,100}", "an image name (letters, digits, "
                            "spaces, '()._-')")),
    "image_index": s.F(s.Int(1, 64)),
    "edition": s.F(s.Str(), default="", doc="what the image is, for people and results"),
    "driver_os": s.F(s.Enum(*DRIVER_OS), default="2k22",
                     doc="virtio-win's folder for this Windows (viostor/<os>/amd64)"),
    "virtio_win": s.F(MEDIA, doc="the virtio-win driver ISO; needed for virtio disks and NICs"),
    # Windows Server needs 32 GB (Setup refuses less, in its own words); the schema allows
    # small disks so the harness's own tests can install into a double cheaply.
    "disk_size": s.F(s.Size(minimum=s.GiB, maximum=MAX_DISK_BYTES, bare=s.MiB),
                     default=40 * s.GiB),
    "install_timeout": s.F(s.Seconds(), default=4 * 3600.0),
}, extra=_check_windows)

CONSOLE = s.Map({
    "login_prompt": s.F(s.Regex(), default=DEFAULT_LOGIN_PROMPT),
    "user": s.F(s.Str(), required=True),
    "password": s.F(s.Str(nonempty=False), default=""),
    "shell_prompt": s.F(s.Regex(), default=DEFAULT_SHELL_PROMPT),
    "boot_timeout": s.F(s.Seconds(), default=300.0),
    "login_incorrect": s.F(s.Regex(), default=r"Login incorrect|Login failed|incorrect password"),
    "become_root": s.F(s.Map({
        "method": s.F(s.Enum(*BECOME_ROOT_COMMANDS), required=True),
        "password": s.F(s.Str(nonempty=False), default=""),
    }), doc="when the console user is not root: how it becomes root (su, sudo, doas)"),
    "stop_loader": s.F(s.Bool(), default=False,
                       doc="FreeBSD images whose loader does not use the serial console: stop "
                           "at its countdown, set console=comconsole, boot"),
    "domain": s.F(s.Str(r"[A-Za-z0-9_.-]{0,64}", "a domain name (letters, digits, '.', '_', "
                        "'-')", nonempty=False), default="",
                  doc="Windows: the answer to SAC's 'Domain  :' (empty: the local machine)"),
    "password_env": s.F(s.Str(r"[A-Z_][A-Z0-9_]{0,63}", "an environment variable name"),
                        doc="when this variable is set, its value is the password"),
    "type_delay": s.F(s.Seconds(maximum=2.0), default=0.0,
                      doc="seconds between typed characters, for consoles that drop keys "
                          "typed fast (SAC's cmd channel on Server 2016/2019)"),
})


# The guest's sshd (devices: [ssh]): the user the harness logs in as with the run's key, and
# the host key it must present (default: the one the builder recorded for the image).
SSH = s.Map({
    "user": s.F(s.Str(r"[a-z_][a-z0-9_-]{0,31}", "a user name"), default="root"),
    "host_key": s.F(s.Str(r"(ssh-ed25519|ecdsa-sha2-nistp256|ssh-rsa) [A-Za-z0-9+/=]{40,1000}"
                          r"( [!-~]{1,100})?", "an OpenSSH public key line")),
})


@dataclass(frozen=True)
class SshSpec:
    user: str = "root"
    host_key: str | None = None


# An official cloud image (cloud-init): each VM gets a NoCloud seed disc (harness/images/
# nocloud.py) making the console user with the console password (hashed) and the run's SSH key.
CLOUD_INIT = s.Map({
    "hostname": s.F(s.Str(r"[a-z0-9][a-z0-9-]{0,62}", "a host name (a-z, 0-9, '-')"),
                    doc="the guest's host name (default: the guest's name, dots made dashes)"),
})


@dataclass(frozen=True)
class CloudInit:
    hostname: str


def _check_cloud_init(guest: dict, where: s.Where, raw) -> None:
    """The seed disc makes one user (the console's) and a host key of its own per VM."""
    if guest["cloud_init"] is None or guest["ssh"] is None:
        return
    ssh, at = raw["ssh"], where.at(raw, "ssh")
    if guest["ssh"]["user"] != guest["console"]["user"]:
        (at.at(ssh, "user") if "user" in ssh else at).report(
            "with cloud_init, SSH logs in as the console user (the one the seed disc makes)")
    if guest["ssh"]["host_key"]:
        at.at(ssh, "host_key").report(
            "not with cloud_init: each VM's seed disc gives it a host key of its own")


def _check_guest(guest: dict, where: s.Where, raw) -> None:
    _check_cloud_init(guest, where, raw)
    if "bhyveload" in guest["firmware"] and guest["family"] != "freebsd":
        where.at(raw, "firmware").report("bhyveload boots FreeBSD guests only")
    installs = guest["image"]["install"] == "windows"
    if installs and guest["family"] != "windows":
        where.at(raw, "image").report("install: windows is for Windows guests only")
    if installs != (guest["windows"] is not None):
        where.at(raw, "windows" if guest["windows"] is not None else "image").report(
            "a windows section goes with image.install: windows (and only with it)")
    if not installs or guest["windows"] is None:
        return
    if len(guest["firmware"]) != 1:
        where.at(raw, "firmware").report(
            "an installed Windows disk boots one way (UEFI: GPT, csm: MBR): list one firmware")
    virtio = [d for d in guest["devices"] if d.startswith("virtio-")]
    if guest["boot_bus"] == "virtio-blk":
        virtio.append("boot_bus virtio-blk")
    if virtio and guest["windows"]["virtio_win"] is None:
        where.at(raw, "devices" if "devices" in raw else "boot_bus").report(
            f"{', '.join(virtio)} need(s) the virtio-win drivers: give windows.virtio_win "
            "(url and sha256), or use inbox drivers (boot_bus ahci-hd or nvme; nvme, uart)")


GUEST = s.Map({
    "name": s.F(s.Name(), required=True),
    "family": s.F(s.Enum(*FAMILIES), required=True),
    "description": s.F(s.Str(), default=""),
    "image": s.F(IMAGE, required=True),
    # A bare number means MiB here (bhyve's -m rule); 1 TiB is more than any test host has.
    "memory": s.F(s.Size(minimum=32 * s.MiB, multiple_of=s.MiB, maximum=s.TiB, bare=s.MiB),
                  default=512 * s.MiB),
    "cpus": s.F(s.Int(1, 256), default=1),
    "firmware": s.F(s.ListOf(s.Enum(*FIRMWARES), unique=True, nonempty=True), required=True),
    "devices": s.F(s.ListOf(s.Enum(*DEVICES), unique=True), default=[]),
    "utc_clock": s.F(s.Bool(), default=True, doc="RTC in UTC (bhyve -u); Windows wants false"),
    "console": s.F(CONSOLE, required=True),
    "boot_bus": s.F(s.Enum("virtio-blk", "nvme", "ahci-hd"), default="virtio-blk",
                    doc="the boot disk's bus; Windows' inbox drivers know ahci-hd and nvme"),
    "windows": s.F(WINDOWS, doc="with image.install: windows: what the harness installs"),
    "ssh": s.F(SSH, doc="the guest runs sshd (put ssh in devices too)"),
    "default_run": s.F(s.Bool(), default=True,
                       doc="false: its cases run only when --guest names it (a slow guest)"),
    "cloud_init": s.F(CLOUD_INIT, doc="an official cloud image: a NoCloud seed disc gives it "
                                      "the console user, its password and the run's SSH key"),
}, extra=_check_guest)


def _resolve(guest_file: Path, raw, key: str) -> Path:
    """``image.<key>`` relative to the guest file, resolved; a symlink loop or a path the
    system refuses (NUL, too long) is a problem at that line, not a traceback."""
    image = raw["image"]
    try:
        return (guest_file.parent / image[key]).resolve()
    except (OSError, RuntimeError, ValueError) as err:
        reason = "a symlink loop" if isinstance(err, RuntimeError) or \
            getattr(err, "errno", None) == errno.ELOOP else \
            (getattr(err, "strerror", None) or str(err))
        raise ConfigError([Problem(str(guest_file), image.line_of(key), f"image.{key}",
                                   f"cannot resolve: {reason}")]) from None


def load_guest(path: Path) -> Guest:
    """Load and check one guest file; raise ConfigError listing every problem found."""
    path = Path(path)
    raw = load_file(path)
    problems: list[Problem] = []
    data = s.validate(raw, GUEST, str(path), problems)
    if problems:
        raise ConfigError(problems)
    img = data["image"]
    image = ImageSpec(
        urls=tuple(img["url"] or ()),
        path=_resolve(path, raw, "path") if img["path"] else None,
        build=_resolve(path, raw, "build") if img["build"] else None,
        sha256=img["sha256"], format=img["format"], compression=img["compression"],
        install=img["install"], sha512=img["sha512"])
    return Guest(
        name=data["name"], family=data["family"], description=data["description"],
        file=path.resolve(), image=image, memory=data["memory"], cpus=data["cpus"],
        firmware=tuple(data["firmware"]), devices=tuple(data["devices"]),
        utc_clock=data["utc_clock"], console=_console(data["console"], str(path), raw),
        boot_bus=data["boot_bus"], windows=_windows(data["windows"]),
        ssh=SshSpec(**data["ssh"]) if data["ssh"] else None, default_run=data["default_run"],
        cloud_init=CloudInit(data["cloud_init"]["hostname"] or
                             data["name"].replace(".", "-").replace("_", "-")[:63])
        if data["cloud_init"] is not None else None)


def _media(data: dict | None) -> Media | None:
    return Media(tuple(data["url"]), data["sha256"], data["size"]) if data else None


def _windows(data: dict | None) -> WindowsInstall | None:
    if data is None:
        return None
    return WindowsInstall(**{**data, "iso": _media(data["iso"]),
                             "virtio_win": _media(data["virtio_win"])})


# A password from the environment is typed on a serial console and written into an XML file:
# printable characters only, and not a whole essay.
ENV_PASSWORD = re.compile(r"[ -~]{1,127}")


def _console(data: dict, file: str, raw) -> ConsoleSpec:
    """The console section; ``password_env`` names a variable that, when set, replaces the
    file's password (so a lab's real password never sits in a file in the tree)."""
    become = data["become_root"]
    values = {k: v for k, v in data.items() if k != "password_env"}
    variable = data["password_env"]
    if variable and os.environ.get(variable):
        if not ENV_PASSWORD.fullmatch(os.environ[variable]):
            console = raw["console"]
            line = console.line_of("password_env") if hasattr(console, "line_of") else 1
            raise ConfigError([Problem(file, line, "console.password_env",
                                       f"${variable} must be 1-127 printable ASCII characters "
                                       "(it is typed on a serial console); value not shown")])
        values["password"] = os.environ[variable]
    return ConsoleSpec(**{**values, "become_root": BecomeRoot(**become) if become else None})


MAX_DISK = MAX_DISK_BYTES

# Byte counts: a bare number means bytes.
REGION = s.Map({
    "offset": s.F(s.Size(minimum=0, maximum=MAX_DISK), required=True),
    "length": s.F(s.Size(minimum=512, maximum=MAX_DISK), required=True),
    "block": s.F(s.Size(minimum=512, maximum=64 * s.MiB), required=True),
})


def _check_disk(disk: dict, where: s.Where, raw) -> None:
    sector = disk["sector_size"] or 512
    if sector not in (512, 4096):
        where.at(raw, "sector_size").report(f"must be 512 or 4096, got {sector}")
        return
    if disk["size"] % sector:
        where.at(raw, "size").report(f"{disk['size']} is not a whole number of {sector}-byte "
                                     "sectors")
    for index, r in enumerate(disk["regions"]):
        at = where.at(raw, "regions").at(raw["regions"], index)
        if r is s.MISSING or any(v is s.MISSING for v in r.values()):
            continue
        if r["block"] % sector or r["offset"] % r["block"] or r["length"] % r["block"]:
            at.report(f"offset and length must be whole blocks, and block whole {sector}-byte "
                      "sectors")
        if r["offset"] + r["length"] > disk["size"]:
            at.report(f"ends at byte {r['offset'] + r['length']}, past the disk's {disk['size']}")
        for other in disk["regions"][:index]:
            if other is s.MISSING or any(v is s.MISSING for v in other.values()):
                continue  # reported already
            if r["offset"] < other["offset"] + other["length"] \
                    and other["offset"] < r["offset"] + r["length"]:
                at.report("overlaps an earlier region (each region's data must be its own)")


DISK = s.Map({
    "id": s.F(s.Name(), required=True),
    "bus": s.F(s.Enum("virtio-blk", "nvme", "ahci-hd"), default="virtio-blk"),
    # Like memory, a bare number means MiB (a disk is never a few bytes).
    "size": s.F(s.Size(minimum=s.MiB, maximum=MAX_DISK, bare=s.MiB), required=True),
    "serial": s.F(s.Str(r"[A-Za-z0-9-]{1,20}", "1-20 letters, digits or '-'"), required=True),
    "readonly": s.F(s.Bool(), default=False),
    "sector_size": s.F(s.Int(512, 4096)),
    "seed": s.F(s.Int(0, (1 << 64) - 1), default=1),
    "iops_limit": s.F(s.Int(10, 1_000_000), doc="QEMU block throttling, for deep queues"),
    "regions": s.F(s.ListOf(REGION), default=[]),
}, extra=_check_disk)

NIC = s.Map({
    "id": s.F(s.Name(), required=True),
    "model": s.F(s.Enum("virtio-net"), default="virtio-net"),
    "mac": s.F(s.Mac(), required=True),
    "ssh": s.F(s.Bool(), default=False, doc="steps with channel: ssh reach sshd through it"),
})

SERIAL = s.Map({
    "id": s.F(s.Name(), required=True),
    "port": s.F(s.Enum("com2", "com3", "com4"), required=True),
})


class _Attachment(s.Kind):
    """``- disk: {...}``, ``- nic: {...}`` or ``- serial: {...}``."""

    KINDS = {"disk": DISK, "nic": NIC, "serial": SERIAL}

    def check(self, value, where):
        if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in self.KINDS:
            raise s.Invalid("an attachment is a mapping with one key: disk, nic or serial")
        (kind, body), = value.items()
        line = value.line_of(kind) if hasattr(value, "line_of") else where.line
        return kind, self.KINDS[kind].convert(body, where.child(kind, line))


def _check_scenario(scenario: dict, where: s.Where, _raw) -> None:
    # Items that failed their own checks are MISSING (already reported): skip them here.
    attach = [item for item in scenario["attach"]
              if item is not s.MISSING and item[1] is not s.MISSING
              and not any(v is s.MISSING for v in item[1].values())]
    ids = [body["id"] for _kind, body in attach]
    for ident in {i for i in ids if ids.count(i) > 1}:
        where.child("attach", where.line).report(f"id {ident!r} is used twice")
    ports = [body["port"] for kind, body in attach if kind == "serial"]
    for port in {p for p in ports if ports.count(p) > 1}:
        where.child("attach", where.line).report(f"port {port} is attached twice")
    if len(attach) != len(scenario["attach"]):
        return  # a broken attachment was reported; its ids would only cascade into more errors
    attached = {(kind, body["id"]) for kind, body in attach}
    for index, step in enumerate(scenario["steps"]):
        if step is s.MISSING:
            continue
        name, args, line = step
        for kind in ("disk", "nic", "serial"):
            ident = args.get(kind) if isinstance(args, dict) else None
            if isinstance(ident, str) and (kind, ident) not in attached:
                s.Where(where.file, f"steps[{index}].{name}.{kind}", line, where.problems).report(
                    f"no {kind} with id {ident!r} under attach")


class _CpuCount(s.Kind):
    """A vCPU count, or "max": the backend's maximum, whatever it is on the host."""

    def check(self, value, where):
        if value == "max":
            return value
        try:
            return s.Int(1, 4096).check(value, where)
        except s.Invalid:
            raise s.Invalid(f"must be a number of vCPUs (1-4096) or 'max', "
                            f"got {s.show(value)}") from None


def _check_topology(shape: dict, where: s.Where, _raw) -> None:
    given = [shape[k] is not None for k in ("sockets", "cores", "threads")]
    if any(given) and not all(given):
        where.report("give sockets, cores and threads together")
    elif all(given) and isinstance(shape["cpus"], int) \
            and shape["cpus"] != shape["sockets"] * shape["cores"] * shape["threads"]:
        where.report(f"cpus {shape['cpus']} is not sockets x cores x threads "
                     f"({shape['sockets']} x {shape['cores']} x {shape['threads']})")


VM_SHAPE = s.Map({
    "cpus": s.F(_CpuCount()),
    "sockets": s.F(s.Int(1, 256)),
    "cores": s.F(s.Int(1, 256)),
    "threads": s.F(s.Int(1, 8)),
    "utc_clock": s.F(s.Bool()),
}, extra=_check_topology)

VARIANT = s.Map({
    "id": s.F(s.Name(), required=True),
    "vm": s.F(VM_SHAPE, required=True),
})


def _scenario_schema(steps: s.Kind):
    return s.Map({
        "name": s.F(s.Name(), required=True),
        "description": s.F(s.Str(), default=""),
        "requires": s.F(s.ListOf(s.Enum(*DEVICES), unique=True), default=[]),
        "firmware": s.F(s.ListOf(s.Enum(*FIRMWARES), unique=True, nonempty=True),
                        doc="the firmware profiles the scenario applies to (default: all)"),
        "needs": s.F(s.ListOf(s.Enum(*MACHINE_NEEDS), unique=True), default=[],
                     doc="what the machine must be able to do (each backend says why not)"),
        "vm": s.F(VM_SHAPE, default={}),
        "variants": s.F(s.ListOf(VARIANT, nonempty=True), default=[]),
        "timeout": s.F(s.Seconds(), default=900.0),
        "attach": s.F(s.ListOf(_Attachment()), default=[]),
        "steps": s.F(s.ListOf(steps, nonempty=True), required=True),
    }, extra=_check_scenario)


def _attachment(kind: str, body: dict):
    from .hostdata import Region

    if kind == "disk":
        regions = tuple(Region(r["offset"], r["length"], r["block"]) for r in body["regions"])
        return DiskAttach(body["id"], body["bus"], body["size"], body["serial"],
                          body["readonly"], body["sector_size"], body["seed"], regions,
                          body["iops_limit"])
    if kind == "nic":
        return NicAttach(body["id"], body["model"], body["mac"], body["ssh"])
    return SerialAttach(body["id"], body["port"])


def load_scenario(path: Path, steps: s.Kind) -> Scenario:
    """Load and check one scenario file; raise ConfigError listing every problem found.

    ``steps`` checks each step and its arguments: the steps' own registry (harness.steps,
    through harness.catalog.load_scenario), which sits above the model and is handed in."""
    path = Path(path)
    raw = load_file(path)
    problems: list[Problem] = []
    data = s.validate(raw, _scenario_schema(steps), str(path), problems)
    if problems:
        raise ConfigError(problems)
    steps = tuple(Step(kind, args, line) for kind, args, line in data["steps"])
    attach = tuple(_attachment(kind, body) for kind, body in data["attach"])
    variants = tuple((v["id"], _shape(v["vm"])) for v in data["variants"])
    return Scenario(name=data["name"], description=data["description"], file=path.resolve(),
                    requires=tuple(data["requires"]), timeout=data["timeout"], steps=steps,
                    attach=attach, firmware=tuple(data["firmware"] or ()),
                    needs=tuple(data["needs"]), vm=_shape(data["vm"]), variants=variants)


def _shape(raw: dict) -> VmShape:
    return VmShape(**{k: raw.get(k) for k in VmShape.__dataclass_fields__})
