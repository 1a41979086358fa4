"""Unit tests of the refguest image builder's recipe checks, the download/verify path of the
pinned .debs and the build's own argument checks. No network, no apt, no boot: everything runs
on fakes. Module resolution is in test_image_kmod.py, initramfs and boot media in
test_image_boot.py."""
from __future__ import annotations

import hashlib
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from harness.images.debian_busybox import build, debs, host
from harness.images.debian_busybox.debs import fetch_package, verify_deb
from harness.images.debian_busybox.initramfs import _overlay_entries
from harness.images.debian_busybox.recipe import Package, RecipeError, load_recipe

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "guests" / "linux" / "refguest" / "recipe.yaml"
GOOD_SHA = "a" * 64


def recipe_dict() -> dict:
    return {
        "builder": "debian-busybox-hybrid",
        "hostname": "refguest",
        "kernel_cmdline": "console=ttyS0,115200n8",
        "modules": ["virtio_pci", "nvme"],
        "packages": [{"name": "busybox-static", "version": "1:1.35.0-4+deb12u1+b1",
                      "arch": "amd64", "sha256": GOOD_SHA}],
    }


def write_recipe(tmp_path: Path, data) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def recipe_error(tmp_path: Path, data) -> str:
    path = write_recipe(tmp_path, data)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    return message


# Recipe ----------------------------------------------------------------------------------------
def test_repository_recipe_is_valid_and_pins_every_package():
    recipe = load_recipe(RECIPE)
    assert recipe.hostname == "refguest"
    assert "console=ttyS0,115200n8" in recipe.kernel_cmdline.split()
    names = [p.name for p in recipe.packages]
    assert any(n.startswith("linux-image-6.1.0-") and n.endswith("-amd64") for n in names)
    assert {"busybox-static", "grub-common", "grub-pc-bin", "grub-efi-amd64-bin"} <= set(names)
    assert {"virtio_pci", "virtio_blk", "virtio_net", "nvme"} <= set(recipe.modules)
    for package in recipe.packages:
        assert len(package.sha256) == 64


def test_repository_overlay_has_init_files_with_exec_bits():
    tree = _overlay_entries(load_recipe(RECIPE).overlay)
    assert stat.S_IMODE(tree["etc/init.d/rcS"].mode) == 0o755
    assert stat.S_IMODE(tree["etc/inittab"].mode) == 0o644
    assert b"ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100" in tree["etc/inittab"].data


def test_valid_minimal_recipe(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, recipe_dict()))
    assert recipe.packages == (
        Package("busybox-static", "1:1.35.0-4+deb12u1+b1", "amd64", GOOD_SHA),)
    assert recipe.overlay == tmp_path / "overlay"


@pytest.mark.parametrize("field", ["builder", "hostname", "kernel_cmdline", "modules", "packages"])
def test_missing_field_is_named(tmp_path, field):
    data = recipe_dict()
    del data[field]
    assert f": {field}: missing" in recipe_error(tmp_path, data)


def test_missing_package_field_is_named(tmp_path):
    data = recipe_dict()
    del data["packages"][0]["sha256"]
    assert "packages[0].sha256: missing" in recipe_error(tmp_path, data)


@pytest.mark.parametrize("bad", ["abc", "A" * 64, "g" * 64, "a" * 63, "a" * 65])
def test_bad_sha256_format(tmp_path, bad):
    data = recipe_dict()
    data["packages"][0]["sha256"] = bad
    message = recipe_error(tmp_path, data)
    assert "packages[0].sha256" in message and "64 lowercase hex digits" in message


def test_unquoted_numeric_version_must_be_quoted(tmp_path):
    text = yaml.safe_dump(recipe_dict()).replace("1:1.35.0-4+deb12u1+b1", "1.5")
    text = text.replace("'1.5'", "1.5")  # make YAML read a float
    assert "packages[0].version: must be a string (quote it" in recipe_error(tmp_path, text)


def test_unknown_fields_are_rejected(tmp_path):
    data = recipe_dict()
    data["kernel_comandline"] = "typo"
    assert "kernel_comandline: unknown field" in recipe_error(tmp_path, data)
    data = recipe_dict()
    data["packages"][0]["url"] = "x"
    assert "packages[0].url: unknown field" in recipe_error(tmp_path, data)


def test_wrong_builder(tmp_path):
    data = recipe_dict()
    data["builder"] = "debootstrap"
    assert "builder: must be 'debian-busybox-hybrid'" in recipe_error(tmp_path, data)


def test_cmdline_cannot_inject_grub_script(tmp_path):
    data = recipe_dict()
    data["kernel_cmdline"] = "console=ttyS0; reboot"
    assert "kernel_cmdline" in recipe_error(tmp_path, data)


def test_duplicate_module_and_package(tmp_path):
    data = recipe_dict()
    data["modules"] = ["nvme-core", "nvme_core"]
    assert "modules[1]: 'nvme_core' is listed twice" in recipe_error(tmp_path, data)
    data = recipe_dict()
    data["packages"].append(dict(data["packages"][0]))
    message = recipe_error(tmp_path, data)
    assert "packages[1].name: package busybox-static is listed twice" in message


def test_invalid_yaml_names_line(tmp_path):
    message = recipe_error(tmp_path, "builder: x\nmodules: [a, b\nhostname: y\n")
    assert message.endswith("recipe.yaml:3: (syntax): invalid YAML: expected ',' or ']', but "
                            "got ':'")


