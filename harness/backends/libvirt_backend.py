"""The libvirt backend: the same VMs as the QEMU and bhyve backends, started through libvirtd.

One backend talks to one libvirt URI: ``qemu:///system`` (domain type 'qemu', i.e. TCG, unless
``domain_type='kvm'``), ``qemu+tcp://host/system``, ``bhyve:///system`` ... Domains are
*transient* (``virDomainCreateXML``), named after the VmSpec (refvm-<run id>-<n>), started
paused (VIR_DOMAIN_START_PAUSED) so the console is attached through ``virDomainOpenConsole``
before the first byte, then resumed. A transient domain vanishes when it stops, so its exit is
read from events, not from a state that no longer exists:

- QEMU driver: the first QMP ``SHUTDOWN`` event's reason (through libvirt-qemu's monitor event
  API), in the same words as the QEMU backend. This is what tells a reboot from a power-off:
  with ``<on_reboot>destroy</on_reboot>`` libvirt 9.0 turns a guest reset into
  SHUTDOWN(guest)/STOPPED(shutdown) lifecycle events, exactly like a power-off (QEMU's own
  SHUTDOWN event still says ``guest-reset``).
- Lifecycle events (STOPPED: shutdown / destroyed / crashed / failed; CRASHED) and, while the
  domain exists, ``virDomainGetState``'s shutoff reason. A domain that has vanished
  (VIR_ERR_NO_DOMAIN) is judged from the last event seen.

File access (qemu:///system runs QEMU as user libvirt-qemu, which cannot enter /root or a 0700
pytest tmpdir). The least surprising fix that needs no change to libvirt's configuration:

- every file stays where the harness put it whenever libvirt's QEMU can reach it (every parent
  directory searchable by others, as /tmp/refvm-<run id>/ is with the usual umask);
- a file it cannot reach (the image cache under /root/.cache, a 0700 REFVM_TMP) is *hard-linked*
  into ``/var/lib/libvirt/images/<vm name>/`` (libvirt's own image directory, mode 0711), so the
  VM and the harness see the same inode: what the guest writes is what the harness verifies. A
  read-only image on another filesystem is copied instead; a writable one cannot be, and is an
  InfraError naming the directory to open up. The staging directory is removed by destroy();
- read-only disks carry ``<seclabel model='dac' relabel='no'/>`` so libvirt never chowns the
  shared cached image; writable disks and the per-VM UEFI vars copy are chowned to libvirt-qemu
  by libvirt's DAC driver (dynamic_ownership, on by default) for the run and given back to root
  when the domain stops.
For a URI naming another host, paths are used as they are: the images and scratch directories
must exist at the same paths there (nothing is staged or copied across hosts).
"""
from __future__ import annotations

import dataclasses
import errno
import os
import re
import shutil
import stat
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

from .. import firmware as fw
from ..errors import InfraError
from ..vmspec import VmSpec
from . import libvirt_xml as lx
from .base import Backend, ExitInfo, Machine
from .libvirt_console import StreamBridge
from .qemu import SHUTDOWN_REASONS

STAGE_ROOT = Path("/var/lib/libvirt/images")
NAME_RE = re.compile(r"^refvm-([0-9a-f]+)-(\d+)$")
SETUP_HINT = "run .ci/libvirt-setup (installs libvirt, starts libvirtd and virtlogd)"

_loop_lock = threading.Lock()
_loop_started = False


def _libvirt():
    try:
        import libvirt
    except ImportError:
        raise InfraError("the libvirt backend needs the libvirt Python binding: "
                         "pip install libvirt-python (needs libvirt-dev, pkg-config and gcc), "
                         "or apt-get install python3-libvirt") from None
    return libvirt


def _ensure_event_loop() -> None:
    """libvirt's default event loop, run by one daemon thread for the whole process.

    It must be registered before a connection is opened for that connection to deliver
    domain events (and keepalives on remote URIs).
    """
    global _loop_started
    libvirt = _libvirt()
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised anyway

        def run():
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


def connect(uri: str):
    """Open ``uri`` with events enabled; InfraError (with the fix) if libvirtd is unreachable."""
    _ensure_event_loop()
    libvirt = _libvirt()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as err:
        raise InfraError(f"cannot connect to libvirt at {uri}: {err.get_error_message()}; "
                         f"{SETUP_HINT}") from None
    try:
        conn.setKeepAlive(5, 6)
    except libvirt.libvirtError:
        pass  # local drivers without keepalive support
    return conn


