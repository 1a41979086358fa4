"""The Windows Server 2022 evaluation guest file, the schema of a Windows install, and the cache
of its media and installed image: the ISO pinned by sha256, skipped with the reason where it
cannot be downloaded, accepted by `refvm images import`, installed once."""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness.catalog import load_guests
from harness.errors import ConfigError
from harness.images.cache import ImageCache, ImageUnavailable, read_stamp
from harness.model import load_guest

REPO = Path(__file__).resolve().parent.parent
EVAL_SHA = "3e4fa6d8507b554856fc9ca6079cc402df11a8b79344871669f0251535255325"


def windows_guest(tmp_path: Path, iso_url: str, iso_sha: str, extra: str = "",
                  firmware: str = "[uefi]", devices: str = "[nvme, uart]") -> Path:
    path = tmp_path / "win.yaml"
    path.write_text(
        f"name: win\nfamily: windows\nimage: {{install: windows}}\nwindows:\n"
        f"  iso: {{url: '{iso_url}', sha256: {iso_sha}}}\n"
        f"  image_name: Windows Server 2022 SERVERSTANDARD\n{extra}"
        f"firmware: {firmware}\nboot_bus: ahci-hd\ndevices: {devices}\nutc_clock: false\n"
        f"console: {{user: Administrator, password: file-pw-1, password_env: RV_TEST_WINPW}}\n")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_guest(path)
    return str(err.value).splitlines()


def test_the_repository_guest_pins_the_evaluation_iso_and_virtio_win(monkeypatch):
    monkeypatch.delenv("REFVM_WINDOWS_PASSWORD", raising=False)
    guest, = load_guests(["windows-server-2022-eval"])
    win = guest.windows
    assert guest.family == "windows" and guest.image.source == "install"
    assert win.iso.sha256 == EVAL_SHA and win.iso.size == 5044094976
    assert win.iso.urls[0].endswith("/SERVER_EVAL_x64FRE_en-us.iso")
    assert win.image_name == "Windows Server 2022 SERVERSTANDARD" and win.image_index is None
    # virtio-win 0.1.285: the one public record of its sha256 and size (a weaker pin, said so)
    assert win.virtio_win.sha256 == \
        "e14cf2b94492c3e925f0070ba7fdfedeb2048c91eea9c5a5afb30232a3976331"
    assert win.virtio_win.size == 789645312
    assert guest.firmware == ("uefi",) and guest.utc_clock is False
    assert guest.boot_bus == "ahci-hd"
    assert set(guest.devices) == {"virtio-blk", "nvme", "virtio-net", "uart"}
    assert guest.console.user == "Administrator" and guest.console.password


def test_the_administrator_password_comes_from_the_environment_when_set(monkeypatch, tmp_path):
    path = windows_guest(tmp_path, "https://example.org/x.iso", EVAL_SHA)
    monkeypatch.delenv("RV_TEST_WINPW", raising=False)
    assert load_guest(path).console.password == "file-pw-1"
    monkeypatch.setenv("RV_TEST_WINPW", "from-the-env-9")
    assert load_guest(path).console.password == "from-the-env-9"
    assert load_guest(path).console.secrets == ["from-the-env-9"]  # masked in logs
    monkeypatch.setenv("RV_TEST_WINPW", "bad\x1b]0;title\x07pw")
    lines = problems(path)
    assert lines == [f"{path}:11: console.password_env: $RV_TEST_WINPW must be 1-127 printable "
                     "ASCII characters (it is typed on a serial console); value not shown"]


def test_virtio_devices_without_the_virtio_win_disc_are_refused(tmp_path):
    path = windows_guest(tmp_path, "https://example.org/x.iso", EVAL_SHA,
                         devices="[virtio-blk, nvme]")
    line, = problems(path)
    assert line.startswith(f"{path}:9: devices: virtio-blk need(s) the virtio-win drivers")
    fixed = windows_guest(tmp_path, "https://example.org/x.iso", EVAL_SHA,
                          extra=f"  virtio_win: {{url: 'https://example.org/v.iso', "
                                f"sha256: {'b' * 64}}}\n", devices="[virtio-blk, nvme]")
    assert load_guest(fixed).windows.virtio_win.sha256 == "b" * 64


