"""What LibvirtBackend.start and LibvirtMachine.open_console leave behind when something fails.

A failed start must not leave a running domain or staged links under libvirt's image directory
(the reaper only removes dead runs' leftovers), a VM the host cannot run must be refused before
anything is staged, and a console libvirt refuses must not leave its stream registered with the
connection. The connection is tests.test_libvirt_drivers' RecordingLibvirtConnection.
"""
from __future__ import annotations

import pytest

from harness import firmware as fw
from harness.backends.libvirt import backend as libvirt_backend
from harness.errors import InfraError, Unsupported
from tests.test_libvirt_drivers import (  # noqa: F401 - no_qemu_monitor_events: autouse
                                        RecordingLibvirtConnection, RejectedByDriver, no_qemu_monitor_events, qemu_backend, vm)
from tests.test_libvirt_xml import QEMU_CAPS


def staged_vm(tmp_path, firmware="csm"):
    """A VM whose image libvirt's QEMU user cannot reach, so start() stages it."""
    tmp_path.chmod(0o700)
    return vm(tmp_path, firmware)


def ovmf_in(tmp_path):
    """An OVMF pair in tmp_path, and domain capabilities whose firmware list has it."""
    code, template = tmp_path / "OVMF_CODE.fd", tmp_path / "OVMF_VARS.fd"
    code.write_bytes(b"code")
    template.write_bytes(b"\0" * 4096)
    return (fw.FirmwareCandidates("OVMF", "test", (fw.UefiPair(code, template),)),
            QEMU_CAPS.replace("/usr/share/OVMF/OVMF_CODE_4M.fd", str(code)))


# A failure after createXML -------------------------------------------------------------------

def test_a_failure_after_create_destroys_the_domain_and_unstages(tmp_path, monkeypatch):
    """start()'s own clean-up: nothing else knows the domain yet if LibvirtMachine cannot be
    built, and the exception must be the original one, not a clean-up error."""
    failure = RuntimeError("no machine")

    def machine_that_cannot_be_built(*_args):
        raise failure

    monkeypatch.setattr(libvirt_backend, "LibvirtMachine", machine_that_cannot_be_built)
    conn = RecordingLibvirtConnection("qemu", QEMU_CAPS)
    spec = staged_vm(tmp_path)
    with pytest.raises(RuntimeError) as raised:
        qemu_backend(tmp_path, conn).start(spec)
    assert raised.value is failure
    stage_dir = tmp_path / "stage" / spec.name
    (xml, _flags), = conn.created
    assert str(stage_dir) in xml  # the image was staged: there was something to remove
    assert conn.domains[0].calls == [("destroy",)]
    assert not stage_dir.exists()


class InterruptedWhileRegistering(RecordingLibvirtConnection):
    """Ctrl-C arrives while LibvirtMachine registers for the new domain's events."""

    def domainEventRegisterAny(self, *_args):
        raise KeyboardInterrupt


def test_an_interrupt_while_registering_events_still_destroys_the_domain(tmp_path):
    """LibvirtMachine cleans up only after a libvirtError; a KeyboardInterrupt reaches
    start()'s ``except BaseException``, which must destroy the domain and unstage."""
    conn = InterruptedWhileRegistering("qemu", QEMU_CAPS)
    spec = staged_vm(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        qemu_backend(tmp_path, conn).start(spec)
    assert conn.domains[0].calls == [("destroy",)]
    assert not (tmp_path / "stage" / spec.name).exists()


class RefusingEvents(RecordingLibvirtConnection):
    """libvirtd refuses to register the lifecycle event callback."""

    def domainEventRegisterAny(self, *_args):
        raise RejectedByDriver("this function is not supported by the connection driver")


def test_refused_event_registration_is_an_infra_error_leaving_nothing(tmp_path):
    """A start that fails after it made the UEFI vars copy removes it (a running VM's vars
    file outlives destroy(): a restart or a restore runs on it again)."""
    ovmf, caps = ovmf_in(tmp_path)
    conn = RefusingEvents("qemu", caps)
    backend = qemu_backend(tmp_path, conn)
    backend.ovmf = ovmf
    spec = staged_vm(tmp_path, "uefi")
    with pytest.raises(InfraError, match="cannot watch refvm-0123abcd-1's events: this "
                                         "function is not supported"):
        backend.start(spec)
    assert ("destroy",) in conn.domains[0].calls and not conn.domains[0].active
    assert not (tmp_path / "stage" / spec.name).exists()
    assert not (spec.workdir / "uefi-vars.fd").exists()


# Refused before staging ----------------------------------------------------------------------

def test_a_vm_the_host_cannot_run_is_refused_before_anything_is_staged(tmp_path):
    """The check before the try block: a refusal after staging would leave the vars copy and
    the stage root behind (the clean-up removes only the VM's own stage directory)."""
    conn = RecordingLibvirtConnection("qemu", QEMU_CAPS)  # does not list the test OVMF
    backend = qemu_backend(tmp_path, conn)
    backend.ovmf, _caps = ovmf_in(tmp_path)
    spec = staged_vm(tmp_path, "uefi")
    with pytest.raises(Unsupported, match=r"OVMF_CODE.fd</loader>: the host's firmware list"):
        backend.start(spec)
    assert conn.created == []
    assert not (spec.workdir / "uefi-vars.fd").exists()
    assert not (tmp_path / "stage").exists()


# A console libvirt refuses -------------------------------------------------------------------

class ReleaseRecordingStream:
    """A console stream that records whether it was released (aborted) or finished."""

    def __init__(self, abort_fails: bool):
        self.abort_fails = abort_fails
        self.aborted = self.finished = 0

    def abort(self):
        self.aborted += 1
        if self.abort_fails:
            raise RejectedByDriver("stream is not open")

    def finish(self):
        self.finished += 1


class ConsoleRefusingConnection(RecordingLibvirtConnection):
    """Its domains refuse virDomainOpenConsole as libvirt does when the console is taken."""

    def __init__(self, *args, abort_fails=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.abort_fails = abort_fails
        self.streams: list[ReleaseRecordingStream] = []

    def newStream(self, _flags):
        self.streams.append(ReleaseRecordingStream(self.abort_fails))
        return self.streams[-1]

    def createXML(self, xml, flags):
        dom = super().createXML(xml, flags)

        def refuse(_dev, _stream, _flags):
            raise RejectedByDriver("operation failed: Active console session exists for "
                                   "this domain")

        dom.openConsole = refuse
        return dom


@pytest.mark.parametrize("abort_fails", [False, True], ids=["abort-ok", "abort-fails"])
def test_a_refused_console_releases_its_stream_and_names_the_port(tmp_path, abort_fails):
    """newStream registered the stream with the connection: it must be aborted, and the
    error must be libvirt's refusal naming the port, even if the abort itself fails."""
    conn = ConsoleRefusingConnection("qemu", QEMU_CAPS, abort_fails=abort_fails)
    machine = qemu_backend(tmp_path, conn).start(vm(tmp_path, "csm"))
    try:
        with pytest.raises(InfraError, match=r"cannot open refvm-0123abcd-1's com1 \(serial0\) "
                                             r"through libvirt: operation failed: Active "
                                             r"console session exists"):
            machine.open_console("com1")
        (stream,) = conn.streams
        assert (stream.aborted, stream.finished) == (1, 0)
    finally:
        machine.destroy()