def is_local(uri: str) -> bool:
    host = urlparse(uri).hostname
    return host in (None, "", "localhost", "127.0.0.1", "::1")


def others_can_reach(path: Path, read_file: bool) -> bool:
    """Whether a user who is neither owner nor group (libvirt-qemu) can reach ``path``."""
    path = Path(os.path.abspath(path))
    for parent in list(path.parents)[:-1][::-1] + [path.parent]:
        try:
            if not parent.stat().st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    if read_file:
        try:
            return bool(path.stat().st_mode & stat.S_IROTH)
        except OSError:
            return False
    return True


def _blocking_dir(path: Path) -> Path:
    for parent in list(Path(os.path.abspath(path)).parents)[::-1]:
        if not parent.stat().st_mode & stat.S_IXOTH:
            return parent
    return path.parent


class LibvirtBackend(Backend):
    name = "libvirt"

    def __init__(self, uri: str = "qemu:///system", domain_type: str | None = None,
                 stage_root: Path = STAGE_ROOT, bridge: str = "bridge0",
                 host_address: str | None = None, guest_ipv4: str | None = None,
                 ovmf: fw.FirmwareCandidates = fw.QEMU_OVMF,
                 seabios: fw.FirmwareCandidates = fw.QEMU_SEABIOS):
        self.uri = uri
        self.driver = "bhyve" if urlparse(uri).scheme.split("+")[0] == "bhyve" else "qemu"
        # /dev/kvm may exist and still hang guests (nested hosts): TCG unless asked for kvm.
        self.domain_type = domain_type or ("bhyve" if self.driver == "bhyve" else "qemu")
        self.stage_root = Path(stage_root)
        self.bridge = bridge
        self.host_address = host_address  # bhyve: the bridge's address on the host
        self.guest_ipv4 = guest_ipv4      # bhyve: CIDR the guest sets itself (no DHCP)
        self.ovmf, self.seabios = ovmf, seabios
        self.firmwares = ("uefi", "csm", "bhyveload") if self.driver == "bhyve" \
            else ("uefi", "csm")
        self._conn = None
        self._caps: dict = {}

    # Host facts ------------------------------------------------------------------------------
    @property
    def conn(self):
        if self._conn is None:
            self._conn = connect(self.uri)
        return self._conn

    @property
    def local(self) -> bool:
        return is_local(self.uri)

    def version(self) -> tuple:
        return lx.parse_version(self.conn.getLibVersion())

    def where(self) -> str:
        return f"libvirt {'.'.join(map(str, self.version()))} at {self.uri}"

    def describe(self) -> str:
        try:
            hv = lx.parse_version(self.conn.getVersion())
            hv_text = f"{self.conn.getType()} {'.'.join(map(str, hv))}"
        except Exception:  # noqa: BLE001 - describe() is for reports only
            hv_text = "hypervisor version unknown"
        return f"{self.where()}: {hv_text}; domain type {self.domain_type}"

    def domain_capabilities(self) -> str:
        key = (self.domain_type, self.driver)
        if key not in self._caps:
            machine = "q35" if self.driver == "qemu" else None
            libvirt = _libvirt()
            try:
                self._caps[key] = self.conn.getDomainCapabilities(
                    None, "x86_64", machine, self.domain_type, 0)
            except libvirt.libvirtError as err:
                raise InfraError(f"{self.where()} reports no capabilities for domain type "
                                 f"{self.domain_type!r}: {err.get_error_message()}") from None
        return self._caps[key]

    # Firmware ---------------------------------------------------------------------------------
    def _offered_loaders(self) -> list[str]:
        import xml.etree.ElementTree as ET
        caps = ET.fromstring(self.domain_capabilities())
        return [v.text for v in caps.findall("os/loader/value")]

    def _pick(self, candidates: fw.FirmwareCandidates):
        """The first candidate the host offers (remote: by its domain capabilities)."""
        if self.local:
            return candidates.find()
        offered = self._offered_loaders()
        for candidate in candidates.candidates:
            code = candidate.code if isinstance(candidate, fw.UefiPair) else candidate
            if str(code) in offered:
                return candidate
        raise InfraError(f"{self.where()} offers none of {candidates.what}: it lists "
                         f"{', '.join(offered) or 'no firmware'}; {candidates.package}")

    def firmware_for(self, spec: VmSpec) -> lx.FirmwareFiles:
        nvram = spec.workdir / "uefi-vars.fd"
        if self.driver == "qemu":
            if spec.firmware == "uefi":
                pair = self._pick(self.ovmf)
                return lx.FirmwareFiles(pair.code, "pflash", pair.vars_template, nvram)
            if spec.firmware == "csm":
                if not self.local:  # QEMU's default BIOS on q35 is SeaBIOS's bios-256k.bin
                    return lx.FirmwareFiles()
                return lx.FirmwareFiles(self.seabios.find(), "rom")
        else:
            if spec.firmware == "uefi":
                if self.version() >= lx.BHYVE_SINCE["nvram"]:
                    pair = self._pick(fw.BHYVE_UEFI_PAIR)
                    return lx.FirmwareFiles(pair.code, "pflash", pair.vars_template, nvram)
                return lx.FirmwareFiles(self._pick(fw.BHYVE_UEFI_SINGLE), "pflash")
            if spec.firmware == "csm":
                return lx.FirmwareFiles(self._pick(fw.BHYVE_UEFI_CSM), "pflash")
            if spec.firmware == "bhyveload":
                return lx.FirmwareFiles()
        raise InfraError(f"the libvirt backend ({self.driver} driver) cannot boot firmware "
                         f"{spec.firmware!r}")

    def options(self) -> lx.Options:
        cpu = None
        if self.driver == "qemu":
            cpu = "host-passthrough" if self.domain_type == "kvm" else "maximum"
        return lx.Options(domain_type=self.domain_type, cpu_mode=cpu, bridge=self.bridge)

    # Plans ------------------------------------------------------------------------------------
    def command_lines(self, spec: VmSpec) -> list[list[str]]:
        """What start() amounts to, as a command a person can rerun (the XML is in logdir)."""
        return [["virsh", "-c", self.uri, "create", "--paused", str(spec.logdir / "domain.xml")]]

    def domain_xml(self, spec: VmSpec, disk_paths: dict | None = None,
                   firmware: lx.FirmwareFiles | None = None) -> str:
        """The checked domain XML for ``spec`` (raises InfraError for what the host lacks)."""
        domain = lx.build_domain(spec, self.driver, firmware or self.firmware_for(spec),
                                 self.options(), disk_paths)
        lx.check_capabilities(domain, self.domain_capabilities(), self.where(),
                              self.version() if self.driver == "bhyve" else None)
        return lx.to_xml(domain)

    # Lifecycle -------------------------------------------------------------------------------
    def start(self, spec: VmSpec) -> "LibvirtMachine":
        libvirt = _libvirt()
        spec.workdir.mkdir(parents=True, exist_ok=True)
        spec.logdir.mkdir(parents=True, exist_ok=True)
        stage = Stage(self.stage_root / spec.name) if self.local else None
        try:
            firmware = self.firmware_for(spec)
            if firmware.nvram is not None and self.local:
                fw.make_vars_copy(firmware.vars_template, firmware.nvram)
            disk_paths = {}
            if stage is not None:
                for disk in spec.disks:
                    disk_paths[disk.path] = stage.reachable(disk.path, disk.readonly)
                if firmware.nvram is not None:
                    firmware = dataclasses.replace(
                        firmware, nvram=stage.reachable(firmware.nvram, readonly=False))
            xml = self.domain_xml(spec, disk_paths, firmware)
            (spec.logdir / "domain.xml").write_text(xml)
            (spec.logdir / "command.txt").write_text(
                " ".join(self.command_lines(spec)[0]) + "\n")
            try:
                dom = self.conn.createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED)
            except libvirt.libvirtError as err:
                raise InfraError(f"{self.where()} refused to start {spec.name}: "
                                 f"{err.get_error_message()}{self._qemu_log_tail(spec)}") from None
        except BaseException:
            if stage is not None:
                stage.remove()
            raise
        return LibvirtMachine(self, spec, dom, stage,
                              spec.workdir / "uefi-vars.fd" if self.local else None)

    def _qemu_log_tail(self, spec: VmSpec) -> str:
        log = Path("/var/log/libvirt/qemu") / f"{spec.name}.log"
        if not self.local or self.driver != "qemu" or not log.is_file():
            return ""
        lines = log.read_text(errors="replace").splitlines()[-5:]
        return "; its QEMU log ends:\n" + "\n".join(lines)


