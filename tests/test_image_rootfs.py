"""The Debian root-file-system builder's pieces that need no archive: recipe and lock checks,
the BIOS boot sectors, the fixed SSH host key, the lock diff, a vanished pinned version, and
repinning refguest's recipe text. (Real builds and boots: tests/test_debian_guest.py.)"""
from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import paramiko
import pytest

from harness.images.debian_busybox.recipe import Package, RecipeError
from harness.images.debian_busybox.recipe import load_recipe as load_busybox_recipe
from harness.images.debian_rootfs import archive
from harness.images.debian_rootfs.gptdisk import bios_boot_sectors, grub_cfg, ROOT_PARTUUID
from harness.images.debian_rootfs.recipe import load_lock, load_recipe, lock_text
from harness.images.debian_rootfs.sshkey import host_key_files
from harness.images import repin as repin_mod

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "guests/linux/debian-12/recipe.yaml"
SHA = "ab" * 32


def test_the_repository_recipe_and_lock_load_and_pin_every_included_package():
    recipe = load_recipe(RECIPE)
    lock = load_lock(recipe)
    names = {p.name for p in lock.packages}
    assert set(recipe.include) <= names
    assert {"systemd", "openssh-server", "nvme-cli", "fio", "linux-image-amd64"} <= names
    assert all(len(p.sha256) == 64 for p in lock.packages)


