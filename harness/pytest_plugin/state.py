"""Per-session state of the plugin: options, backend(s), image cache and the Run.

Built lazily so that collecting tests (or ``--collect-only``) never boots or builds anything
it does not have to. With ``--hosts`` there is one backend per host of the pool, each made on
first use by the worker that runs that host's cases.
"""
from __future__ import annotations

from pathlib import Path

from ..backends import get_backend
from ..catalog import load_guests
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
        self._backend = None
        self._host_backends: dict[str, object] = {}
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
            self._guests = load_guests(self.options.guest)
        return self._guests

    @property
    def backend(self):
        """What the matrix is built against: the one backend, or what the pool offers."""
        if self.pool is not None:
            return self.pool.offer(self.options.backend)
        return self._single_backend()

    def _single_backend(self):
        if self._backend is None:
            self._backend = make_backend(self.options.backend, self.options, self.cache,
                                         self.guests)
        return self._backend

    def backend_for(self, host: Host | None):
        """The backend that runs a case on ``host`` (None: the run's one backend)."""
        if host is None:
            return self._single_backend()
        if host.uri not in self._host_backends:
            self._host_backends[host.uri] = make_backend(
                self.options.backend, self.options, self.cache, self.guests, uri=host.uri)
        return self._host_backends[host.uri]

    @property
    def run(self) -> Run:
        if self._run is None:
            reap(log=self._say)  # what killed runs left behind, before we add our own
            if self.options.backend == "libvirt":
                self._reap_domains()
            self._run = Run(None if self.pool else self._single_backend(),
                            Path(self.options.artifacts))
        return self._run

    def _reap_domains(self) -> None:
        """Dead runs' domains on this machine's libvirt. Only local URIs: on a host shared
        with other machines, liveness known here says nothing about their runs (their
        domains die with their connections: they are started with auto-destroy)."""
        from ..backends.libvirt_backend import live_run_ids, reap_domains

        hosts = self.pool.hosts if self.pool else [None]
        for host in hosts:
            backend = self.backend_for(host)
            if backend.local:
                reap_domains(backend.conn, live_run_ids(), log=self._say)

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


def make_backend(name: str, options, cache: ImageCache, guests, planning: bool = False,
                 uri: str | None = None):
    """The backend with its own options from the command line.

    QEMU gets a built reference guest to probe KVM with, when one is cached. bhyve, when
    ``planning``, may assume a FreeBSD release's bhyve on a host that has none. libvirt
    connects to ``uri`` (a pool's host), else to --libvirt-uri."""
    if name == "bhyve":
        return get_backend("bhyve", csm_firmware=options.csm_firmware, planning=planning)
    if name == "libvirt":
        return get_backend("libvirt", uri=uri or options.libvirt_uri,
                           domain_type="kvm" if options.accel == "kvm" else None)
    probe_image = None
    for guest in guests:
        if guest.image.build and guest.family == "linux":
            candidate = cache.built_path(guest)
            if verified(candidate, None):
                probe_image = candidate
                break
    return get_backend(name, accel=options.accel, cache_dir=cache.root, probe_image=probe_image,
                       binary=options.qemu_binary)


__all__ = ["RefvmState", "ImageUnavailable", "make_backend"]