class Stage:
    """Per-VM links (or copies) of files libvirt's QEMU could not otherwise reach."""

    def __init__(self, root: Path):
        self.root = root
        self.made: list[Path] = []

    def reachable(self, path: Path, readonly: bool) -> Path:
        path = Path(path)
        if others_can_reach(path, read_file=readonly):
            return path
        self.root.mkdir(mode=0o711, parents=True, exist_ok=True)
        self.root.chmod(0o711)
        dest = self.root / f"{len(self.made)}-{path.name}"
        # A read-only file others cannot read is copied (never chmod the shared inode);
        # anything else is linked, so the harness and the guest share the file.
        private = readonly and not path.stat().st_mode & stat.S_IROTH
        try:
            if private:
                raise OSError(errno.EPERM, "not readable by others")
            os.link(path, dest)
        except OSError as err:
            if err.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            if not readonly:
                raise InfraError(
                    f"libvirt's QEMU cannot reach {path} (directory {_blocking_dir(path)} is "
                    f"closed to other users) and it cannot be hard-linked into {self.root} "
                    f"(another filesystem): give that directory o+x, or set REFVM_TMP to a "
                    f"directory on the filesystem of {self.root.parent}") from None
            shutil.copyfile(path, dest)
            dest.chmod(0o644)
        self.made.append(dest)
        return dest

    def remove(self) -> None:
        for made in self.made:
            try:
                made.unlink()
            except FileNotFoundError:
                pass
        self.made.clear()
        shutil.rmtree(self.root, ignore_errors=True)


