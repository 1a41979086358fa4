"""A real headless browser for the report's tests: Debian's chromium-headless-shell (installed
by ./bootstrap), driven by its command line: the DOM it built, a screenshot, and its network
log (every URL it tried to fetch).

PNG decoding is written here (a screenshot's 8-bit RGB or RGBA rows, the five filters of the
PNG spec, section 9) so the tests need no imaging library."""
from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

BROWSER = "chromium-headless-shell"


def available() -> bool:
    return shutil.which(BROWSER) is not None


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    # --no-sandbox: tests run as root, where Chromium's sandbox refuses to start
    return subprocess.run([BROWSER, "--no-sandbox", "--disable-gpu", *args],
                          capture_output=True, text=True, timeout=timeout)


def dom(page: Path, netlog: Path) -> str:
    """The DOM the browser built from ``page``, serialised; its fetches logged in ``netlog``."""
    return _run([f"--log-net-log={netlog}", "--dump-dom", page.resolve().as_uri()]).stdout


def fetched_urls(netlog: Path) -> set[str]:
    return set(re.findall(r'"url":\s*"([^"]+)"', netlog.read_text()))


def screenshot(page: Path, png: Path, size: str = "1200,2000") -> None:
    done = _run([f"--screenshot={png}", f"--window-size={size}", page.resolve().as_uri()])
    assert png.is_file(), done.stderr[-2000:]


def pixels(png: Path) -> tuple[int, int, list[tuple]]:
    """(width, height, [(r, g, b) per pixel]) of an 8-bit RGB/RGBA, non-interlaced PNG."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and not interlace, (depth, colour)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride = zlib.decompress(idat), width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + pred) & 0xFF
        rows.append(line)
        previous = line
    return width, height, [tuple(row[x:x + 3]) for row in rows
                           for x in range(0, stride, channels)]


def colour_count(png: Path, rgb: tuple) -> int:
    return sum(1 for pixel in pixels(png)[2] if pixel == rgb)
