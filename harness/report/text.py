"""Text from a run (reasons, properties, paths: a guest's console may have put anything there)
made safe for each view: control characters written visibly (no terminal escape reaches a
reader), then markdown's table bars or HTML's specials escaped."""
from __future__ import annotations

import html

from ..errors import escape, shorten

REASON_CHARS = 300


def plain(value, limit: int = REASON_CHARS) -> str:
    return shorten(escape(str(value)), limit)


def md(value, limit: int = REASON_CHARS) -> str:
    return plain(value, limit).replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`") \
        .replace("<", "&lt;").replace(">", "&gt;")


def h(value, limit: int = REASON_CHARS) -> str:
    return html.escape(plain(value, limit), quote=True)