# Exit reasons ---------------------------------------------------------------------------------

def _stopped_words(libvirt) -> dict:
    return {  # VIR_DOMAIN_EVENT_STOPPED_* -> (kind, words)
        libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: ("poweroff", "the guest shut down"),
        libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: ("killed", "destroyed by the host"),
        libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: ("panic", "the guest crashed"),
        libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED: ("error", "migrated away"),
        libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED: ("error", "saved to a file"),
        libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: ("error", "the hypervisor failed"),
        libvirt.VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT: ("error", "reverted to a snapshot"),
    }


def _shutoff_words(libvirt) -> dict:
    return {  # VIR_DOMAIN_SHUTOFF_* (virDomainGetState reason) -> (kind, words)
        libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: ("poweroff", "the guest shut down"),
        libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: ("killed", "destroyed by the host"),
        libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: ("panic", "the guest crashed"),
        libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED: ("error", "migrated away"),
        libvirt.VIR_DOMAIN_SHUTOFF_SAVED: ("error", "saved to a file"),
        libvirt.VIR_DOMAIN_SHUTOFF_FAILED: ("error", "the hypervisor failed"),
        libvirt.VIR_DOMAIN_SHUTOFF_FROM_SNAPSHOT: ("error", "reverted to a snapshot"),
        libvirt.VIR_DOMAIN_SHUTOFF_DAEMON: ("error", "libvirtd restarted and lost it"),
        libvirt.VIR_DOMAIN_SHUTOFF_UNKNOWN: ("error", "shut off for an unknown reason"),
    }


