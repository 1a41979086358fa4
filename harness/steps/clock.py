"""The RTC: in UTC or in the host's local time, as the VM was told (bhyve -u, QEMU -rtc
base=utc|localtime, libvirt <clock offset>), within a tolerance of the host's clock."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from .. import schema as s
from ..errors import GuestFailure
from ..families import families_having
from .guestops import guest_op, last_line
from .registry import register

RTC_FORMAT = "%Y-%m-%d %H:%M:%S"


def host_wall(seconds: float, utc: bool) -> datetime:
    """The host's wall clock at ``seconds`` as the RTC should hold it: UTC, or the local
    time of the hypervisor's process (which inherits this process's time zone)."""
    if utc:
        return datetime.fromtimestamp(seconds, timezone.utc).replace(tzinfo=None)
    return datetime.fromtimestamp(seconds)


def rtc_offset_bound(rtc: datetime, low: datetime, high: datetime) -> float:
    """The least the RTC can be off, in seconds, given what was seen: it reads whole seconds,
    so while it showed ``rtc`` it held a time in [rtc, rtc + 1 s); and it was read at some
    moment between ``low`` and ``high`` (the host's clock when the command was sent and when
    the answer came back). 0 when some moment in that span fits a right clock.

    Both ends of the resolution count: judging a reading against the send time alone called an
    RTC only 1.x s behind "2 s apart" whenever the send fell late in a second (seen in CI, two
    TCG VMs on 2 cores)."""
    behind = (low - (rtc + timedelta(seconds=1))).total_seconds()
    ahead = (rtc - high).total_seconds()
    return max(0.0, behind, ahead)


@register("rtc_check", s.Map({
    "tolerance": s.F(s.Seconds(maximum=3600), default=2.0),
}), families=lambda _args: families_having("rtc_read"))
def rtc_check(ctx, args):
    utc = ctx.vm.spec.utc_clock
    started = time.time()
    text = last_line(guest_op(ctx, "rtc_read").output)
    ended = time.time()
    try:
        rtc = datetime.strptime(text, RTC_FORMAT)
    except ValueError:
        raise GuestFailure(f"the RTC reads {text!r}, not {RTC_FORMAT}") from None
    low, high = host_wall(started, utc), host_wall(ended, utc)
    off = rtc_offset_bound(rtc, low, high)
    ctx.record("rtc_mode", "UTC" if utc else "local time")
    ctx.record("rtc", text)
    # Against the middle of the read: a slow answer (a busy host) skews it by half as much.
    ctx.record("rtc_minus_utc_seconds",
               round((rtc - host_wall((started + ended) / 2, True)).total_seconds()))
    ctx.record("rtc_off_seconds", round(off, 1))
    if off > args["tolerance"]:
        raise GuestFailure(f"the RTC reads {text}; the host's {'UTC' if utc else 'local time'} "
                           f"was {low:{RTC_FORMAT}}: {off:.0f}s apart (tolerance "
                           f"{args['tolerance']:g}s)")
