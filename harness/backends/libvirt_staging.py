"""Making a VM's files reachable by libvirt's QEMU, which does not run as the harness's user.

qemu:///system runs QEMU as user libvirt-qemu, which cannot enter /root or a 0700 pytest
tmpdir. The least surprising fix that needs no change to libvirt's configuration:

- every file stays where the harness put it whenever libvirt's QEMU can reach it (every parent
  directory searchable by others, as /tmp/refvm-<run id>/ is with the usual umask);
- a file it cannot reach (the image cache under /root/.cache, a 0700 REFVM_TMP) is *hard-linked*
  into ``/var/lib/libvirt/images/<vm name>/`` (libvirt's own image directory, mode 0711), so the
  VM and the harness see the same inode: what the guest writes is what the harness verifies. A
  read-only image on another filesystem is copied instead; a writable one cannot be, and is an
  InfraError naming the directory to open up. The staging directory is removed by destroy();
- read-only disks carry ``<seclabel model='dac' relabel='no'/>`` so libvirt never chowns the
  shared cached image; writable disks and the per-VM UEFI vars copy are chowned to libvirt-qemu
  by libvirt's DAC driver (dynamic_ownership, on by default) for the run and given back to root
  when the domain stops.
For a URI naming another host, paths are used as they are: the images and scratch directories
must exist at the same paths there (nothing is staged or copied across hosts).
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

from ..errors import InfraError

STAGE_ROOT = Path("/var/lib/libvirt/images")


def others_can_reach(path: Path, read_file: bool) -> bool:
    """Whether a user who is neither owner nor group (libvirt-qemu) can reach ``path``."""
    path = Path(os.path.abspath(path))
    for parent in list(path.parents)[:-1][::-1] + [path.parent]:
        try:
            if not parent.stat().st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    if read_file:
        try:
            return bool(path.stat().st_mode & stat.S_IROTH)
        except OSError:
            return False
    return True


def _blocking_dir(path: Path) -> Path:
    for parent in list(Path(os.path.abspath(path)).parents)[::-1]:
        if not parent.stat().st_mode & stat.S_IXOTH:
            return parent
    return path.parent


class Stage:
    """Per-VM links (or copies) of files libvirt's QEMU could not otherwise reach."""

    def __init__(self, root: Path):
        self.root = root
        self.made: list[Path] = []

    def reachable(self, path: Path, readonly: bool) -> Path:
        path = Path(path)
        if others_can_reach(path, read_file=readonly):
            return path
        self.root.mkdir(mode=0o711, parents=True, exist_ok=True)
        self.root.chmod(0o711)
        dest = self.root / f"{len(self.made)}-{path.name}"
        # A read-only file others cannot read is copied (never chmod the shared inode);
        # anything else is linked, so the harness and the guest share the file.
        private = readonly and not path.stat().st_mode & stat.S_IROTH
        try:
            if private:
                raise OSError(errno.EPERM, "not readable by others")
            os.link(path, dest)
        except OSError as err:
            if err.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            if not readonly:
                raise InfraError(
                    f"libvirt's QEMU cannot reach {path} (directory {_blocking_dir(path)} is "
                    f"closed to other users) and it cannot be hard-linked into {self.root} "
                    f"(another filesystem): give that directory o+x, or set REFVM_TMP to a "
                    f"directory on the filesystem of {self.root.parent}") from None
            shutil.copyfile(path, dest)
            dest.chmod(0o644)
        self.made.append(dest)
        return dest

    def remove(self) -> None:
        for made in self.made:
            try:
                made.unlink()
            except FileNotFoundError:
                pass
        self.made.clear()
        shutil.rmtree(self.root, ignore_errors=True)
