"""The image cache: nothing is booted unless its sha256 is the pinned (or recorded) one.

- Downloads land in a claimed scratch directory beside the entry (refvm-fetch-<id>, marked as
  refvm's: see harness/ownership.py) and are renamed into place only after the hash matches;
  the next download removes the scratch directories of downloads whose process died.
- Every cached file has a stamp (size, mtime, inode, sha256). Using an image costs a stat when
  the stamp still fits; any change to the file forces a full re-hash, so a corrupted or edited
  entry is found, never booted.
- Built images are keyed by a hash of their recipe (all files of the recipe's folder, the
  builder's source, the password): rebuilt only when that changes, their sha256 recorded.
- A file lock per entry: two runs (or xdist workers) never fetch or build the same image twice,
  and never see a half-written file.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import InfraError
from ..hostdata import file_sha256, sparse_copy
from ..model import Guest, Media
from ..ownership import judge, make_owned

CHUNK = 1 << 20


class ImageUnavailable(Exception):
    """The image is not in the cache and this run may not fetch or build it (a skip reason)."""


@contextmanager
def locked(path: Path):
    """Hold an exclusive lock tied to ``path`` (a sibling .lock file) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".stamp.json")


def _fingerprint(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}


def write_stamp(path: Path, sha256: str, extra: dict | None = None) -> None:
    data = dict(_fingerprint(path), sha256=sha256, **(extra or {}))
    # A name of this process's own: parallel workers of one run stamp the same image, and a
    # shared temporary name lets one rename the file away from under the other.
    tmp = _stamp_path(path).with_suffix(f".{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(_stamp_path(path))
    finally:
        tmp.unlink(missing_ok=True)


def read_stamp(path: Path) -> dict | None:
    try:
        return json.loads(_stamp_path(path).read_text())
    except (OSError, ValueError):
        return None


def verified(path: Path, expected: str | None, full: bool = False) -> bool:
    """True if ``path`` has the expected sha256 (or, with None, the one its stamp recorded).

    Cheap when the stamp's size/mtime/inode still match, unless ``full``; otherwise re-hashes
    and refreshes the stamp on success.
    """
    if not path.is_file():
        return False
    stamp = read_stamp(path)
    want = expected or (stamp or {}).get("sha256")
    if not want:
        return False
    fits = stamp is not None and stamp.get("sha256") == want and \
        all(stamp.get(k) == v for k, v in _fingerprint(path).items())
    if fits and not full:
        return True
    actual = file_sha256(path)
    if actual != want:
        return False
    write_stamp(path, actual, {k: v for k, v in (stamp or {}).items()
                               if k not in ("size", "mtime_ns", "ino", "sha256")})
    return True


class ImageCache:
    """``installer(guest, iso, virtio_win, target, log)``: what installs a guest whose image
    is an unattended install (Windows), given the verified media; None: installs are off
    (a run never starts an install of hours: `refvm images fetch` does)."""

    def __init__(self, root: Path, allow_fetch: bool = True, allow_build: bool = True,
                 log: Callable[[str], None] = print, installer: Callable | None = None):
        self.root = Path(root)
        self.allow_fetch = allow_fetch
        self.allow_build = allow_build
        self.log = log
        self.installer = installer

    def prepare(self, guest: Guest, full_check: bool = False) -> Path:
        """Return a verified local path for the guest's boot image, fetching or building it."""
        image = guest.image
        if image.path:
            return self._local(guest, full_check)
        if image.url:
            return self._download(guest, full_check)
        if image.install:
            return self._installed(guest, full_check)
        return self._build(guest, full_check)

    def recorded(self, guest: Guest, fact: str) -> str | None:
        """A fact the builder recorded with the guest's prepared image (its SSH host key)."""
        return (read_stamp(self.expected_path(guest)) or {}).get(fact)

    def expected_path(self, guest: Guest) -> Path:
        """Where the guest's image is (or will be) once prepared; nothing is fetched or built."""
        image = guest.image
        if image.path:
            return image.path
        if image.url:
            return self._download_path(image)
        if image.install:
            return self.installed_path(guest)
        return self.built_path(guest)

    # Local file ------------------------------------------------------------------------------
    def _local(self, guest: Guest, full_check: bool) -> Path:
        path = guest.image.path
        if not path.is_file():
            raise ImageUnavailable(f"guest {guest.name}: image {path} does not exist")
        # The stamp of a file we do not own lives in the cache, keyed by its path.
        stamp_home = self.root / "local" / hashlib.sha256(str(path).encode()).hexdigest()[:16]
        stamp_home.mkdir(parents=True, exist_ok=True)
        link = stamp_home / "image"
        if not link.is_symlink() or link.resolve() != path.resolve():
            # Atomically: parallel workers of one run prepare the same image at once.
            fresh = stamp_home / f"image.{os.getpid()}"
            fresh.unlink(missing_ok=True)
            fresh.symlink_to(path)
            os.replace(fresh, link)
        if not verified(link, guest.image.sha256, full_check):
            raise InfraError(f"guest {guest.name}: {path} does not have sha256 "
                             f"{guest.image.sha256} (file: {guest.file}); refusing to boot it")
        return path

    # Download --------------------------------------------------------------------------------
    def _download_path(self, image) -> Path:
        """A sha256 pin names its file by the hash (as always); a sha512 pin by "sha512-"
        and the hash, so the two kinds can never name the same file."""
        algorithm, digest = image.pin
        name = digest if algorithm == "sha256" else f"{algorithm}-{digest}"
        return self.root / "images" / f"{name}.{image.format}"

    def _download(self, guest: Guest, full_check: bool) -> Path:
        image = guest.image
        target = self._download_path(image)
        pin = Pin(guest, "image", image.pin[1], target, image.compression, image.urls,
                  image.pin[0])
        with locked(target):
            if verified(target, None, full_check) and pin.matches_stamp(read_stamp(target)):
                return target
            if not self.allow_fetch:
                raise ImageUnavailable(f"guest {guest.name}: image not in the cache and "
                                       "downloads are off (run: refvm images fetch, or refvm "
                                       "images import FILE)")
            return self._install(pin, lambda tmp: self._fetch(pin, tmp))

    def _install(self, pin: "Pin", obtain: Callable[[Path], Path],
                 source: str | None = None) -> Path:
        """Put a pinned file into ``pin.target`` (its lock held): ``obtain(tmp)`` puts the
        file as downloaded (compressed) at ``tmp`` and returns it once its sha256 is the
        pinned one; it is unpacked, moved into place and stamped."""
        target = pin.target
        target.unlink(missing_ok=True)
        _remove_dead_scratch(target.parent)
        scratch = make_owned("fetch", root=target.parent)
        try:
            download = obtain(scratch / "download")
            _decompress(download, pin.compression, scratch / "unpacked").replace(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        write_stamp(target, file_sha256(target), {pin.stamp_key: pin.sha256,
                                                   "url": source or pin.urls[0]})
        return target

    # Media (installer ISOs, driver discs) ---------------------------------------------------
    def media_path(self, media: Media) -> Path:
        return self.root / "images" / f"{media.sha256}.iso"

    def _media(self, guest: Guest, media: Media, what: str) -> Path:
        """The verified local copy of a pinned installer ISO or driver disc, downloaded when
        this run may (ImageUnavailable, a skip, when it cannot be had here)."""
        target = self.media_path(media)
        with locked(target):
            if verified(target, media.sha256):
                return target
            if not self.allow_fetch:
                raise ImageUnavailable(f"guest {guest.name}: {what} not in the cache and "
                                       "downloads are off (run: refvm images fetch, or "
                                       "refvm images import FILE)")
            pin = Pin(guest, what, media.sha256, target, "none", media.urls)
            return self._install(pin, lambda tmp: self._fetch(pin, tmp))

    # Unattended install ----------------------------------------------------------------------
    def install_key(self, guest: Guest) -> str:
        """Hash of everything an installed image depends on: the media, the image chosen from
        them, the disk, the firmware (its partition layout), the password, and the source of
        the answer-file writer and installer (harness/images/windows)."""
        from . import windows

        win = guest.windows
        digest = hashlib.sha256()
        for part in (win.iso.sha256, win.virtio_win.sha256 if win.virtio_win else "",
                     win.image_name or "", str(win.image_index or ""), win.driver_os,
                     str(win.disk_size), guest.firmware[0], guest.boot_bus,
                     guest.console.user):
            digest.update(part.encode() + b"\0")
        digest.update(hashlib.sha256(guest.console.password.encode()).digest())
        for source in sorted(Path(windows.__file__).parent.glob("*.py")):
            digest.update(source.read_bytes())
        return digest.hexdigest()

    def installed_path(self, guest: Guest, key: str | None = None) -> Path:
        key = key or self.install_key(guest)
        return self.root / "images" / f"{guest.name}-{key[:16]}.raw"

    def _installed(self, guest: Guest, full_check: bool) -> Path:
        key = self.install_key(guest)
        target = self.installed_path(guest, key)
        with locked(target):
            if verified(target, None, full_check):
                return target
        iso = self._media(guest, guest.windows.iso, "the installer ISO")
        virtio = self._media(guest, guest.windows.virtio_win, "the virtio-win driver disc") \
            if guest.windows.virtio_win else None
        with locked(target):
            if verified(target, None, full_check):
                return target
            if self.installer is None or not self.allow_build:
                raise ImageUnavailable(
                    f"guest {guest.name}: not installed yet; `refvm images fetch --guest "
                    f"{guest.name}` installs it once from {iso.name} (an hour or more)")
            self.installer(guest, iso, virtio, target, self.log)
            write_stamp(target, file_sha256(target), {"install_key": key})
            self.log(f"installed {target} (sha256 {read_stamp(target)['sha256']})")
            return target

    # Import ----------------------------------------------------------------------------------
    def pins(self, guests) -> list["Pin"]:
        """Every downloadable file the guests pin: images, installer ISOs, driver discs."""
        found = []
        for guest in guests:
            image = guest.image
            if image.urls:
                found.append(Pin(guest, "image", image.pin[1], self.expected_path(guest),
                                 image.compression, image.urls, image.pin[0]))
            if guest.windows:
                for what, media in (("installer ISO", guest.windows.iso),
                                    ("virtio-win disc", guest.windows.virtio_win)):
                    if media:
                        found.append(Pin(guest, what, media.sha256, self.media_path(media),
                                         "none", media.urls))
        return found

    def import_file(self, path: Path, guests) -> list[tuple[Guest, Path]]:
        """Add a file fetched elsewhere (an air-gapped host, a machine without the download
        site) to the cache, for every guest that pins its sha256 (an image, an installer ISO,
        a driver disc); returns (guest, cache path) pairs. The file is copied in first and the
        *copy* hashed, so what is cached is exactly what was checked; a file no guest pins is
        refused, naming what they pin."""
        path = Path(path)
        if not path.is_file():
            raise InfraError(f"{path}: not a regular file")
        pins = self.pins(guests)
        sums = file_digests(path, {p.algorithm for p in pins} | {"sha256"})
        matches = [p for p in pins if p.sha256 == sums[p.algorithm]]
        if not matches:
            known = "; ".join(f"{p.guest.name} ({p.what}): {p.label}" for p in pins) or "none"
            raise InfraError(f"{path} has sha256 {sums['sha256']}, which no guest pins (guests "
                             f"with a download pin: {known})")
        imported = []
        for pin in matches:
            with locked(pin.target):
                if not (verified(pin.target, None, True) and
                        pin.matches_stamp(read_stamp(pin.target))):
                    self._install(pin, lambda tmp: _copy_checked(path, tmp, pin),
                                  source=f"imported from {path}")
            imported.append((pin.guest, pin.target))
        return imported

    def _fetch(self, pin: "Pin", tmp: Path) -> Path:
        """Download the first of the pin's URLs that gives the pinned file (its sha256, or
        sha512) into
        ``tmp`` (in a scratch directory, see _download). Every URL is tried before giving up:
        a skip (ImageUnavailable) when none could be reached from this host, an InfraError
        naming each failure when a server answered wrongly (an HTTP error, another file)."""
        urls, sha256, algorithm = pin.urls, pin.sha256, pin.algorithm
        failures, unreachable = [], 0
        for url in urls:
            self.log(f"fetching {url}")
            digest = hashlib.new(algorithm)
            try:
                with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
                    while chunk := resp.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            except urllib.error.HTTPError as err:  # the server answered: wrong or moved
                failures.append(f"{url}: {err}")
                continue
            except OSError as err:  # no route, no DNS, refused: this host cannot reach it
                failures.append(f"{url}: {getattr(err, 'reason', err)}")
                unreachable += 1
                continue
            if digest.hexdigest() == sha256:
                return tmp
            failures.append(f"{url}: {algorithm} mismatch: expected {sha256}, got "
                            f"{digest.hexdigest()}; the file was not kept")
        tmp.unlink(missing_ok=True)
        if unreachable == len(urls):
            raise ImageUnavailable(
                f"cannot download {' or '.join(urls)} from this host "
                f"({'; '.join(f.split(': ', 1)[1] for f in failures)}); fetch it elsewhere and "
                f"add it with: refvm images import FILE")
        raise InfraError("cannot fetch the image: " + "; ".join(failures))

    # Build -----------------------------------------------------------------------------------
    def recipe_key(self, guest: Guest) -> str:
        """Hash of everything a build depends on: recipe folder, builder source, password."""
        digest = hashlib.sha256()
        recipe_dir = guest.image.build.parent
        for path in sorted(p for p in recipe_dir.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(recipe_dir)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
        for source in self._builder_sources(guest):
            digest.update(source.read_bytes())
        digest.update(hashlib.sha256(guest.console.password.encode()).digest())
        return digest.hexdigest()

    @staticmethod
    def _builder_sources(guest: Guest) -> list[Path]:
        """The builder the recipe names, and every builder package it imports from (the
        Debian root-file-system builder reuses refguest's download and GRUB modules)."""
        from .builders import BuilderError, builder_module, builder_sources
        from . import debian_busybox

        try:
            module = builder_module(guest.image.build)
        except BuilderError as err:
            raise InfraError(f"guest {guest.name}: {err}") from None
        sources = builder_sources(module)
        if module is not debian_busybox:
            sources += builder_sources(debian_busybox)
        return sources

    def built_path(self, guest: Guest, key: str | None = None) -> Path:
        """The image built from the recipe whose key is ``key`` (default: the current one)."""
        key = key or self.recipe_key(guest)
        return self.root / "images" / f"{guest.name}-{key[:16]}.raw"

    def _build(self, guest: Guest, full_check: bool) -> Path:
        from .builders import builder_module
        from .debian_busybox.recipe import RecipeError

        key = self.recipe_key(guest)
        target = self.built_path(guest, key)
        with locked(target):
            if verified(target, None, full_check):
                return target
            if not self.allow_build:
                raise ImageUnavailable(f"guest {guest.name}: image not built for this recipe "
                                       "and builds are off (run: refvm images fetch)")
            self.log(f"building {guest.name} from {guest.image.build}")
            workdir = make_owned("build")  # a live build: `refvm clean` must leave it alone
            try:
                facts = builder_module(guest.image.build).build(
                    guest.image.build, guest.console.password, self.root / "debs", workdir,
                    target, self.log)
            except RecipeError as err:
                raise InfraError(f"guest {guest.name}: cannot build image: {err}") from None
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            write_stamp(target, file_sha256(target), dict(facts or {}, recipe_key=key))
            self.log(f"built {target} (sha256 {read_stamp(target)['sha256']})")
            return target


@dataclass(frozen=True)
class Pin:
    """A file a guest pins by hash, and where the cache keeps it. ``sha256`` holds the pinned
    digest of the kind ``algorithm`` names (sha256, or sha512 for files published with
    SHA512SUMS only)."""

    guest: Guest
    what: str  # image, installer ISO, virtio-win disc
    sha256: str
    target: Path
    compression: str
    urls: tuple
    algorithm: str = "sha256"

    @property
    def stamp_key(self) -> str:
        """The stamp's record of what the cached file came from (source_sha256 as before)."""
        return f"source_{self.algorithm}"

    @property
    def label(self) -> str:
        """The digest as people read it: bare for sha256 (as always), "sha512 ..." else."""
        return self.sha256 if self.algorithm == "sha256" else f"{self.algorithm} {self.sha256}"

    def matches_stamp(self, stamp: dict | None) -> bool:
        return (stamp or {}).get(self.stamp_key) == self.sha256


def file_digests(path: Path, algorithms: set) -> dict[str, str]:
    """{algorithm: hex digest} of ``path``, read once for all of them."""
    digests = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            for digest in digests.values():
                digest.update(chunk)
    return {name: digest.hexdigest() for name, digest in digests.items()}


def _copy_checked(source: Path, dest: Path, pin: Pin) -> Path:
    """Copy ``source`` to ``dest``; keep it only if the copy has the pinned digest."""
    sparse_copy(source, dest)
    actual = file_digests(dest, {pin.algorithm})[pin.algorithm]
    if actual != pin.sha256:
        dest.unlink(missing_ok=True)
        raise InfraError(f"{source} changed while it was imported ({pin.algorithm} {actual}, "
                         f"expected {pin.sha256}); nothing was kept")
    return dest


def _remove_dead_scratch(images: Path) -> None:
    """Scratch directories of downloads and installs whose process died: only the
    ones refvm marked as its own (harness/ownership.py); anything else here is left alone."""
    for pattern in ("refvm-fetch-*", "refvm-install-*"):
        for scratch in images.glob(pattern):
            if judge(scratch).dead:
                shutil.rmtree(scratch, ignore_errors=True)


def _decompress(path: Path, compression: str, out_path: Path) -> Path:
    """``path`` unpacked into ``out_path`` (``path`` itself when it is not compressed)."""
    if compression == "none":
        return path
    tools = {"xz": ["xz", "-dc"], "gzip": ["gzip", "-dc"], "zstd": ["zstd", "-dc"]}
    argv = tools[compression] + [str(path)]
    import subprocess
    with open(out_path, "wb") as out:
        try:
            subprocess.run(argv, stdout=out, check=True)
        except (OSError, subprocess.CalledProcessError) as err:
            raise InfraError(f"cannot decompress {path} with {argv[0]}: {err}") from None
    return out_path
