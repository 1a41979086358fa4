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
  when the domain stops;
- a writable file that no <disk> names (an NVMe disk passed as QEMU arguments, domain_xml) is
  never chowned by libvirt: QEMU, as libvirt-qemu, could read the root-owned 0644 scratch file
  but not open it read-write, and would refuse to start. The harness chowns it to the user
  libvirt runs QEMU as (the DAC ``<baselabel>`` of the host capabilities) and gives it back in
  remove(), as libvirt does for the files it knows.
For a URI naming another host, paths are used as they are: the images and scratch directories
must exist at the same paths there (nothing is staged or copied across hosts), and a scratch
file passed as QEMU arguments must already be writable by that host's QEMU user.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

from ...errors import InfraError

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


def security_models(host_caps_xml: str) -> tuple[str, ...]:
    """The security drivers of a libvirt host (``<host><secmodel><model>``), e.g. dac, apparmor."""
    caps = ET.fromstring(host_caps_xml)
    return tuple(m.findtext("model") or "" for m in caps.findall("host/secmodel"))


def qemu_owner(host_caps_xml: str, domain_type: str) -> tuple[int, int] | None:
    """(uid, gid) libvirt runs QEMU as for ``domain_type``: the DAC ``<baselabel>`` of the host
    capabilities ("+64055:+64055" on Debian); None when the host reports none."""
    caps = ET.fromstring(host_caps_xml)
    for secmodel in caps.findall("host/secmodel"):
        if secmodel.findtext("model") != "dac":
            continue
        for label in secmodel.findall("baselabel"):
            if label.get("type") == domain_type and label.text:
                uid, _, gid = label.text.partition(":")
                return int(uid.lstrip("+")), int(gid.lstrip("+"))
    return None


def _blocking_dir(path: Path) -> Path:
    for parent in list(Path(os.path.abspath(path)).parents)[::-1]:
        if not parent.stat().st_mode & stat.S_IXOTH:
            return parent
    return path.parent


WORKROOT_FILE = "workroot"  # in a stage directory: the run's claimed directory (reaping)


class Stage:
    """Per-VM links (or copies) of files libvirt's QEMU could not otherwise reach."""

    def __init__(self, root: Path, workroot: Path | None = None):
        self.root = root
        self.workroot = workroot  # the owning run's directory, written beside what is staged
        self.made: list[Path] = []
        self.lent: list[tuple[Path, int, int]] = []  # (file, its uid, its gid) before chown
        self.by_hand: list[list[str]] = []  # what was done, as commands (libvirt/by_hand.py)

    def reachable(self, path: Path, readonly: bool, owner: tuple[int, int] | None = None) -> Path:
        """The path libvirt's QEMU should open for ``path``: itself, or a link (or copy) here.

        ``owner`` (uid, gid) is for a writable file libvirt will not chown because no <disk>
        names it: the file is chowned to it until remove()."""
        reached = self._reach(Path(path), readonly)
        if owner is not None and not readonly:
            info = reached.stat()
            try:
                os.chown(reached, *owner)
            except PermissionError:
                raise InfraError(f"cannot chown {reached} to {owner[0]}:{owner[1]}, the user "
                                 f"libvirt runs QEMU as, which must write it: only root can "
                                 f"(the harness runs as uid {os.getuid()})") from None
            self.lent.append((reached, info.st_uid, info.st_gid))
            self.by_hand.append(["chown", f"{owner[0]}:{owner[1]}", str(reached)])
        return reached

    def _reach(self, path: Path, readonly: bool) -> Path:
        if others_can_reach(path, read_file=readonly):
            return path
        self.root.mkdir(mode=0o711, parents=True, exist_ok=True)
        self.root.chmod(0o711)
        if self.workroot is not None:
            (self.root / WORKROOT_FILE).write_text(str(self.workroot))
        dest = self.root / f"{len(self.made)}-{path.name}"
        if not self.made:
            self.by_hand.append(["mkdir", "-p", "-m", "0711", str(self.root)])
        # A read-only file others cannot read is copied (never chmod the shared inode);
        # anything else is linked, so the harness and the guest share the file.
        private = readonly and not path.stat().st_mode & stat.S_IROTH
        try:
            if private:
                raise OSError(errno.EPERM, "not readable by others")
            os.link(path, dest)
            self.by_hand.append(["ln", str(path), str(dest)])
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
            self.by_hand += [["cp", str(path), str(dest)], ["chmod", "0644", str(dest)]]
        self.made.append(dest)
        return dest

    def remove(self) -> None:
        for path, uid, gid in self.lent:  # before the links go (the original may be gone)
            try:
                os.chown(path, uid, gid)
            except FileNotFoundError:
                pass
        self.lent.clear()
        for made in self.made:
            try:
                made.unlink()
            except FileNotFoundError:
                pass
        self.made.clear()
        shutil.rmtree(self.root, ignore_errors=True)