def test_an_install_needs_one_firmware_one_image_choice_and_its_section(tmp_path):
    path = windows_guest(tmp_path, "https://example.org/x.iso", EVAL_SHA, firmware="[uefi, csm]")
    assert problems(path)[0].endswith("firmware: an installed Windows disk boots one way "
                                      "(UEFI: GPT, csm: MBR): list one firmware")
    both = windows_guest(tmp_path, "https://example.org/x.iso", EVAL_SHA,
                         extra="  image_index: 2\n")
    assert "give exactly one of image_name" in problems(both)[0]
    bare = tmp_path / "bare.yaml"
    bare.write_text("name: bare\nfamily: windows\nimage: {install: windows}\nfirmware: [uefi]\n"
                    "console: {user: Administrator}\n")
    assert problems(bare) == [f"{bare}:3: image: a windows section goes with image.install: "
                              "windows (and only with it)"]


def test_where_the_iso_cannot_be_downloaded_the_cases_skip_naming_images_import(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/SERVER_EVAL_x64FRE_en-us.iso"
        guest = load_guest(windows_guest(tmp_path, url, EVAL_SHA))
        cache = ImageCache(tmp_path / "cache", log=lambda _text: None)
        with pytest.raises(ImageUnavailable, match="cannot download .*SERVER_EVAL_x64FRE_en-us"
                                                   r"\.iso from this host .*refvm images import"):
            cache.prepare(guest)
    offline = ImageCache(tmp_path / "cache", allow_fetch=False, log=lambda _text: None)
    with pytest.raises(ImageUnavailable, match="the installer ISO not in the cache and "
                                               "downloads are off"):
        offline.prepare(guest)


def test_an_imported_iso_is_installed_once_by_images_fetch(tmp_path, monkeypatch):
    """`refvm images import` takes the ISO (matched by sha256); a run without an installer
    skips saying how to install; the installer runs once, its image is stamped and reused."""
    monkeypatch.delenv("RV_TEST_WINPW", raising=False)
    iso = tmp_path / "SERVER_EVAL_x64FRE_en-us.iso"
    iso.write_bytes(b"CD001 stand-in for the evaluation ISO" * 100)
    sha = hashlib.sha256(iso.read_bytes()).hexdigest()
    guest = load_guest(windows_guest(tmp_path, "https://example.org/x.iso", sha))
    env = dict(os.environ, REFVM_CACHE=str(tmp_path / "cache"))
    imported = subprocess.run([sys.executable, "-m", "harness.cli", "images", "import", str(iso),
                               "--guest", str(guest.file)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0, imported.stderr
    media = tmp_path / "cache" / "images" / f"{sha}.iso"
    assert imported.stdout == f"win: ok {media} (imported from {iso})\n"
    cache = ImageCache(tmp_path / "cache", allow_fetch=False, log=lambda _text: None)
    with pytest.raises(ImageUnavailable, match="not installed yet; `refvm images fetch --guest "
                                               f"win` installs it once from {sha}.iso"):
        cache.prepare(guest)
    calls = []

    def installer(guest_, iso_path, virtio, target, log):
        calls.append((guest_.name, iso_path, virtio))
        target.write_bytes(b"installed")

    cache.installer = installer
    target = cache.prepare(guest)
    assert target == cache.expected_path(guest) and target.read_bytes() == b"installed"
    assert calls == [("win", media, None)]
    assert cache.prepare(guest) == target and len(calls) == 1  # installed once
    assert read_stamp(target)["install_key"] == cache.install_key(guest)


def test_the_installed_image_key_follows_the_password(tmp_path, monkeypatch):
    path = windows_guest(tmp_path, "https://example.org/x.iso", EVAL_SHA)
    cache = ImageCache(tmp_path / "cache")
    monkeypatch.delenv("RV_TEST_WINPW", raising=False)
    first = cache.installed_path(load_guest(path))
    monkeypatch.setenv("RV_TEST_WINPW", "another-pw-2")
    assert cache.installed_path(load_guest(path)) != first