class LibvirtMachine(Machine):
    def __init__(self, backend: LibvirtBackend, spec: VmSpec, dom, stage: Stage | None,
                 nvram: Path | None):
        self.libvirt = _libvirt()
        self.backend = backend
        self.conn = backend.conn
        self.spec = spec
        self.dom = dom
        self.nvme_model = "QEMU NVMe Ctrl" if backend.driver == "qemu" else "bhyve-NVMe"
        self._stage = stage
        self._nvram = nvram
        self._bridges: list[StreamBridge] = []
        self._changed = threading.Condition()
        self._events: list[tuple] = []   # (kind, detail) lifecycle events, in order
        self._qmp_reason: str | None = None
        self._exit: ExitInfo | None = None
        self._destroyed = False
        self._callbacks: list[int] = []
        self._qmp_callback: int | None = None
        self._last_state = "paused"
        self._register()

    def _register(self) -> None:
        libvirt = self.libvirt
        try:
            self._callbacks.append(self.conn.domainEventRegisterAny(
                self.dom, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None))
        except libvirt.libvirtError as err:
            self.destroy()
            raise InfraError(f"cannot watch {self.spec.name}'s events: "
                             f"{err.get_error_message()}") from None
        if self.backend.driver == "qemu":
            try:
                import libvirt_qemu
                self._qmp_callback = libvirt_qemu.qemuMonitorEventRegister(
                    self.conn, self.dom, "SHUTDOWN", self._on_qmp_shutdown, None, 0)
            except (ImportError, libvirt.libvirtError):
                pass  # a reboot then reads as a power-off: see the module docstring

    # Event callbacks (libvirt's event thread) --------------------------------------------------
    def _on_lifecycle(self, _conn, _dom, event: int, detail: int, _opaque) -> None:
        with self._changed:
            self._events.append((event, detail))
            self._changed.notify_all()

    def _on_qmp_shutdown(self, _conn, _dom, _event, _sec, _usec, details, _opaque) -> None:
        import json
        try:
            reason = json.loads(details or "{}").get("reason")
        except ValueError:
            reason = None
        with self._changed:
            if self._qmp_reason is None and reason:  # the first: later ones are libvirt's kill
                self._qmp_reason = reason
            self._changed.notify_all()

    # Machine protocol ----------------------------------------------------------------------
    def host_address_for_guest(self) -> str:
        if self.backend.driver == "qemu":
            return "10.0.2.2"  # <interface type='user'>: QEMU user networking
        if self.backend.host_address:
            return self.backend.host_address
        raise InfraError(f"the libvirt bhyve backend needs host_address= (the address of "
                         f"bridge {self.backend.bridge} on the host) for network scenarios")

    def host_listen_address(self) -> str:
        # QEMU user networking forwards 10.0.2.2 to the host's loopback; on a bhyve bridge
        # the listener binds to the bridge's own address.
        if self.backend.driver == "qemu":
            return "127.0.0.1"
        return self.host_address_for_guest()

    def guest_static_ipv4(self) -> str | None:
        # QEMU user networking has DHCP; a plain bhyve bridge has none unless configured.
        return self.backend.guest_ipv4 if self.backend.driver == "bhyve" else None

    def open_console(self, port: str = "com1"):
        alias = lx.console_alias(self.spec, port)
        libvirt = self.libvirt
        try:
            stream = self.conn.newStream(0)
            self.dom.openConsole(alias, stream, 0)
        except libvirt.libvirtError as err:
            raise InfraError(f"cannot open {self.spec.name}'s {port} ({alias}) through "
                             f"libvirt: {err.get_error_message()}") from None
        bridge = StreamBridge(stream, f"{self.spec.name}-{port}")
        self._bridges.append(bridge)
        return bridge.sock

    def resume(self) -> None:
        try:
            self.dom.resume()
        except self.libvirt.libvirtError as err:
            raise InfraError(f"cannot resume {self.spec.name}: {err.get_error_message()}") \
                from None
        self._last_state = "running"

    def poll(self) -> ExitInfo | None:
        if self._exit is not None:
            return self._exit
        libvirt = self.libvirt
        try:
            state, reason = self.dom.state()
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise InfraError(f"lost {self.spec.name} at {self.backend.uri}: "
                                 f"{err.get_error_message()}") from None
            return self._vanished()
        if state == libvirt.VIR_DOMAIN_SHUTOFF:
            kind, words = _shutoff_words(libvirt).get(reason, ("error", f"shutoff {reason}"))
            return self._set_exit(kind, words)
        if state == libvirt.VIR_DOMAIN_CRASHED:
            return self._set_exit("panic", "the guest crashed (domain state crashed)")
        self._last_state = {libvirt.VIR_DOMAIN_PAUSED: "paused"}.get(state, "running")
        return None

    def _vanished(self) -> ExitInfo:
        """The transient domain is gone: judge by the events (they may trail the state)."""
        libvirt = self.libvirt
        deadline = time.monotonic() + 2.0
        with self._changed:
            while self._stopped_event() is None and time.monotonic() < deadline:
                self._changed.wait(0.1)
            stopped = self._stopped_event()
        if stopped is not None:
            kind, words = _stopped_words(libvirt).get(stopped, ("error", f"stopped {stopped}"))
            if any(e == libvirt.VIR_DOMAIN_EVENT_CRASHED for e, _ in self._events):
                kind, words = "panic", "the guest crashed"
            return self._set_exit(kind, words)
        return self._set_exit("killed", f"the domain vanished; last seen {self._last_state}")

    def _stopped_event(self):
        for event, detail in reversed(self._events):
            if event == self.libvirt.VIR_DOMAIN_EVENT_STOPPED:
                return detail
        return None

    def _set_exit(self, kind: str, words: str) -> ExitInfo:
        qmp = self._qmp_reason
        if qmp in SHUTDOWN_REASONS:  # QEMU's own reason is the precise one (guest-reset)
            kind, words = SHUTDOWN_REASONS[qmp], f"{words}; QEMU: {qmp}"
        self._exit = ExitInfo(kind, None, f"libvirt: {words}")
        return self._exit

    def wait_exit(self, timeout: float) -> ExitInfo | None:
        deadline = time.monotonic() + timeout
        while True:
            info = self.poll()
            if info is not None:
                return info
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with self._changed:
                self._changed.wait(min(left, 0.5))

    def destroy(self) -> None:
        """Destroy the domain however far start got; close consoles; remove staged files."""
        if self._destroyed:
            return
        self._destroyed = True
        libvirt = self.libvirt
        try:
            if self._exit is None:
                try:
                    if self.dom.isActive():
                        self.dom.destroy()
                        self._set_exit("killed", "destroyed by the harness")
                except libvirt.libvirtError:
                    pass  # already gone
            try:
                if self.dom.isPersistent():  # never ours, but leave nothing defined
                    self.dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            except libvirt.libvirtError:
                pass
        finally:
            for bridge in self._bridges:
                bridge.close()
            self._bridges.clear()
            for callback in self._callbacks:
                try:
                    self.conn.domainEventDeregisterAny(callback)
                except libvirt.libvirtError:
                    pass
            self._callbacks.clear()
            if self._qmp_callback is not None:
                try:
                    import libvirt_qemu
                    libvirt_qemu.qemuMonitorEventDeregister(self.conn, self._qmp_callback)
                except (ImportError, libvirt.libvirtError):
                    pass
                self._qmp_callback = None
            if self._stage is not None:
                self._stage.remove()
            if self._nvram is not None:
                try:
                    self._nvram.unlink()
                except FileNotFoundError:
                    pass


