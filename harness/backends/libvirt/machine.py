"""One running libvirt domain: its consoles, its events, how it ended, and its teardown.

Domains are *transient*, so a domain vanishes when it stops and its exit is read from events,
not from a state that no longer exists:

- QEMU driver: the first QMP ``SHUTDOWN`` event's reason (through libvirt-qemu's monitor event
  API), in the same words as the QEMU backend. This is what tells a reboot from a power-off:
  with ``<on_reboot>destroy</on_reboot>`` libvirt 9.0 turns a guest reset into
  SHUTDOWN(guest)/STOPPED(shutdown) lifecycle events, exactly like a power-off (QEMU's own
  SHUTDOWN event still says ``guest-reset``).
- Lifecycle events (STOPPED: shutdown / destroyed / crashed / failed; CRASHED) and, while the
  domain exists, ``virDomainGetState``'s shutoff reason. A domain that has vanished
  (VIR_ERR_NO_DOMAIN) is judged from the last event seen.
It is apart from the backend (which plans and starts domains) because this state lives on
libvirt's event thread and is all about one domain after it started.

Consoles are libvirt streams (virDomainOpenConsole), except on libvirt's bhyve driver for any
port but the first: bhyveDomainOpenConsole ignores the device name and always opens serials[0]'s
nmdm device, so a data port (COM2) is reached by opening its nmdm B side, named in the live
domain XML, directly (local hosts only; domain_xml refuses remote ones before start).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ...cleanup import run_all
from ...errors import InfraError, Unsupported
from ...vmspec import VmSpec
from . import domain_xml as lx
from ..base import ExitInfo, Machine
from ..bhyve.backend import open_nmdm
from .connection import load_binding
from .console import StreamBridge
from .staging import Stage
from ..qemu.backend import SHUTDOWN_REASONS
from ..usernet import SSH_FORWARD, forwarded_ssh_port, user_netdev_of

if TYPE_CHECKING:
    from .backend import LibvirtBackend

# Exit reasons ---------------------------------------------------------------------------------

# How a domain stopped -> (kind, words). libvirt names the same reasons twice, as
# VIR_DOMAIN_EVENT_STOPPED_<reason> (lifecycle event detail) and VIR_DOMAIN_SHUTOFF_<reason>
# (virDomainGetState reason), with different numbers; the state has two more reasons.
_STOP_REASONS = (
    ("SHUTDOWN", "poweroff", "the guest shut down"),
    ("DESTROYED", "killed", "destroyed by the host"),
    ("CRASHED", "panic", "the guest crashed"),
    ("MIGRATED", "error", "migrated away"),
    ("SAVED", "error", "saved to a file"),
    ("FAILED", "error", "the hypervisor failed"),
    ("FROM_SNAPSHOT", "error", "reverted to a snapshot"),
)
_SHUTOFF_ONLY_REASONS = (
    ("DAEMON", "error", "libvirtd restarted and lost it"),
    ("UNKNOWN", "error", "shut off for an unknown reason"),
)


def _reason_words(libvirt, prefix: str, reasons) -> dict:
    """{libvirt.<prefix><reason>: (kind, words)} for each (reason, kind, words)."""
    return {getattr(libvirt, prefix + reason): (kind, words) for reason, kind, words in reasons}


def _stopped_words(libvirt) -> dict:
    """VIR_DOMAIN_EVENT_STOPPED_* -> (kind, words)."""
    return _reason_words(libvirt, "VIR_DOMAIN_EVENT_STOPPED_", _STOP_REASONS)


def _shutoff_words(libvirt) -> dict:
    """VIR_DOMAIN_SHUTOFF_* (virDomainGetState reason) -> (kind, words)."""
    return _reason_words(libvirt, "VIR_DOMAIN_SHUTOFF_", _STOP_REASONS + _SHUTOFF_ONLY_REASONS)


class LibvirtMachine(Machine):
    def __init__(self, backend: LibvirtBackend, spec: VmSpec, dom, stage: Stage | None):
        """``stage``: the VM's staged files, removed by destroy(). The vars file stays: a
        restart or a restore runs on it again, and it goes with the VM's workdir."""
        self.libvirt = load_binding()
        self.backend = backend
        self.conn = backend.conn
        self.spec = spec
        self.dom = dom
        self.nvme_model = "QEMU NVMe Ctrl" if backend.driver == "qemu" else "bhyve-NVMe"
        self._stage = stage
        self._bridges: list[StreamBridge] = []
        self._ttys: list = []  # nmdm B sides opened directly (bhyve data ports)
        self._changed = threading.Condition()
        self._events: list[tuple] = []   # (kind, detail) lifecycle events, in order
        self._qmp_reason: str | None = None
        self._exit: ExitInfo | None = None
        self._destroyed = False
        self._callbacks: list[int] = []
        self._qmp_callbacks: list[int] = []
        self._resets = 0  # QEMU's RESET events the guest caused (on_reboot=restart)
        # The QEMU driver starts domains paused; the bhyve driver cannot (see resume()).
        self._last_state = "paused" if backend.driver == "qemu" else "running"
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
                for event, callback in (("SHUTDOWN", self._on_qmp_shutdown),
                                        ("RESET", self._on_qmp_reset)):
                    self._qmp_callbacks.append(libvirt_qemu.qemuMonitorEventRegister(
                        self.conn, self.dom, event, callback, None, 0))
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

    def _on_qmp_reset(self, _conn, _dom, _event, _sec, _usec, details, _opaque) -> None:
        """QEMU's RESET event (``guest``: false when libvirt or the harness reset it)."""
        import json
        try:
            guest = json.loads(details or "{}").get("guest", True)
        except ValueError:
            guest = True
        with self._changed:
            self._resets += 1 if guest else 0
            self._changed.notify_all()

    # Machine protocol ----------------------------------------------------------------------
    def resets(self) -> int:
        """Guest resets QEMU reported (the domain keeps running: <on_reboot>restart)."""
        with self._changed:
            return self._resets

    def save(self, state: Path) -> None:
        """``virDomainSave``: libvirt stops the vCPUs, writes the domain's XML and QEMU's
        migration stream to ``state`` and ends the domain; restore() brings it back."""
        try:
            self.dom.save(str(state))
        except self.libvirt.libvirtError as err:
            raise InfraError(f"libvirt could not save {self.spec.name} to {state.name}: "
                             f"{err.get_error_message()}") from None

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

    def ssh_endpoint(self) -> tuple[str, int]:
        """Where the harness reaches the guest's sshd. QEMU driver: ``<interface type='user'>``
        takes no port forward in this libvirt (portForward needs the passt backend), so the
        forward QEMU's own backend has from its command line is added to the running domain
        through libvirt's monitor pass-through (HMP ``hostfwd_add`` on the NIC's user-network
        backend), a loopback port the host picks, read back from ``info usernet``. libvirt
        marks such a domain tainted (custom-monitor): it is the harness's own, and goes at
        the end of the case. bhyve driver: the guest's own address on the bridge."""
        if self.backend.driver == "bhyve":
            if not self.backend.guest_ipv4:
                raise Unsupported("the libvirt bhyve backend reaches the guest's sshd at its "
                                  "address on the bridge: give guest_ipv4=")
            return self.backend.guest_ipv4.split("/")[0], 22
        nic = next((n for n in self.spec.nics if n.ssh_forward), None)
        if nic is None:
            raise InfraError(f"{self.spec.name}: no NIC is marked for SSH")
        port = forwarded_ssh_port(self._hmp("info usernet"))
        if port is None:
            netdev = user_netdev_of(self._hmp("info network"), nic.mac)
            if netdev is None:
                raise InfraError(f"{self.spec.name}: QEMU shows no user-network backend for "
                                 f"the NIC {nic.mac} (info network)")
            self._hmp(f"hostfwd_add {netdev} {SSH_FORWARD}")
            port = forwarded_ssh_port(self._hmp("info usernet"))
        if port is None:
            raise InfraError(f"{self.spec.name}: QEMU did not forward a loopback port to the "
                             "guest's port 22 (hostfwd_add)")
        return "127.0.0.1", port

    def _hmp(self, command: str) -> str:
        """One HMP command through libvirt's QEMU monitor pass-through (libvirt-qemu)."""
        try:
            import libvirt_qemu
            return libvirt_qemu.qemuMonitorCommand(
                self.dom, command, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP) or ""
        except ImportError:
            raise InfraError("libvirt-python without libvirt_qemu: no way to add the SSH "
                             "forward to the domain") from None
        except self.libvirt.libvirtError as err:
            raise InfraError(f"{self.spec.name}: QEMU monitor command {command.split()[0]!r} "
                             f"through libvirt failed: {err.get_error_message()}") from None

    def open_console(self, port: str = "com1"):
        alias = lx.console_alias(self.spec, port)
        if self.backend.driver == "bhyve" and alias != "serial0":
            return self._open_nmdm(port)
        libvirt = self.libvirt
        try:
            # Non-blocking: libvirt's event-loop thread queues incoming data and the bridge
            # polls. Blocking recv and send on one stream from two threads can stall with
            # bytes left in the client (seen: a prompt cut short until more output came).
            stream = self.conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        except libvirt.libvirtError as err:
            raise InfraError(f"cannot open a libvirt stream at {self.backend.uri}: "
                             f"{err.get_error_message()}") from None
        try:
            self.dom.openConsole(alias, stream, 0)
        except libvirt.libvirtError as err:
            try:
                stream.abort()  # the stream is registered with the connection: release it
            except libvirt.libvirtError:
                pass
            raise InfraError(f"cannot open {self.spec.name}'s {port} ({alias}) through "
                             f"libvirt: {err.get_error_message()}") from None
        bridge = StreamBridge(stream, f"{self.spec.name}-{port}")
        self._bridges.append(bridge)
        return bridge.sock

    def _open_nmdm(self, port: str):
        """A bhyve data port's nmdm B side, which virDomainOpenConsole cannot reach (it always
        opens the first serial port: see the module docstring)."""
        if not self.backend.local:
            raise Unsupported(f"cannot reach {self.spec.name}'s {port} at {self.backend.uri}: "
                              f"libvirt's bhyve driver opens only the first serial port as a "
                              f"console stream, and a remote host's nmdm device is out of reach")
        libvirt = self.libvirt
        try:
            path = lx.nmdm_slave(self.dom.XMLDesc(0), port)
        except libvirt.libvirtError as err:
            raise InfraError(f"cannot read {self.spec.name}'s domain XML for its {port}: "
                             f"{err.get_error_message()}") from None
        try:
            stream = open_nmdm(path)
        except OSError as err:
            raise InfraError(f"cannot open {self.spec.name}'s {port} ({path}): {err}") from None
        self._ttys.append(stream)
        return stream

    def resume(self) -> None:
        """Let the paused domain run (QEMU driver).

        A no-op on libvirt's bhyve driver: it cannot start a domain paused
        (bhyveDomainCreateXML rejects VIR_DOMAIN_START_PAUSED) and has no suspend/resume, so
        the domain is running already. The console is attached right after create, and bhyve's
        UEFI firmware or bhyveload take seconds before the guest's first byte, so in practice
        nothing the guest prints is lost."""
        if self.backend.driver == "bhyve":
            return
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
        """Destroy the domain however far start got; stop listening; remove staged files;
        close consoles. Every step runs even if one before raised (harness/cleanup.py): the
        quick file removals come before the console threads' joins, where a second signal
        is most likely to land."""
        if self._destroyed:
            return
        self._destroyed = True
        bridges, self._bridges = self._bridges, []
        ttys, self._ttys = self._ttys, []
        run_all(self._destroy_domain, self._stop_listening,
                lambda: self._stage is not None and self._stage.remove(),
                *[bridge.close for bridge in bridges], *[tty.close for tty in ttys])

    def _destroy_domain(self) -> None:
        libvirt = self.libvirt
        try:  # even after an exit was seen: a crashed domain can still be active
            if self.dom.isActive():
                self.dom.destroy()
                if self._exit is None:
                    self._set_exit("killed", "destroyed by the harness")
        except libvirt.libvirtError:
            pass  # already gone
        try:
            if self.dom.isPersistent():  # never ours, but leave nothing defined
                self.dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        except libvirt.libvirtError:
            pass

    def _stop_listening(self) -> None:
        """Deregister the lifecycle and QEMU-monitor event callbacks."""
        libvirt = self.libvirt
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                self.conn.domainEventDeregisterAny(callback)
            except libvirt.libvirtError:
                pass
        qmp_callbacks, self._qmp_callbacks = self._qmp_callbacks, []
        for callback in qmp_callbacks:
            try:
                import libvirt_qemu
                libvirt_qemu.qemuMonitorEventDeregister(self.conn, callback)
            except (ImportError, libvirt.libvirtError):
                pass
