"""The image cache, against a real HTTP server on loopback: nothing unverified is ever used."""
from __future__ import annotations

import hashlib
import http.server
import lzma
import os
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from harness.errors import InfraError
from harness.images.cache import ImageCache, ImageUnavailable, read_stamp, verified
from harness.model import load_guest
from harness.ownership import make_owned

PAYLOAD = os.urandom(256 * 1024)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Server:
    """Serves named blobs and counts the requests for each."""

    def __init__(self):
        self.blobs: dict[str, bytes] = {}
        self.hits: dict[str, int] = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                body = outer.blobs.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    srv = _Server()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def url_guest(tmp_path: Path, url: str, sha: str, compression: str = "none",
              algorithm: str = "sha256"):
    path = tmp_path / "g.yaml"
    path.write_text(f"""\
name: urlguest
family: linux
image: {{url: '{url}', {algorithm}: {sha}, compression: {compression}}}
firmware: [csm]
console: {{user: root}}
""")
    return load_guest(path)


def quiet_cache(tmp_path: Path, **kwargs) -> ImageCache:
    return ImageCache(tmp_path / "cache", log=lambda _t: None, **kwargs)


def test_download_is_verified_then_kept_and_reused(tmp_path, server):
    server.blobs["/disk.img"] = PAYLOAD
    cache = quiet_cache(tmp_path)
    guest = url_guest(tmp_path, server.url + "/disk.img", SHA)
    path = cache.prepare(guest)
    assert path.read_bytes() == PAYLOAD and read_stamp(path)["source_sha256"] == SHA
    assert cache.prepare(guest) == path and server.hits["/disk.img"] == 1  # cached
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp files


SHA512 = hashlib.sha512(PAYLOAD).hexdigest()


def test_a_sha512_pin_downloads_verifies_and_imports(tmp_path, server):
    """Debian's cloud images are published with SHA512SUMS only: a sha512 pin is checked the
    same way (download, mismatch, import by that hash), in a file of its own name."""
    server.blobs["/bad.img"] = PAYLOAD + b"x"
    with pytest.raises(InfraError) as err:
        quiet_cache(tmp_path).prepare(url_guest(tmp_path, server.url + "/bad.img", SHA512,
                                                algorithm="sha512"))
    assert f"sha512 mismatch: expected {SHA512}, got " \
           f"{hashlib.sha512(PAYLOAD + b'x').hexdigest()}" in str(err.value)
    server.blobs["/disk.img"] = PAYLOAD
    guest = url_guest(tmp_path, server.url + "/disk.img", SHA512, algorithm="sha512")
    path = quiet_cache(tmp_path).prepare(guest)
    assert path.name == f"sha512-{SHA512}.raw" and path.read_bytes() == PAYLOAD
    assert read_stamp(path)["source_sha512"] == SHA512 and read_stamp(path)["sha256"] == SHA
    # Imported elsewhere: matched by its sha512, never downloaded.
    other = tmp_path / "other"
    other.mkdir()
    fetched = tmp_path / "debian.qcow2"
    fetched.write_bytes(PAYLOAD)
    offline = quiet_cache(other, allow_fetch=False)
    guest = url_guest(other, "http://127.0.0.1:9/none.img", SHA512, algorithm="sha512")
    with pytest.raises(ImageUnavailable, match="refvm images import FILE"):
        offline.prepare(guest)
    (_, target), = offline.import_file(fetched, [guest])
    assert offline.prepare(guest) == target and target.read_bytes() == PAYLOAD
    fetched.write_bytes(PAYLOAD + b"y")
    with pytest.raises(InfraError, match=f"which no guest pins .*sha512 {SHA512}"):
        offline.import_file(fetched, [guest])


def test_hash_mismatch_names_both_hashes_and_keeps_nothing(tmp_path, server):
    server.blobs["/disk.img"] = PAYLOAD + b"x"
    with pytest.raises(InfraError) as err:
        quiet_cache(tmp_path).prepare(url_guest(tmp_path, server.url + "/disk.img", SHA))
    actual = hashlib.sha256(PAYLOAD + b"x").hexdigest()
    assert f"expected {SHA}, got {actual}" in str(err.value)
    kept = [p.name for p in (tmp_path / "cache/images").iterdir() if not p.name.endswith(".lock")]
    assert kept == []