# Leftovers of dead runs ------------------------------------------------------------------------

def run_id_of(name: str) -> str | None:
    match = NAME_RE.match(name)
    return match.group(1) if match else None


def reap_domains(conn, live_run_ids, stage_root: Path | None = STAGE_ROOT,
                 log=lambda _text: None) -> list[str]:
    """Destroy (and undefine) refvm-* domains whose run id is not live; return their names.

    Also removes the staging directories of those runs under ``stage_root`` (local hosts).
    Domains not named refvm-<hex>-<n> are never touched. Only point this at a host whose
    refvm runs all start on this machine: ``live_run_ids`` is what this machine knows.
    """
    libvirt = _libvirt()
    live = set(live_run_ids)
    reaped = []
    for dom in conn.listAllDomains(0):
        try:
            name = dom.name()
        except libvirt.libvirtError:
            continue
        run_id = run_id_of(name)
        if run_id is None or run_id in live:
            continue
        try:
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                log(f"could not remove stale domain {name}: {err.get_error_message()}")
                continue
        log(f"removed stale libvirt domain {name}")
        reaped.append(name)
    if stage_root is not None and Path(stage_root).is_dir():
        for staged in Path(stage_root).glob("refvm-*"):
            run_id = run_id_of(staged.name)
            if run_id is not None and run_id not in live and staged.is_dir():
                shutil.rmtree(staged, ignore_errors=True)
                log(f"removed stale {staged}")
    return reaped


def live_run_ids(root: Path | None = None) -> set[str]:
    """Run ids whose harness process is alive (harness/reaper.py's owner.json logic)."""
    from ..paths import temp_root
    from ..reaper import owner_alive

    root = root or temp_root()
    return {p.name[len("refvm-"):] for p in root.glob("refvm-*")
            if p.is_dir() and not p.is_symlink() and owner_alive(p)}
