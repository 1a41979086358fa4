"""`refvm report compare OLD NEW` on hand-made report files."""
from __future__ import annotations

import json

import pytest

from harness.cli import main


def write(path, *cases):
    path.write_text(json.dumps({"format": "refvm-report/1", "header": {}, "cases": [
        {"id": case_id, "result": result, "reason": reason} for case_id, result, reason in cases]}))
    return str(path)


@pytest.fixture
def base(tmp_path):
    return write(tmp_path / "old.json",
                 ("boot[refguest-csm-qemu]", "pass", ""),
                 ("nvme[refguest-csm-qemu]", "fail", "wrong data at 0x1000"),
                 ("uart[refguest-csm-qemu]", "pass", ""),
                 ("virtio-net[refguest-csm-qemu]", "pass", ""),
                 ("boot[freebsd-14.3-uefi-qemu]", "skip", "no image"))


def test_each_kind_of_change_is_one_line_and_a_regression_fails(tmp_path, base, capsys):
    new = write(tmp_path / "new.json",
                ("boot[refguest-csm-qemu]", "fail", "no login prompt \x1b[2J"),
                ("nvme[refguest-csm-qemu]", "pass", ""),
                ("uart[refguest-csm-qemu]", "skip", "no uart"),
                ("virtio-net[refguest-csm-qemu]", "pass", ""),
                ("virtio-blk[refguest-csm-qemu]", "pass", ""))
    assert main(["report", "compare", base, new]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "regressed boot[refguest-csm-qemu]: pass -> fail: no login prompt \\x1b[2J",
        "fixed     nvme[refguest-csm-qemu]: fail -> pass",
        "new       virtio-blk[refguest-csm-qemu]: - -> pass",
        "gone      boot[freebsd-14.3-uefi-qemu]: skip -> -: no image",
        "changed   uart[refguest-csm-qemu]: pass -> skip: no uart",
        "refvm: 1 regressed, 1 fixed, 1 new, 1 gone, 1 changed"]


def test_no_regression_is_exit_0_and_json_says_the_same(tmp_path, base, capsys):
    new = write(tmp_path / "new.json",
                ("boot[refguest-csm-qemu]", "pass", ""), ("nvme[refguest-csm-qemu]", "error", "x"),
                ("uart[refguest-csm-qemu]", "pass", ""), ("virtio-net[refguest-csm-qemu]", "pass", ""),
                ("boot[freebsd-14.3-uefi-qemu]", "skip", "no image"))
    assert main(["report", "compare", base, new, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["changed"] == [{"id": "nvme[refguest-csm-qemu]", "old": "fail", "new": "error",
                               "reason": "x"}]
    assert not out["regressed"] and not out["new"]


@pytest.mark.parametrize("content, line", [
    (b"{not json", "old.json:1: (file): not JSON: Expecting property name enclosed in double "
                   "quotes"),
    (b"\xff", "old.json:1: (file): not UTF-8: invalid start byte"),
    (b'{"cases": [{"id": "a", "result": "passed"}]}',
     "old.json:1: cases[0].result: must be one of pass, fail, error, skip"),
    (b'{"cases": [{"id": "a", "result": "pass"}, {"id": "a", "result": "fail"}]}',
     "old.json:1: cases[1].id: a second case with this id"),
    (b'[1, 2]', "old.json:1: cases: not a refvm report (no list of cases)"),
    (b"[" * 100000, "old.json:1: (file): nested too deeply"),
], ids=["not-json", "not-utf8", "bad-result", "duplicate-id", "not-a-report", "deep"])
def test_a_bad_report_is_one_line_and_exit_2(tmp_path, base, capsys, content, line):
    bad = tmp_path / "old.json"
    bad.write_bytes(content)
    assert main(["report", "compare", str(bad), base]) == 2
    err = capsys.readouterr().err
    assert err == f"{tmp_path}/{line}\n" and "Traceback" not in err


def test_a_fifo_is_refused_without_reading_it(tmp_path, base, capsys):
    import os

    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    assert main(["report", "compare", base, str(fifo)]) == 2
    assert capsys.readouterr().err == f"{fifo}:0: (file): not a regular file\n"