def test_corrupted_cache_entry_is_detected_and_fetched_again(tmp_path, server):
    server.blobs["/disk.img"] = PAYLOAD
    cache = quiet_cache(tmp_path)
    guest = url_guest(tmp_path, server.url + "/disk.img", SHA)
    path = cache.prepare(guest)
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF
    path.write_bytes(bytes(data))  # a change the stamp sees (mtime)
    assert cache.prepare(guest).read_bytes() == PAYLOAD
    assert server.hits["/disk.img"] == 2


def test_corruption_hidden_from_the_stamp_is_found_by_a_full_check(tmp_path, server):
    server.blobs["/disk.img"] = PAYLOAD
    cache = quiet_cache(tmp_path)
    guest = url_guest(tmp_path, server.url + "/disk.img", SHA)
    path = cache.prepare(guest)
    st = path.stat()
    with open(path, "r+b") as f:  # same size, and the mtime put back: only a hash can tell
        f.seek(5)
        f.write(bytes([PAYLOAD[5] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert verified(path, None) and not verified(path, None, full=True)
    assert cache.prepare(guest, full_check=True).read_bytes() == PAYLOAD


def test_compressed_download_is_unpacked(tmp_path, server):
    packed = lzma.compress(PAYLOAD)
    server.blobs["/disk.img.xz"] = packed
    guest = url_guest(tmp_path, server.url + "/disk.img.xz", hashlib.sha256(packed).hexdigest(),
                      compression="xz")
    assert quiet_cache(tmp_path).prepare(guest).read_bytes() == PAYLOAD


def test_offline_missing_image_is_a_skip_reason_not_a_download(tmp_path, server):
    server.blobs["/disk.img"] = PAYLOAD
    with pytest.raises(ImageUnavailable, match="downloads are off"):
        quiet_cache(tmp_path, allow_fetch=False).prepare(
            url_guest(tmp_path, server.url + "/disk.img", SHA))
    assert server.hits == {}


def test_concurrent_prepares_download_once(tmp_path, server):
    server.blobs["/disk.img"] = PAYLOAD
    guest = url_guest(tmp_path, server.url + "/disk.img", SHA)
    results, errors = [], []

    def worker():
        try:
            results.append(quiet_cache(tmp_path).prepare(guest))
        except Exception as err:  # noqa: BLE001 - collected for the assertion
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(results)) == 1
    assert server.hits["/disk.img"] == 1


def test_local_image_with_wrong_hash_is_refused(tmp_path):
    image = tmp_path / "disk.img"
    image.write_bytes(PAYLOAD)
    guest = url_guest(tmp_path, "http://unused/", SHA)
    guest = replace(guest, image=replace(guest.image, urls=(), path=image, sha256="0" * 64))
    with pytest.raises(InfraError, match="does not have sha256 0{64}"):
        quiet_cache(tmp_path).prepare(guest)


def test_scratch_of_a_killed_download_is_removed_by_the_next_fetch_and_nothing_else(tmp_path,
                                                                                    server):
    """A download's scratch directory is refvm-fetch-<id> with refvm's marker; the next
    download removes those whose process died, and leaves alone a live download's and
    anything merely named like them (a person's files, a copy without a marker)."""
    server.blobs["/disk.img"] = PAYLOAD
    cache = quiet_cache(tmp_path)
    guest = url_guest(tmp_path, server.url + "/disk.img", SHA)
    images = tmp_path / "cache" / "images"
    images.mkdir(parents=True)
    killed = subprocess.run(
        [sys.executable, "-c", "import sys; from harness.ownership import make_owned; "
                               "d = make_owned('fetch', sys.argv[1]); (d / 'download').write_bytes(b'x'); print(d)",
         str(images)], capture_output=True, text=True, check=True).stdout.strip()
    live = make_owned("fetch", images)  # this (living) process's
    decoys = [images / "refvm-fetch-0000beef", images / "refvm-fetch-notours",
              images / f".fetch-{cache.expected_path(guest).name}-abc123"]
    decoys[0].mkdir()
    (decoys[0] / "mine.txt").write_text("a person's file")
    decoys[1].write_text("a file")
    decoys[2].write_bytes(b"partial")
    cache.prepare(guest)
    assert not Path(killed).exists()
    assert live.is_dir() and all(path.exists() for path in decoys)
    assert sorted(p.name for p in images.glob("refvm-fetch-*")) == sorted(
        [live.name, "refvm-fetch-0000beef", "refvm-fetch-notours"])


def test_an_unreachable_download_site_is_a_skip_naming_images_import(tmp_path):
    """These machines cannot reach download.freebsd.org: a closed port stands in for it."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        guest = url_guest(tmp_path, f"http://127.0.0.1:{port}/FreeBSD.raw.xz", SHA, "xz")
        with pytest.raises(ImageUnavailable, match="cannot download .* from this host .*; fetch "
                                                   "it elsewhere and add it with: refvm images "
                                                   "import FILE"):
            quiet_cache(tmp_path).prepare(guest)


def test_import_adds_a_file_fetched_elsewhere_after_checking_it(tmp_path):
    payload = lzma.compress(PAYLOAD)
    fetched = tmp_path / "FreeBSD-14.3-RELEASE-amd64-BASIC-CI.raw.xz"
    fetched.write_bytes(payload)
    guest = url_guest(tmp_path, "https://download.example.org/FreeBSD.raw.xz",
                      hashlib.sha256(payload).hexdigest(), "xz")
    cache = quiet_cache(tmp_path, allow_fetch=False)
    (imported_guest, target), = cache.import_file(fetched, [guest])
    assert imported_guest is guest and target.read_bytes() == PAYLOAD  # unpacked
    assert cache.prepare(guest) == target  # no download needed (downloads are off)
    assert "imported from" in read_stamp(target)["url"]
    assert not list(target.parent.glob("refvm-fetch-*"))  # the scratch went


def test_import_refuses_a_file_no_guest_pins(tmp_path):
    stray = tmp_path / "other.raw"
    stray.write_bytes(b"not an image anybody pinned")
    guest = url_guest(tmp_path, "https://download.example.org/FreeBSD.raw", SHA)
    with pytest.raises(InfraError, match=f"which no guest pins \\(guests with a download pin: "
                                         f"urlguest \\(image\\): {SHA}\\)"):
        quiet_cache(tmp_path).import_file(stray, [guest])
    assert not (tmp_path / "cache" / "images").exists() or \
        not any((tmp_path / "cache" / "images").iterdir())


def test_refvm_images_import_through_the_command_line(tmp_path):
    import subprocess
    import sys

    payload = PAYLOAD
    fetched = tmp_path / "disk.img"
    fetched.write_bytes(payload)
    url_guest(tmp_path, "https://download.example.org/disk.img", SHA)
    env = dict(os.environ, REFVM_CACHE=str(tmp_path / "cache"))
    cli = [sys.executable, "-m", "harness.cli", "images", "import"]
    ok = subprocess.run(cli + [str(fetched), "--guest", str(tmp_path / "g.yaml")],
                        capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == (f"urlguest: ok {tmp_path / 'cache' / 'images' / SHA}.raw "
                         f"(imported from {fetched})\n")
    wrong = tmp_path / "wrong.img"
    wrong.write_bytes(b"x")
    bad = subprocess.run(cli + [str(wrong), "--guest", str(tmp_path / "g.yaml")],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 1 and "which no guest pins" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_guest_may_list_several_urls_for_one_file(tmp_path, server):
    """An end-of-life release moves from the download site to the archive: the same file,
    the same sha256, under another URL. The first that answers with the pinned file wins."""
    server.blobs["/archive/disk.img"] = PAYLOAD
    server.blobs["/mirror/disk.img"] = b"another file"
    path = tmp_path / "g.yaml"
    path.write_text(f"""\
name: urlguest
family: linux
image:
  url:
    - {server.url}/releases/disk.img
    - {server.url}/mirror/disk.img
    - {server.url}/archive/disk.img
  sha256: {SHA}
firmware: [csm]
console: {{user: root}}
""")
    guest = load_guest(path)
    assert guest.image.urls == tuple(f"{server.url}/{d}/disk.img"
                                     for d in ("releases", "mirror", "archive"))
    target = quiet_cache(tmp_path).prepare(guest)
    assert target.read_bytes() == PAYLOAD
    assert server.hits == {"/releases/disk.img": 1, "/mirror/disk.img": 1,
                           "/archive/disk.img": 1}


def test_when_every_url_fails_each_failure_is_named(tmp_path, server):
    server.blobs["/mirror/disk.img"] = b"another file"
    path = tmp_path / "g.yaml"
    path.write_text(f"name: urlguest\nfamily: linux\nimage:\n  url: [{server.url}/gone.img, "
                    f"{server.url}/mirror/disk.img]\n  sha256: {SHA}\nfirmware: [csm]\n"
                    f"console: {{user: root}}\n")
    with pytest.raises(InfraError) as err:
        quiet_cache(tmp_path).prepare(load_guest(path))
    assert f"{server.url}/gone.img: HTTP Error 404" in str(err.value)
    assert f"{server.url}/mirror/disk.img: sha256 mismatch" in str(err.value)
