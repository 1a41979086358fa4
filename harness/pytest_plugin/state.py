"""Per-session state of the plugin: options, backend(s), image cache and the Run.

Built lazily so that collecting tests (or ``--collect-only``) never boots or builds anything
it does not have to. With ``--hosts`` there is one backend per host of the pool, each made on
first use by the worker that runs that host's cases.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..backends import get_backend
from ..catalog import matrix_guests
from ..hosts import Host, HostPool, load_hosts
from ..images.cache import ImageCache, ImageUnavailable, verified
from ..paths import cache_dir
from ..reaper import reap
from ..runner import Run


class RefvmState:
    def __init__(self, options):
        self.options = options
        self.cache = ImageCache(cache_dir(), allow_fetch=not options.offline,
                                allow_build=not options.offline, log=self._say)
        self._guests = None
        self._backends = BackendsByHost(options, self.cache, lambda: self.guests)
        self._reaped: set[str | None] = set()
        self.pool = HostPool(load_hosts(options.hosts)) if options.hosts else None
        self._run = None
        self._images: dict[str, object] = {}
        self.messages: list[str] = []

    def _say(self, text: str) -> None:
        self.messages.append(text)
        print(f"refvm: {text}", flush=True)

    @property
    def guests(self):
        if self._guests is None:
            self._guests = matrix_guests(self.options.guest)
        return self._guests

    @property
    def backend(self):
        """What the matrix is built against: the one backend, or what the pool offers."""
        if self.pool is not None:
            return self.pool.offer(self.options.backend)
        return self._backends.get(None)

    def backend_for(self, host: Host | None):
        """The backend that boots a case on ``host`` (None: the run's one backend). The
        first time a libvirt host is used, what dead runs left there is removed."""
        backend = self._backends.get(host)
        key = host.uri if host else None
        if key not in self._reaped:
            self._reaped.add(key)
            if backend.name == "libvirt":
                backend.reap_dead_runs(log=self._say)
        return backend

    @property
    def run(self) -> Run:
        if self._run is None:
            # What killed runs left behind, before we add our own. Things merely named like
            # refvm's are reported by the controller only (once a run, not once a worker).
            reap(log=self._say, report_foreign="PYTEST_XDIST_WORKER" not in os.environ)
            self._run = Run(None, Path(self.options.artifacts))
        return self._run

    def image_for(self, guest) -> Path:
        """Prepare (once per session) and return the guest's verified image.

        Raises ImageUnavailable (a skip) or InfraError; the outcome is remembered, so a failed
        fetch is not retried by every case of that guest.
        """
        if guest.name not in self._images:
            try:
                self._images[guest.name] = self.cache.prepare(guest)
            except Exception as err:  # remembered and re-raised for each case of this guest
                self._images[guest.name] = err
        result = self._images[guest.name]
        if isinstance(result, Exception):
            raise result
        return result

    def close(self) -> None:
        if self._run is not None:
            self._run.close()


class BackendsByHost:
    """One backend per host of a pool (None: the one from the command line), made on first
    use, so collecting or planning connects to nothing it does not need."""

    def __init__(self, options, cache: ImageCache, guests, planning: bool = False):
        self.options, self.cache, self.planning = options, cache, planning
        self._guests = guests  # a callable: guests are loaded only if a backend needs them
        self._made: dict[str | None, object] = {}

    def get(self, host: Host | None):
        key = host.uri if host else None
        if key not in self._made:
            self._made[key] = make_backend(self.options.backend, self.options, self.cache,
                                           self._guests(), self.planning, uri=key)
        return self._made[key]


def make_backend(name: str, options, cache: ImageCache, guests, planning: bool = False,
                 uri: str | None = None):
    """The backend with its own options from the command line.

    QEMU gets a built reference guest to probe KVM with, when one is cached. bhyve, when
    ``planning``, may assume a FreeBSD release's bhyve on a host that has none. libvirt
    connects to ``uri`` (a pool's host), else to --libvirt-uri; planning for a bhyve:// URI
    it cannot reach, it assumes that host's libvirt."""
    if name == "bhyve":
        release = getattr(options, "bhyve_release", None)
        return get_backend("bhyve", csm_firmware=options.csm_firmware, planning=planning,
                           **({"plan_release": release} if release else {}))
    if name == "libvirt":
        return get_backend("libvirt", uri=uri or options.libvirt_uri,
                           domain_type="kvm" if options.accel == "kvm" else None,
                           planning=planning)
    probe_image = None
    for guest in guests:
        if guest.image.build and guest.family == "linux":
            candidate = cache.built_path(guest)
            if verified(candidate, None):
                probe_image = candidate
                break
    return get_backend(name, accel=options.accel, cache_dir=cache.root, probe_image=probe_image,
                       binary=options.qemu_binary)


__all__ = ["BackendsByHost", "RefvmState", "ImageUnavailable", "make_backend"]
