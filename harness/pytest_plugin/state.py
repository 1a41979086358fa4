"""Per-session state of the plugin: options, backend, image cache and the Run.

Built lazily so that collecting tests (or ``--collect-only``) never boots or builds anything
it does not have to.
"""
from __future__ import annotations

from pathlib import Path

from ..backends import get_backend
from ..catalog import load_guests
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
        if self._backend is None:
            self._backend = make_backend(self.options.backend, self.options, self.cache,
                                         self.guests)
        return self._backend

    @property
    def run(self) -> Run:
        if self._run is None:
            reap(log=self._say)  # what killed runs left behind, before we add our own
            if self.options.backend == "libvirt":
                from ..backends.libvirt_backend import live_run_ids, reap_domains
                reap_domains(self.backend.conn, live_run_ids(), log=self._say)
            self._run = Run(self.backend, Path(self.options.artifacts))
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


def make_backend(name: str, options, cache: ImageCache, guests, planning: bool = False):
    """The backend with its own options from the command line.

    QEMU gets a built reference guest to probe KVM with, when one is cached. bhyve, when
    ``planning``, may assume a FreeBSD release's bhyve on a host that has none."""
    if name == "bhyve":
        return get_backend("bhyve", csm_firmware=options.csm_firmware, planning=planning)
    if name == "libvirt":
        return get_backend("libvirt", uri=options.libvirt_uri,
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
