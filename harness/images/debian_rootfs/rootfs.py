"""The root file system: mmdebstrap installs the locked packages, then the image's own files.

Why this exists: installing a Debian system needs maintainer scripts run in a chroot; mmdebstrap
does that without privileges (``--mode=unshare``: a user namespace, no loop devices, no mounts
on the host) and reproducibly under ``SOURCE_DATE_EPOCH``. What is specific to a test guest is
written afterwards, on the host, into the unpacked tree: host name, fstab, root password,
a fixed SSH host key, first-boot prompts masked. Nothing from a YAML file is shell-parsed: the
hooks are constants of this module.
"""
from __future__ import annotations

import collections
import hashlib
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Callable, Sequence

from ..debian_busybox.host import _require_tools, _run
from ..debian_busybox.recipe import RecipeError
from .recipe import RootfsRecipe
from .sshkey import host_key_files

MMDEBSTRAP_TOOLS = {"mmdebstrap": "mmdebstrap", "newuidmap": "uidmap", "tar": "tar",
                    "openssl": "openssl"}
# Never used by a test guest, and most of the image's size: left out as dpkg unpacks.
_MODULES_UNUSED = ("drivers/gpu", "sound", "drivers/media", "drivers/net/wireless",
                   "drivers/infiniband", "drivers/staging", "drivers/bluetooth", "drivers/iio",
                   "drivers/isdn", "drivers/hid", "drivers/input/touchscreen", "drivers/net/can",
                   "drivers/usb/gadget", "drivers/mtd", "net/wireless", "net/mac80211",
                   "net/bluetooth", "fs/ocfs2", "fs/gfs2", "fs/xfs", "fs/btrfs")
# Never used by a test guest, and most of the image's size: left out as dpkg unpacks. Both
# spellings of each path: bookworm's packages still ship /lib/..., merged into /usr/lib.
PATH_EXCLUDES = (
    "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*", "/usr/share/doc/*",
    "/usr/share/lintian/*",
    *(f"{lib}/modules/*/kernel/{part}/*" for lib in ("/lib", "/usr/lib")
      for part in _MODULES_UNUSED),
    "/lib/firmware/*", "/usr/lib/firmware/*",
)
PATH_INCLUDES = ("/usr/share/doc/*/copyright",)  # licences stay
_SALT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def mmdebstrap_argv(recipe: RootfsRecipe, names: Sequence[str], source: str,
                    output: Path) -> list[str]:
    argv = ["mmdebstrap", "--mode=unshare", "--variant=essential", "--format=tar",
            "--aptopt=APT::Install-Recommends \"false\"", "--aptopt=Acquire::Languages \"none\"",
            "--skip=output/dev"]
    argv += [f"--dpkgopt=path-exclude={p}" for p in PATH_EXCLUDES]
    argv += [f"--dpkgopt=path-include={p}" for p in PATH_INCLUDES]
    # The host's own name and resolver must not end up in the image.
    argv += ["--customize-hook=rm -f \"$1/etc/resolv.conf\" \"$1/etc/hostname\""]
    argv += ["--include=" + ",".join(sorted(names)), recipe.suite, str(output), source]
    return argv


def install(recipe: RootfsRecipe, names: Sequence[str], source: str, workdir: Path,
            epoch: int, log: Callable[[str], None]) -> Path:
    """mmdebstrap into a tarball, unpacked (owners, modes, capabilities) into a directory."""
    _require_tools(MMDEBSTRAP_TOOLS)
    tarball, root = workdir / "rootfs.tar", workdir / "rootfs"
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch), TZ="UTC", LC_ALL="C.UTF-8")
    log(f"mmdebstrap: installing {len(names)} locked packages (unshare mode)")
    _stream(mmdebstrap_argv(recipe, names, source, tarball), env, log)
    root.mkdir()
    _run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", tarball,
          "-C", root], what="tar -x (the root file system)")
    tarball.unlink()
    return root


def _stream(argv: list[str], env: dict, log: Callable[[str], None]) -> None:
    """Run mmdebstrap, passing its "I:" progress lines on as they come (minutes under a
    user namespace: `refvm images fetch` shows where it is); a failure quotes its last line."""
    tail: collections.deque = collections.deque(maxlen=5)
    try:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                errors="replace")
    except OSError as err:
        raise RecipeError(f"cannot run mmdebstrap: {err.strerror or err}") from None
    with proc:
        for line in proc.stderr:
            line = line.rstrip()
            if line:
                tail.append(line)
            if line.startswith("I: ") and "tempdir" not in line:
                log(f"mmdebstrap: {line[3:]}")
    if proc.returncode != 0:
        raise RecipeError(f"mmdebstrap failed (exit {proc.returncode}): "
                          f"{' | '.join(tail) or '(no output)'}")


