"""UART: COM1 stays the console while another COM port carries raw data both ways.

The scenario states the line settings (speed, 8N1, no flow control); the guest sets them with
its own tools. 64 KiB of random bytes go host -> guest and guest -> host; both ends hash.
"""
from __future__ import annotations

import os
import threading

from .. import schema as s
from ..errors import GuestFailure
from ..hostdata import sha256
from ..hostio import serial_receive, serial_send
from ..model import SerialAttach
from .registry import register
from .guestops import first_sha256, guest_op, integers


@register("uart_check", s.Map({
    "serial": s.F(s.Name(), required=True),
    "bytes": s.F(s.Size(minimum=1), default=64 << 10),
    "baud": s.F(s.Int(50, 4000000), default=115200),
    "timeout": s.F(s.Seconds(), default=180.0),
}))
def uart_check(ctx, args):
    attach = ctx.case.scenario.attachment(SerialAttach, args["serial"])
    index = int(attach.port[-1]) - 1  # com2 -> ttyS1 / cuau1 / COM2
    dev = ctx.guest.device_command("uart_device", index=index, number=index + 1)
    nbytes, timeout = args["bytes"], args["timeout"]
    ctx.record(f"{attach.id}_line", f"{dev} {args['baud']} 8N1 raw, no flow control")
    guest_op(ctx, "uart_setup", dev=dev, baud=args["baud"])
    stream = ctx.vm.machine.open_console(attach.port)

    # Host -> guest: the guest's reader must be running before the bytes arrive.
    # The line speed again: Windows' SerialPort opens at its own 9600 unless told.
    pid, = integers(guest_op(ctx, "uart_receive_start", dev=dev, length=nbytes,
                             baud=args["baud"]).output,
                    "uart reader pid")
    payload = os.urandom(nbytes)
    serial_send(stream, payload, corrupt="uart-to-guest" in ctx.faults)
    out = guest_op(ctx, "uart_receive_finish", timeout=timeout, pid=pid).output
    count, = integers(out, "uart byte count")
    received = first_sha256(out, "uart_receive_finish")
    ctx.record(f"{attach.id}_host_to_guest_bytes", count)
    ctx.record(f"{attach.id}_host_to_guest_sha256", sha256(payload))
    if count != nbytes or received != sha256(payload):
        raise GuestFailure(f"uart {attach.port}: host sent {nbytes} bytes with sha256 "
                           f"{sha256(payload)}; the guest read {count} bytes with sha256 {received}")

    # Guest -> host: read on the host while the guest writes.
    result: dict = {}
    reader = threading.Thread(target=lambda: result.update(
        zip(("data", "seconds"), serial_receive(stream, nbytes, timeout))), daemon=True)
    reader.start()
    sent = first_sha256(guest_op(ctx, "uart_send", timeout=timeout, dev=dev, length=nbytes,
                                 baud=args["baud"]).output, "uart_send")
    reader.join(timeout)
    guest_op(ctx, "uart_close")
    data = result.get("data", b"")
    ctx.record(f"{attach.id}_guest_to_host_bytes", len(data))
    ctx.record(f"{attach.id}_guest_to_host_sha256", sent)
    ctx.record(f"{attach.id}_guest_to_host_seconds", round(result.get("seconds", 0.0), 2))
    if len(data) != nbytes or sha256(data) != sent:
        raise GuestFailure(f"uart {attach.port}: guest sent {nbytes} bytes with sha256 {sent}; "
                           f"the host read {len(data)} bytes with sha256 {sha256(data)}")