def test_not_a_mapping(tmp_path):
    assert "must be a mapping" in recipe_error(tmp_path, "- a\n- b\n")


def test_unreadable_recipe(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(RecipeError, match=r"nope\.yaml:0: \(file\): cannot read: No such file"):
        load_recipe(missing)


def test_a_recipe_that_is_a_fifo_is_refused_not_read(tmp_path):
    import os

    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # reading it would block forever
    with pytest.raises(RecipeError, match="fifo.yaml:0: .*not a regular file"):
        load_recipe(fifo)


def test_package_file_name_and_apt_spec():
    package = Package("busybox-static", "1:1.35.0-4", "amd64", GOOD_SHA)
    assert package.filename == "busybox-static_1%3a1.35.0-4_amd64.deb"
    assert package.apt_spec == "busybox-static:amd64=1:1.35.0-4"
    assert Package("grub-common", "2.06", "all", GOOD_SHA).apt_spec == "grub-common=2.06"


# Downloads -------------------------------------------------------------------------------------
def fake_deb(content: bytes):
    """A download function that 'fetches' ``content`` the way apt-get download would."""
    calls = []

    def download(package: Package, directory: Path, recipe_path: Path) -> Path:
        calls.append(package.name)
        path = directory / package.filename
        path.write_bytes(content)
        return path

    download.calls = calls
    return download


def test_hash_mismatch_names_package_and_both_hashes_and_deletes(tmp_path):
    content = b"!<arch>\nnot really a deb\n"
    package = Package("busybox-static", "1:1.35.0-4", "amd64", GOOD_SHA)
    downloads = tmp_path / "debs"
    with pytest.raises(RecipeError) as err:
        fetch_package(package, downloads, lambda m: None, download=fake_deb(content))
    message = str(err.value)
    assert "busybox-static" in message
    assert GOOD_SHA in message
    assert hashlib.sha256(content).hexdigest() in message
    assert list(downloads.iterdir()) == []  # neither the file nor the temp dir is left


def test_verify_deb_deletes_a_wrong_file(tmp_path):
    fake = tmp_path / "grub-common_2.06_amd64.deb"
    fake.write_bytes(b"tampered")
    with pytest.raises(RecipeError, match=r"sha256 mismatch for package grub-common 2\.06: "
                       rf"expected {GOOD_SHA}, got {hashlib.sha256(b'tampered').hexdigest()}"):
        verify_deb(fake, Package("grub-common", "2.06", "amd64", GOOD_SHA))
    assert not fake.exists()
    good = tmp_path / "good.deb"
    good.write_bytes(b"ok")
    verify_deb(good, Package("grub-common", "2.06", "amd64", hashlib.sha256(b"ok").hexdigest()))
    assert good.exists()


def test_verified_download_is_renamed_into_place(tmp_path):
    content = b"fake deb"
    package = Package("grub-common", "2.06-13", "amd64", hashlib.sha256(content).hexdigest())
    downloads = tmp_path / "debs"
    download = fake_deb(content)
    path = fetch_package(package, downloads, lambda m: None, download=download)
    assert path == downloads / "grub-common_2.06-13_amd64.deb"
    assert path.read_bytes() == content
    assert [p.name for p in downloads.iterdir()] == [path.name]
    # Second call: re-verified from the cache, not downloaded again.
    assert fetch_package(package, downloads, lambda m: None, download=download) == path
    assert download.calls == ["grub-common"]


def test_corrupt_cached_file_is_replaced(tmp_path):
    content = b"good"
    package = Package("grub-pc-bin", "2.06-13", "amd64", hashlib.sha256(content).hexdigest())
    downloads = tmp_path / "debs"
    downloads.mkdir()
    (downloads / package.filename).write_bytes(b"corrupted")
    messages = []
    path = fetch_package(package, downloads, messages.append, download=fake_deb(content))
    assert path.read_bytes() == content
    assert any("fetching again" in m for m in messages)


def test_vanished_version_message(tmp_path, monkeypatch):
    def fake_run(argv, **kwargs):
        return subprocess.CompletedProcess(argv, 100, b"",
                                           b"E: Version '9.9' for 'x' was not found")

    monkeypatch.setattr(host.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(debs, "_run", fake_run)
    package = Package("grub-common", "9.9", "amd64", GOOD_SHA)
    with pytest.raises(RecipeError) as err:
        debs.apt_download(package, tmp_path, Path("guests/linux/refguest/recipe.yaml"))
    assert str(err.value).startswith(
        "pinned version 9.9 of package grub-common is no longer offered by the archive; "
        "update guests/linux/refguest/recipe.yaml")


def test_missing_host_tool_names_debian_package(monkeypatch):
    monkeypatch.setattr(host.shutil, "which",
                        lambda tool: None if tool in ("xorriso", "mcopy") else "/x")
    with pytest.raises(RecipeError) as err:
        host._require_tools(host.HOST_TOOLS)
    message = str(err.value)
    assert "xorriso (Debian package xorriso)" in message
    assert "mcopy (Debian package mtools)" in message
    assert "apt-get install mtools xorriso" in message


def test_bad_password_rejected_without_echoing_it(tmp_path):
    secret = "hunter2\nroot"
    with pytest.raises(RecipeError) as err:
        build(RECIPE, secret, tmp_path / "d", tmp_path / "w", tmp_path / "out.img", print)
    assert "hunter2" not in str(err.value)
    assert not (tmp_path / "d").exists()