def shadow_hash(password: str, hostname: str) -> str:
    """SHA-512 crypt of the root password by openssl, read from stdin (never argv or a log).
    The salt is derived from the password and host name so that builds are reproducible: it is
    the harness's test credential, not a secret worth a random salt."""
    seed = hashlib.sha256(b"refvm shadow salt\0" + hostname.encode() + b"\0" + password.encode())
    salt = "".join(_SALT_ALPHABET[b % 64] for b in seed.digest()[:16])
    proc = _run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"], what="openssl passwd",
                input=password.encode() + b"\n")
    hashed = proc.stdout.decode().strip()
    if not re.fullmatch(r"\$6\$[./0-9A-Za-z]+\$[./0-9A-Za-z]{86}", hashed):
        raise RecipeError("openssl passwd did not print a SHA-512 crypt hash")
    return hashed


def _write(root: Path, relpath: str, data: bytes, mode: int = 0o644) -> None:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.write_bytes(data)
    os.chmod(path, mode)
    os.chown(path, 0, 0)


def configure(root: Path, recipe: RootfsRecipe, password: str, root_partuuid: str,
              host_key_seed: bytes, epoch: int) -> str:
    """The test guest's own files; returns the SSH host public key line recorded for it."""
    name = recipe.hostname
    # Mount points the initramfs moves its /dev, /proc, /sys and /run to (the tarball was
    # made without /dev: device nodes are devtmpfs's job at boot).
    for mount, mode in (("dev", 0o755), ("proc", 0o555), ("sys", 0o555), ("run", 0o755),
                        ("tmp", 0o1777)):
        (root / mount).mkdir(exist_ok=True)
        os.chmod(root / mount, mode)
    _write(root, "etc/hostname", f"{name}\n".encode())
    # mmdebstrap leaves the build's own source line (a path in the scratch directory) here.
    _write(root, "etc/apt/sources.list", b"# The packages of this image are pinned in refvm's "
                                          b"lock file; apt is not part of it.\n")
    _write(root, "etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n".encode())
    _write(root, "etc/fstab", f"PARTUUID={root_partuuid}\t/\text4\trw,errors=remount-ro\t0\t1\n"
                              .encode())
    shadow = (root / "etc/shadow").read_text().splitlines()
    hashed = shadow_hash(password, name)
    lines = [f"root:{hashed}:{epoch // 86400}:0:99999:7:::" if line.startswith("root:")
             else line for line in shadow]
    _write(root, "etc/shadow", ("\n".join(lines) + "\n").encode(), 0o640)
    os.chown(root / "etc/shadow", 0, _group_id(root, "shadow"))
    # First boot must not stop at a prompt on the console (locale, time zone, password).
    mask = root / "etc/systemd/system/systemd-firstboot.service"
    mask.unlink(missing_ok=True)
    mask.symlink_to("/dev/null")
    # nvme-cli's postinst makes a random NVMe host identity: one derived from the lock instead.
    host_uuid = str(uuid.UUID(bytes=hashlib.sha256(b"refvm nvme host\0" + host_key_seed)
                              .digest()[:16], version=4))
    _write(root, "etc/nvme/hostid", f"{host_uuid}\n".encode())
    _write(root, "etc/nvme/hostnqn", f"nqn.2014-08.org.nvmexpress:uuid:{host_uuid}\n".encode())
    # A fixed host key (so the harness can check it), derived from the lock: see sshkey.py.
    for old in (root / "etc/ssh").glob("ssh_host_*"):
        old.unlink()
    private, public = host_key_files(host_key_seed, f"root@{name}")
    _write(root, "etc/ssh/ssh_host_ed25519_key", private, 0o600)
    _write(root, "etc/ssh/ssh_host_ed25519_key.pub", public)
    _write(root, "etc/ssh/sshd_config.d/refvm.conf",
           b"# Written by refvm's image builder: the one host key the harness checks.\n"
           b"HostKey /etc/ssh/ssh_host_ed25519_key\nPermitRootLogin prohibit-password\n"
           b"UseDNS no\n")
    for path in [root, *root.rglob("*")]:  # what we wrote got today's date: clamp all
        if path.lstat().st_mtime > epoch:
            os.utime(path, (epoch, epoch), follow_symlinks=False)
    return public.decode().strip()


def _group_id(root: Path, group: str) -> int:
    for line in (root / "etc/group").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == group:
            return int(fields[2])
    return 0


def remove_tree(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
