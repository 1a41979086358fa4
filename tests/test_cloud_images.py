"""The distributions' official cloud images as guests: pinned downloads, and the NoCloud seed
disc that gives them a user, a password (hashed) and the run's SSH key.

No cloud image can be downloaded on these machines, so none boots here: these tests read the
seed disc back with an independent ISO reader (xorriso) and parse what cloud-init would parse,
check the pins and the skip a host without the download gets, `refvm images import` of such an
image (by sha512), and the seed disc in the plans of all three backends.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from cryptography.hazmat.primitives.serialization import (Encoding, PublicFormat,
                                                          load_ssh_private_key)

from harness.catalog import load_guests
from harness.console.ssh import new_client_key
from harness.images.nocloud import LABEL, new_seed, write_seed_disc
from harness.model import load_guest

REPO = Path(__file__).resolve().parent.parent
CLOUD_GUESTS = ("debian-12-cloud", "ubuntu-24.04-cloud")


def refvm(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


def xorriso_extract(iso: Path, name: str, out: Path) -> bytes:
    done = subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso),
                           "-extract", f"/{name}", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out.read_bytes()


@pytest.mark.skipif(shutil.which("xorriso") is None, reason="xorriso not installed")
def test_the_seed_disc_read_back_by_xorriso_is_what_cloud_init_needs(tmp_path):
    password = "rv-pw-\u00e9!x"  # not ASCII-only, to be sure it is hashed as bytes
    key = new_client_key()
    seed = new_seed("refvm", password, key.public_line, "refvm-debian-cloud", "refvm-abc-1")
    iso = write_seed_disc(seed, tmp_path / "cidata.iso")
    assert iso.stat().st_mode & 0o777 == 0o644  # libvirt's QEMU (another user) reads it
    raw = iso.read_bytes()
    assert password.encode() not in raw  # only the hash is on the disc

    toc = subprocess.run(["xorriso", "-indev", str(iso), "-pvd_info"], capture_output=True,
                         text=True)
    assert f"Volume Id    : {LABEL}" in toc.stdout, toc.stdout + toc.stderr
    listing = subprocess.run(["xorriso", "-indev", str(iso), "-ls", "/"], capture_output=True,
                             text=True).stdout
    assert "'meta-data'" in listing and "'user-data'" in listing  # Rock Ridge names

    user_data = xorriso_extract(iso, "user-data", tmp_path / "user-data").decode()
    assert user_data.startswith("#cloud-config\n")
    config = yaml.safe_load(user_data)
    account, = config["users"]
    assert account["name"] == "refvm" and account["lock_passwd"] is False
    assert account["ssh_authorized_keys"] == [key.public_line]
    assert account["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
    hashed = account["hashed_passwd"]
    assert hashed.startswith("$6$") and "plain_text_passwd" not in account
    salt = hashed.split("$")[2]
    again = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"],
                           input=password + "\n", capture_output=True, text=True)
    assert again.stdout.strip() == hashed  # the hash is of this password
    assert config["ssh_pwauth"] is False and config["ssh_genkeytypes"] == []
    assert config["hostname"] == "refvm-debian-cloud"
    # The host key the harness will expect is the public half of the private key given.
    private = load_ssh_private_key(config["ssh_keys"]["ed25519_private"].encode(), None)
    public = private.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    assert config["ssh_keys"]["ed25519_public"].startswith(public + " ")
    assert seed.host_key_public == config["ssh_keys"]["ed25519_public"]

    meta = yaml.safe_load(xorriso_extract(iso, "meta-data", tmp_path / "meta-data"))
    assert meta == {"instance-id": "refvm-abc-1", "local-hostname": "refvm-debian-cloud"}
    # Every VM gets a host key of its own.
    assert new_seed("refvm", password, key.public_line, "h", "i").host_key_public != \
        seed.host_key_public


def test_a_guest_without_a_password_gets_a_locked_one(tmp_path):
    seed = new_seed("refvm", "", "ssh-ed25519 AAAAC3Nza refvm-run", "h", "i")
    account, = yaml.safe_load(
        __import__("harness.images.nocloud", fromlist=["user_data"]).user_data(seed))["users"]
    assert account["lock_passwd"] is True and "hashed_passwd" not in account


def test_the_cloud_guests_are_pinned_by_dated_urls_and_a_hash():
    debian, ubuntu = load_guests(list(CLOUD_GUESTS))
    assert debian.image.pin == ("sha512", "a58d86525d75fd8e139a2302531ce5d2ab75ef0273cfe78f9d"
                                "53aada4b23efd45f8433b4806fa4570cfe981c8fae26f5e5e855cbd66ba21"
                                "98862f28125fd2d45")
    assert ubuntu.image.pin == ("sha256", "32a9d30d18803da72f5936cf2b7b9efcb4d0bb63c67933f17e3b"
                                "dfd1751de3f3")
    for guest in (debian, ubuntu):
        assert guest.image.format == "qcow2" and guest.cloud_init is not None
        assert all("latest" not in url and "current" not in url for url in guest.image.urls)
        assert guest.ssh.user == guest.console.user == "refvm"
        assert guest.console.become_root.method == "sudo"
    assert "/bookworm/20250210-2019/" in debian.image.url
    assert [urlparse(u).netloc for u in ubuntu.image.urls] == [
        "cloud-images.ubuntu.com", "cloud-images-archive.ubuntu.com"]


def _reachable(url: str) -> bool:
    try:
        socket.getaddrinfo(urlparse(url).hostname, 443)
        return True
    except OSError:
        return False


def test_where_the_images_cannot_be_downloaded_their_cases_skip_with_the_reason(tmp_path):
    guests = load_guests(list(CLOUD_GUESTS))
    if any(_reachable(url) for guest in guests for url in guest.image.urls):
        pytest.skip("this host can reach a download site: the test would download ~900 MB")
    done = refvm("run", "--guest", CLOUD_GUESTS[0], "--guest", CLOUD_GUESTS[1], "--scenario",
                 "boot", "--firmware", "uefi", "--artifacts", tmp_path / "artifacts",
                 env={"REFVM_CACHE": str(tmp_path / "cache")})
    # Nothing ran: refvm run says so (exit 5), the skips are not failures.
    assert done.returncode == 5 and done.stderr == "refvm: no case ran and passed\n", \
        done.stdout[-3000:] + done.stderr[-2000:]
    for guest in guests:
        line = next(l for l in done.stdout.splitlines() if f"SKIP boot[{guest.name}-uefi" in l)
        assert f"cannot download {guest.image.url}" in line and "from this host" in line
    assert "fetch it elsewhere and add it with: refvm images import FILE" in done.stdout
    assert not list((tmp_path / "cache" / "images").glob("*.qcow2"))


def test_images_import_takes_a_cloud_image_by_its_sha512(tmp_path):
    """A file fetched elsewhere is matched by the hash its guest pins (here sha512, as Debian
    publishes), unpacked nowhere (qcow2 as it is), and then the guest's image."""
    image = tmp_path / "debian-12-genericcloud-amd64-test.qcow2"
    image.write_bytes(b"QFI\xfb stand-in for a cloud image" * 1000)
    sha512 = hashlib.sha512(image.read_bytes()).hexdigest()
    text = (REPO / "guests/linux/debian-12-cloud.yaml").read_text()
    pinned = load_guest(REPO / "guests/linux/debian-12-cloud.yaml").image.sha512
    guest_file = tmp_path / "debian-12-cloud.yaml"
    guest_file.write_text(text.replace(pinned, sha512).replace(
        "name: debian-12-cloud\n", "name: imported-cloud\n"))
    env = {"REFVM_CACHE": str(tmp_path / "cache")}
    done = refvm("images", "import", image, "--guest", guest_file, env=env)
    assert done.returncode == 0, done.stderr
    target = tmp_path / "cache" / "images" / f"sha512-{sha512}.qcow2"
    assert done.stdout == f"imported-cloud: ok {target} (imported from {image})\n"
    assert target.read_bytes() == image.read_bytes()
    # With downloads off the guest now uses the imported file; another file is refused.
    plan = refvm("plan", "--guest", guest_file, "--scenario", "boot", "--firmware", "uefi",
                 "--json", "--accel", "tcg", env=env)
    case, = json.loads(plan.stdout)["cases"]
    assert case["image_ready"] is True and case["image"] == str(target)
    image.write_bytes(b"something else")
    refused = refvm("images", "import", image, "--guest", guest_file, env=env)
    assert refused.returncode != 0 and f"sha512 {sha512}" in refused.stderr


