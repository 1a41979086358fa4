"""The NoCloud seed disc: how a distribution's official cloud image is given its user, password
and SSH keys without a metadata server.

Why this exists: cloud images (Debian's genericcloud, Ubuntu's server cloudimg) have no usable
login until cloud-init configures one, and cloud-init's NoCloud source reads ``user-data`` and
``meta-data`` from a file system labelled ``cidata``. This writes that file system as an ISO 9660
disc (Rock Ridge and Joliet names, so ``user-data`` keeps its dash) with pycdlib, which is pure
Python and installs on FreeBSD too: no genisoimage or cloud-localds on the host.

What goes in, per VM:
- the console user with the guest file's password *hashed* (SHA-512 crypt, ``openssl passwd
  -6``): the plaintext never reaches the disc; passwordless sudo, so the harness becomes root;
- the run's SSH public key for that user;
- an SSH host key made for this VM (the private half only on this disc, in the VM's workdir,
  removed with it; `refvm repro` and `--keep-failed` keep a copy readable by its owner only in
  the case's artifacts, for the lines that start the same VM by hand), so the harness checks the host key it expects instead of trusting the first
  one it is shown; cloud-init's own host keys are deleted and none other is generated. The disc
  is readable by every local user (0644): libvirt's QEMU runs as its own user and must read
  it. The key proves the harness reached the VM it seeded; it is a throwaway key of a test VM,
  not a secret kept from the test host's other users.
"""
from __future__ import annotations

import io
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pycdlib
import yaml

from ..errors import InfraError
from .debian_rootfs.sshkey import host_key_files

LABEL = "cidata"  # NoCloud looks for this volume label (either case)
# ISO 9660 names (8.3, upper case) with the names cloud-init reads in Rock Ridge and Joliet.
FILES = {"user-data": "/USERDATA.;1", "meta-data": "/METADATA.;1"}


@dataclass(frozen=True)
class Seed:
    """What one VM's seed disc says; ``host_key_public`` is what the harness must be shown."""

    user: str
    password_hash: str
    authorized_key: str
    host_key_private: str
    host_key_public: str
    hostname: str
    instance_id: str


def hash_password(password: str) -> str:
    """SHA-512 crypt of ``password`` with a random salt (``openssl passwd -6``, which Debian
    and FreeBSD both have; Python's crypt module is gone from 3.13). The password goes in on
    stdin, never on a command line."""
    try:
        done = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password + "\n",
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise InfraError(f"cannot hash the guest's password with openssl: {err}") from None
    hashed = done.stdout.strip()
    if done.returncode != 0 or not hashed.startswith("$6$"):
        raise InfraError("openssl passwd -6 did not give a SHA-512 crypt hash: "
                         f"{done.stderr.strip()[-200:]}")
    return hashed


def new_seed(user: str, password: str, authorized_key: str, hostname: str,
             instance_id: str) -> Seed:
    """A seed for one VM: the password hashed, a host key of its own."""
    private, public = host_key_files(os.urandom(32), f"{hostname}-host")
    return Seed(user, hash_password(password) if password else "", authorized_key,
                private.decode(), public.decode().strip(), hostname, instance_id)


def user_data(seed: Seed) -> str:
    """cloud-config for the seed (YAML written by a YAML writer: no value is pasted in)."""
    account = {"name": seed.user, "shell": "/bin/sh", "sudo": "ALL=(ALL) NOPASSWD:ALL",
               "lock_passwd": not seed.password_hash,
               "ssh_authorized_keys": [seed.authorized_key]}
    if seed.password_hash:
        account["hashed_passwd"] = seed.password_hash
    config = {
        "hostname": seed.hostname,
        "users": [account],
        "ssh_pwauth": False,
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_keys": {"ed25519_private": seed.host_key_private,
                     "ed25519_public": seed.host_key_public},
        # Nothing from the network: the harness's NIC may not even be up yet.
        "package_update": False,
        "package_upgrade": False,
    }
    return "#cloud-config\n" + yaml.safe_dump(config, sort_keys=False)


def meta_data(seed: Seed) -> str:
    return yaml.safe_dump({"instance-id": seed.instance_id,
                           "local-hostname": seed.hostname}, sort_keys=False)


def write_seed_disc(seed: Seed, path: Path) -> Path:
    """The ``cidata`` ISO holding ``user-data`` and ``meta-data`` at its root (0644: see the
    module docstring)."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=4, joliet=3, rock_ridge="1.09", vol_ident=LABEL)
    for name, text in (("user-data", user_data(seed)), ("meta-data", meta_data(seed))):
        data = text.encode()
        iso.add_fp(io.BytesIO(data), len(data), FILES[name], rr_name=name,
                   joliet_path=f"/{name}")
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.fchmod(fd, 0o644)  # whatever the umask
    with os.fdopen(fd, "wb") as out:
        iso.write_fp(out)
    iso.close()
    return path
