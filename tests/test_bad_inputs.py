"""Every malformed guest or scenario file gets one clear line naming file, line and field.

The corpus lives in tests/bad_inputs/{guests,scenarios}/; each file's last line says what
`refvm validate` must print for it: ``# expect: LINE: FIELD: MESSAGE`` (a prefix of the
message). Run through the real command line: exit status 2, one line, no traceback.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CORPUS = sorted((Path(__file__).parent / "bad_inputs").rglob("*.yaml"))


def expectation(path: Path) -> str:
    last = path.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1].decode()
    assert last.startswith("# expect: "), f"{path} has no expectation line"
    return last[len("# expect: "):]


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_bad_file_gives_one_clear_line(path):
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "validate", str(path)],
                          capture_output=True, text=True, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    expected = expectation(path)
    if expected.startswith("("):  # syntax errors: the line is wherever the parser noticed
        assert lines[0].startswith(f"{path}:") and expected in lines[0], lines[0]
    else:
        assert lines[0].startswith(f"{path}:{expected}"), lines[0]


def test_duplicate_names_across_files(tmp_path):
    good = (Path(__file__).parent / "bad_inputs/guests/unknown-key.yaml").read_text()
    good = "\n".join(l for l in good.splitlines() if not l.startswith(("colour", "#"))) + "\n"
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(good)
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "validate",
                           str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"{tmp_path / 'b.yaml'}:1: name: 'tiny' is also the name in " \
                                  f"{tmp_path / 'a.yaml'}"