def _recipe(tmp_path: Path, **changes) -> Path:
    text = RECIPE.read_text()
    for key, value in changes.items():
        text = "\n".join(f"{key}: {value}" if line.startswith(f"{key}:") else line
                         for line in text.splitlines()) + "\n"
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("field, value, message", [
    ("builder", "debian-busybox-hybrid", "builder: must be 'debian-rootfs'"),
    ("suite", "'bookworm; rm -rf /'", "suite: must be a Debian suite name"),
    ("kernel_cmdline", "'console=ttyS0 ; insmod x'", "kernel_cmdline: must be words"),
    ("lock", "../../etc/passwd", "lock: must be a file name beside the recipe"),
])
def test_bad_recipe_fields_are_named(tmp_path, field, value, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(_recipe(tmp_path, **{field: value}))


def test_a_missing_lock_says_how_to_make_it(tmp_path):
    recipe = load_recipe(_recipe(tmp_path))
    with pytest.raises(RecipeError, match="lock.yaml: missing; make it with: refvm images repin"):
        load_lock(recipe)


def test_the_lock_round_trips_and_must_pin_what_the_recipe_includes(tmp_path):
    recipe = load_recipe(_recipe(tmp_path))
    pins = [Package(n, "1:2.0-1", "amd64", SHA) for n in recipe.include]
    (tmp_path / "lock.yaml").write_text(lock_text(recipe, pins))
    assert set(load_lock(recipe).packages) == set(pins)
    (tmp_path / "lock.yaml").write_text(lock_text(recipe, pins[1:]))
    with pytest.raises(RecipeError, match=f"includes {pins[0].name}, which the lock does not"):
        load_lock(recipe)


def test_bios_boot_sectors_patch_what_grub_bios_setup_patches():
    boot = bytes(range(256)) * 2
    mbr = b"\xee" * 512
    core = b"\x11" * 1000  # two sectors once padded
    new_mbr, new_core = bios_boot_sectors(boot, core, mbr, 2048)
    assert new_mbr[0x1B8:] == mbr[0x1B8:]            # disk signature + partition table kept
    assert struct.unpack_from("<Q", new_mbr, 0x5C)[0] == 2048
    assert new_mbr[0x66:0x68] == b"\x90\x90"
    assert new_mbr[:0x5C] == boot[:0x5C]
    assert len(new_core) == 1024
    assert struct.unpack_from("<QHH", new_core, 500) == (2049, 1, 0x820)


def test_grub_cfg_names_the_fixed_root_partition():
    cfg = grub_cfg("debian12", "console=ttyS0,115200n8")
    assert f"root=PARTUUID={ROOT_PARTUUID} ro console=ttyS0,115200n8" in cfg
    assert "terminal_output serial" in cfg


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")
def test_the_host_key_is_fixed_by_its_seed_and_valid_for_openssh_and_paramiko(tmp_path):
    private, public = host_key_files(b"lock bytes", "root@debian12")
    assert host_key_files(b"lock bytes", "root@debian12") == (private, public)
    assert host_key_files(b"other lock", "root@debian12")[1] != public
    key = tmp_path / "key"
    key.write_bytes(private)
    key.chmod(0o600)
    derived = subprocess.run(["ssh-keygen", "-y", "-f", key], capture_output=True, text=True,
                             check=True).stdout.split()[:2]
    assert derived == public.decode().split()[:2]
    assert paramiko.Ed25519Key(filename=str(key)).get_base64() == derived[1]


def test_changes_lists_moved_added_and_dropped_packages():
    old = [Package("a", "1", "amd64", SHA), Package("b", "1", "all", SHA)]
    new = [Package("a", "2", "amd64", "cd" * 32), Package("c", "3", "amd64", SHA)]
    assert repin_mod.changes(old, new) == ["  a: 1 -> 2", "  - b 1", "  + c 3"]
    assert repin_mod.changes(old, old) == []


class FakeProc:  # TEST DOUBLE for a finished apt process
    def __init__(self, returncode: int, stdout: bytes = b"", stderr: bytes = b""):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def test_a_version_the_archive_dropped_stops_the_build_naming_it(tmp_path, monkeypatch):
    gone = Package("linux-image-6.1.0-56-amd64", "6.1.192-2", "amd64", SHA)

    def apt(argv, **_kw):  # TEST DOUBLE: apt whose lists no longer hold the version
        return FakeProc(100, stderr=b"E: Version '6.1.192-2' for 'linux-image...' was not found")

    monkeypatch.setattr(archive, "_run", apt)
    monkeypatch.setattr(archive, "_require_tools", lambda tools: None)
    with pytest.raises(RecipeError, match=r"the archive no longer offers pinned "
                                          r"linux-image-6\.1\.0-56-amd64 6\.1\.192-2; rewrite "
                                          r"the lock with `refvm images repin`"):
        archive.fetch_all([gone], tmp_path / "debs", lambda _t: None, Path("lock.yaml"))
    assert not list((tmp_path / "debs").iterdir())  # no temp dir left behind


def test_repin_rewrites_refguests_kernel_and_versions_in_place(tmp_path, monkeypatch):
    recipe = tmp_path / "recipe.yaml"
    shutil.copyfile(REPO / "guests/linux/refguest/recipe.yaml", recipe)
    shutil.copyfile(recipe, recipe.with_name("orig.yaml"))
    before = recipe.read_text()

    def candidate(name, arch):  # TEST DOUBLE: the archive after a kernel ABI bump
        if name.startswith("linux-image-"):
            return Package(name, "6.1.200-1", arch, "cd" * 32)
        return Package(name, {"busybox-static": "1:1.35.0-4+deb12u2"}.get(name, "x"), arch, SHA)

    monkeypatch.setattr(repin_mod, "candidate", candidate)
    monkeypatch.setattr(repin_mod, "current_kernel_package", lambda: "linux-image-6.1.0-99-amd64")
    lines = repin_mod.repin_refguest(recipe)
    after = recipe.read_text()
    assert "  + linux-image-6.1.0-99-amd64 6.1.200-1" in lines
    kernel = next(p for p in load_busybox_recipe(recipe.with_name("orig.yaml")).packages
                  if p.name.startswith("linux-image-"))
    assert f"  - {kernel.name} {kernel.version}" in lines
    assert "  busybox-static: 1:1.35.0-4+deb12u1+b1 -> 1:1.35.0-4+deb12u2" in lines
    assert "- name: linux-image-6.1.0-99-amd64\n    version: 6.1.200-1\n" in after
    # comments survive
    assert [l for l in before.splitlines() if l.lstrip().startswith("#")] == \
           [l for l in after.splitlines() if l.lstrip().startswith("#")]


BOOKWORM_POLICY = """Package files:
 100 /var/lib/dpkg/status
     release a=now
 500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
     release v=12,o=Debian,a=oldstable-security,n=bookworm-security,l=Debian-Security,c=main,b=amd64
 500 http://deb.debian.org/debian bookworm-updates/main amd64 Packages
     release v=12-updates,o=Debian,a=oldstable-updates,n=bookworm-updates,l=Debian,c=main,b=amd64
 500 http://deb.debian.org/debian bookworm/main amd64 Packages
     release v=12.15,o=Debian,a=oldstable,n=bookworm,l=Debian,c=main,b=amd64
"""
TRIXIE_TOO = BOOKWORM_POLICY + """ 500 http://deb.debian.org/debian trixie/main amd64 Packages
     release v=13.2,o=Debian,a=stable,n=trixie,l=Debian,c=main,b=amd64
"""


def test_repin_resolves_only_from_the_recipes_suite(tmp_path, monkeypatch):
    assert archive.foreign_suites(BOOKWORM_POLICY, "bookworm") == []
    assert archive.foreign_suites(TRIXIE_TOO, "bookworm") == ["trixie"]
    for policy, message in ((TRIXIE_TOO, "offer trixie besides bookworm"),
                            (BOOKWORM_POLICY.replace("bookworm", "trixie"),
                             "do not offer bookworm")):
        def apt(argv, policy=policy, **_kw):
            assert argv == ["apt-cache", "policy"]  # refused before anything is resolved
            return subprocess.CompletedProcess(argv, 0, policy.encode(), b"")
        monkeypatch.setattr(archive, "_run", apt)
        monkeypatch.setattr(archive, "_require_tools", lambda tools: None)
        with pytest.raises(RecipeError, match=message):
            archive.resolve(["bash"], tmp_path, "bookworm")
