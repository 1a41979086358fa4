"""The answer disc: an ISO 9660 image with Joliet names holding ``autounattend.xml`` at its root
(Windows Setup reads it from the root of any removable medium) and, when the guest has the
virtio-win disc, the viostor, vioscsi and NetKVM folders for its Windows, copied out of it.

Built with pycdlib (pure Python, on PyPI, installs on FreeBSD too): no mkisofs, xorriso or
genisoimage needed on the host. Windows reads the Joliet names; the ISO 9660 names are
level-3 d-characters, made unique per folder.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

import pycdlib

from .answer import ARCH, VIRTIO_DRIVERS

VOLUME_ID = "REFVM_ANSWERS"
ISO_NAME_MAX = 30  # level 3: at most 30 characters for name and extension together


def _iso_name(name: str, taken: set, directory: bool) -> str:
    """``name`` as ISO 9660 d-characters, unique in its folder (files get ``;1``)."""
    stem, dot, ext = name.upper().rpartition(".") if not directory and "." in name \
        else (name.upper(), "", "")
    stem = re.sub(r"[^A-Z0-9_]", "_", stem)[:ISO_NAME_MAX - len(ext) - 1 - 3] or "_"
    ext = re.sub(r"[^A-Z0-9_]", "_", ext)[:3]
    for number in range(1000):
        base = stem if number == 0 else f"{stem[:ISO_NAME_MAX - len(ext) - 5]}_{number}"
        candidate = base if directory else f"{base}.{ext}" if dot else f"{base}."
        if candidate not in taken:
            taken.add(candidate)
            return candidate if directory else candidate + ";1"
    raise ValueError(f"too many names like {name!r} in one folder")


class _Writer:
    """Adds folders and files by their Joliet path, choosing ISO 9660 names as it goes."""

    def __init__(self):
        self.iso = pycdlib.PyCdlib()
        self.iso.new(interchange_level=3, joliet=3, vol_ident=VOLUME_ID)
        self.folders = {"": "/"}  # Joliet path -> ISO 9660 path
        self.taken: dict[str, set] = {"/": set()}

    def folder(self, joliet: str) -> str:
        if joliet in self.folders:
            return self.folders[joliet]
        parent, _, name = joliet.rpartition("/")
        parent_iso = self.folder(parent)
        iso_path = parent_iso.rstrip("/") + "/" + _iso_name(name, self.taken[parent_iso], True)
        self.iso.add_directory(iso_path, joliet_path=joliet)
        self.folders[joliet], self.taken[iso_path] = iso_path, set()
        return iso_path

    def file(self, joliet: str, data: bytes) -> None:
        parent, _, name = joliet.rpartition("/")
        parent_iso = self.folder(parent)
        iso_path = parent_iso.rstrip("/") + "/" + _iso_name(name, self.taken[parent_iso], False)
        self.iso.add_fp(io.BytesIO(data), len(data), iso_path, joliet_path=joliet)


def driver_files(virtio_iso: Path, driver_os: str) -> dict[str, bytes]:
    """{Joliet path: content} of viostor, vioscsi and NetKVM for ``driver_os`` (amd64) in a
    virtio-win ISO (its layout: ``<Driver>/<os>/amd64/*``)."""
    source = pycdlib.PyCdlib()
    source.open(str(virtio_iso))
    try:
        kind = "joliet_path" if source.has_joliet() else "rr_path"
        found = {}
        for driver in VIRTIO_DRIVERS:
            top = f"/{driver}/{driver_os}/{ARCH}"
            try:
                walked = list(source.walk(**{kind: top}))
            except pycdlib.pycdlibexception.PyCdlibInvalidInput:
                raise ValueError(f"{virtio_iso} has no {top}") from None
            for folder, _dirs, files in walked:
                for name in files:
                    out = io.BytesIO()
                    source.get_file_from_iso_fp(out, **{kind: f"{folder}/{name}"})
                    found[f"{folder}/{name}"] = out.getvalue()
        return found
    finally:
        source.close()


def write_answer_disc(path: Path, answer_xml: bytes, drivers: dict[str, bytes] | None = None
                      ) -> None:
    """The answer disc at ``path``: autounattend.xml, and the driver files given."""
    writer = _Writer()
    writer.file("/autounattend.xml", answer_xml)
    for joliet, data in sorted((drivers or {}).items()):
        writer.file(joliet, data)
    try:
        writer.iso.write(str(path))
    finally:
        writer.iso.close()