def _plan(*args) -> dict:
    done = refvm("plan", "--guest", "debian-12-cloud", "--scenario", "ssh", "--firmware", "uefi",
                 "--json", "--accel", "tcg", *args)
    assert done.returncode == 0, done.stderr
    case, = json.loads(done.stdout)["cases"]
    return case


def test_the_plans_attach_the_seed_disc_on_qemu_libvirt_and_bhyve():
    qemu = _plan()
    argv = qemu["commands"][-1]
    seed = next(a for a in argv if "cidata.iso" in a)
    assert seed.endswith(",format=raw,if=none,id=disk1,readonly=on")
    assert argv[argv.index(seed) + 2] == "ide-cd,drive=disk1,bus=ide.0"
    assert any(a.endswith(",hostfwd=tcp:127.0.0.1:0-:22") for a in argv)

    libvirt = _plan("--backend", "libvirt", "--libvirt-uri", "bhyve:///system")
    cdrom = ET.fromstring(libvirt["details"]).find("devices/disk[@device='cdrom']")
    assert cdrom.find("source").get("file").endswith("/cidata.iso")
    assert cdrom.find("readonly") is not None

    bhyve = _plan("--backend", "bhyve")
    assert bhyve["skip"] is None, bhyve["skip"]
    *before, bhyve_argv = bhyve["commands"]
    convert = next(c for c in before if "convert" in c)
    assert convert[1:6] == ["convert", "-f", "qcow2", "-O", "raw"]
    assert convert[-1].endswith(".raw") and convert[-2].endswith(".qcow2")
    assert any(a.endswith(f",virtio-blk,{convert[-1]}") or a == f"2,virtio-blk,{convert[-1]}"
               for a in bhyve_argv)
    assert any(a.startswith("3,ahci-cd,") and a.endswith("/cidata.iso") for a in bhyve_argv)
