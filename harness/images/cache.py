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
import shutil
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from ..errors import InfraError
from ..hostdata import file_sha256, sparse_copy
from ..model import Guest
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
    tmp = _stamp_path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(_stamp_path(path))


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
    def __init__(self, root: Path, allow_fetch: bool = True, allow_build: bool = True,
                 log: Callable[[str], None] = print):
        self.root = Path(root)
        self.allow_fetch = allow_fetch
        self.allow_build = allow_build
        self.log = log

    def prepare(self, guest: Guest, full_check: bool = False) -> Path:
        """Return a verified local path for the guest's boot image, fetching or building it."""
        image = guest.image
        if image.path:
            return self._local(guest, full_check)
        if image.url:
            return self._download(guest, full_check)
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
            return self.root / "images" / f"{image.sha256}.{image.format}"
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
            link.unlink(missing_ok=True)
            link.symlink_to(path)
        if not verified(link, guest.image.sha256, full_check):
            raise InfraError(f"guest {guest.name}: {path} does not have sha256 "
                             f"{guest.image.sha256} (file: {guest.file}); refusing to boot it")
        return path

    # Download --------------------------------------------------------------------------------
    def _download(self, guest: Guest, full_check: bool) -> Path:
        image = guest.image
        target = self.root / "images" / f"{image.sha256}.{image.format}"
        with locked(target):
            if verified(target, None, full_check) and \
                    read_stamp(target).get("source_sha256") == image.sha256:
                return target
            if not self.allow_fetch:
                raise ImageUnavailable(f"guest {guest.name}: image not in the cache and "
                                       "downloads are off (run: refvm images fetch)")
            return self._install(guest, target, lambda tmp: self._fetch(image.urls, image.sha256,
                                                                        tmp))

    def _install(self, guest: Guest, target: Path, obtain: Callable[[Path], Path],
                 source: str | None = None) -> Path:
        """Put the guest's pinned image into ``target`` (its lock held): ``obtain(tmp)`` puts
        the file as downloaded (compressed) at ``tmp`` and returns it once its sha256 is the
        pinned one; it is unpacked, moved into place and stamped."""
        image = guest.image
        target.unlink(missing_ok=True)
        _remove_dead_scratch(target.parent)
        scratch = make_owned("fetch", root=target.parent)
        try:
            download = obtain(scratch / "download")
            _decompress(download, image.compression, scratch / "unpacked").replace(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        write_stamp(target, file_sha256(target), {"source_sha256": image.sha256,
                                                   "url": source or image.url})
        return target

    # Import ----------------------------------------------------------------------------------
    def import_file(self, path: Path, guests) -> list[tuple[Guest, Path]]:
        """Add an image fetched elsewhere (an air-gapped host, a machine without the download
        site) to the cache, for every guest whose pinned sha256 it has; returns (guest, cache
        path) pairs. The file is copied in first and the *copy* hashed, so what is cached is
        exactly what was checked; a file no guest pins is refused, naming what they pin."""
        path = Path(path)
        if not path.is_file():
            raise InfraError(f"{path}: not a regular file")
        wanted = [g for g in guests if g.image.urls]
        sha = file_sha256(path)
        matches = [g for g in wanted if g.image.sha256 == sha]
        if not matches:
            pins = "; ".join(f"{g.name}: {g.image.sha256}" for g in wanted) or "none"
            raise InfraError(f"{path} has sha256 {sha}, which no guest pins (guests with a "
                             f"download pin: {pins})")
        imported = []
        for guest in matches:
            target = self.expected_path(guest)
            with locked(target):
                if not (verified(target, None, True) and
                        read_stamp(target).get("source_sha256") == sha):
                    self._install(guest, target, lambda tmp: _copy_checked(path, tmp, sha),
                                  source=f"imported from {path}")
            imported.append((guest, target))
        return imported

    def _fetch(self, urls: tuple, sha256: str, tmp: Path) -> Path:
        """Download the first of ``urls`` that gives a file with sha256 ``sha256`` into
        ``tmp`` (in a scratch directory, see _download). Every URL is tried before giving up:
        a skip (ImageUnavailable) when none could be reached from this host, an InfraError
        naming each failure when a server answered wrongly (an HTTP error, another file)."""
        failures, unreachable = [], 0
        for url in urls:
            self.log(f"fetching {url}")
            digest = hashlib.sha256()
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
            failures.append(f"{url}: sha256 mismatch: expected {sha256}, got "
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


def _copy_checked(source: Path, dest: Path, sha256: str) -> Path:
    """Copy ``source`` to ``dest``; keep it only if the copy's sha256 is ``sha256``."""
    sparse_copy(source, dest)
    actual = file_sha256(dest)
    if actual != sha256:
        dest.unlink(missing_ok=True)
        raise InfraError(f"{source} changed while it was imported (sha256 {actual}, expected "
                         f"{sha256}); nothing was kept")
    return dest


def _remove_dead_scratch(images: Path) -> None:
    """Scratch directories of downloads whose process died (killed mid-download): only the
    ones refvm marked as its own (harness/ownership.py); anything else here is left alone."""
    for scratch in images.glob("refvm-fetch-*"):
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
