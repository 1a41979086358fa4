"""Every hostile input gets one clear line naming file, line and field: exit 2, within 2 s.

The corpus lives in tests/bad_inputs/:

* ``guests/``, ``scenarios/`` and ``hosts/`` hold YAML files; each file's last line says what
  `refvm validate` (``validate --hosts`` for hosts files) must print for it:
  ``# expect: LINE: FIELD: MESSAGE`` (a prefix of the message; ``(syntax)...`` for the old
  syntax cases, where the line is wherever the parser noticed).
* ``cli/*.args`` hold command lines: the first line is the arguments (shlex-quoted, with
  ``\\n``/``\\x1b`` escapes), the last ``# expect: WHOLE-LINE-PREFIX``.
* Special files (FIFOs, /dev/zero links, symlink loops, oversized files) are made by the tests
  below at run time.

Each case runs the real command line in a subprocess. It must exit 2 with exactly one line on
stderr and nothing else: no traceback, no control character, no value quoted whole, and it must
take at most 2 s (a hang is killed at 10 s and fails).
"""
from __future__ import annotations

import codecs
import os
import re
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BAD = Path(__file__).parent / "bad_inputs"
CORPUS = sorted(p for kind in ("guests", "scenarios", "hosts") for p in (BAD / kind).glob("*.yaml"))
CLI_CASES = sorted((BAD / "cli").glob("*.args"))
CPU_LIMIT = 2.0
MAX_LINE = 800  # the path, the field (cut at 120) and a message whose quoted values are cut
# What must never reach the terminal raw: controls (other than the final newline) and the
# Unicode line separators.
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def refvm(*args, cwd=ROOT):
    """Run ``python -m harness.cli ARGS``; returns (exit status, stderr, CPU seconds it used).

    CPU seconds, not wall seconds: what a hostile file must not do is make the CLI work
    (a quadratic parse, a billion-laughs expansion); a busy CI host only makes it wait, and a
    wall-clock limit flaked there. A hang that does not work (a blocking read) is caught by
    the wall-clock timeout. The figure is this process's reaped children's CPU time before
    and after: the test starts no other child meanwhile."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        proc = subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], cwd=cwd,
                              capture_output=True, text=True, errors="replace", timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"refvm {' '.join(map(str, args))[:200]} hung (30 s)") from None
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc.returncode, proc.stderr, cpu


def one_clean_line(code: int, stderr: str, cpu: float) -> str:
    """The checks every hostile input shares; returns the one line."""
    assert code == 2, stderr[:2000]
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr[:2000]
    assert stderr.endswith("\n") and stderr.count("\n") == 1, stderr[:2000]
    line = stderr[:-1]
    assert not UNSAFE.search(line), repr(line[:300])
    assert len(line) <= MAX_LINE, f"{len(line)} characters: {line[:200]}..."
    assert "<object object" not in line
    assert cpu <= CPU_LIMIT, f"used {cpu:.2f}s of CPU"
    return line


def expectation(path: Path) -> str:
    last = path.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1].decode()
    assert last.startswith("# expect: "), f"{path} has no expectation line"
    return last[len("# expect: "):]


def test_corpus_is_large_enough():
    assert len(CORPUS) + len(CLI_CASES) >= 150
    assert {p.parent.name for p in CORPUS} == {"guests", "scenarios", "hosts"}


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_bad_file_gives_one_clear_line(path):
    args = ["validate", "--hosts", path] if path.parent.name == "hosts" else ["validate", path]
    line = one_clean_line(*refvm(*args))
    expected = expectation(path)
    if expected.startswith("("):  # syntax errors: the line is wherever the parser noticed
        assert line.startswith(f"{path}:") and expected in line, line
    else:
        assert line.startswith(f"{path}:{expected}"), line


@pytest.mark.parametrize("path", CLI_CASES, ids=lambda p: f"cli/{p.stem}")
def test_bad_command_line_gives_one_clear_line(path):
    args = [codecs.decode(arg, "unicode_escape") if "\\" in arg else arg
            for arg in shlex.split(path.read_text().splitlines()[0])]
    line = one_clean_line(*refvm(*args))
    assert line.startswith(expectation(path)), line


# Special files, made at run time ---------------------------------------------------------------
GUEST = (BAD / "guests/unknown-key.yaml").read_text().replace("colour: blue\n", "")
GUEST = "\n".join(l for l in GUEST.splitlines() if not l.startswith("#")) + "\n"


def _fifo(tmp_path):
    os.mkfifo(tmp_path / "x.yaml")
    return tmp_path / "x.yaml", "not a regular file: a FIFO"


def _dev_zero(tmp_path):
    (tmp_path / "x.yaml").symlink_to("/dev/zero")
    return tmp_path / "x.yaml", "not a regular file: a device"


def _symlink_loop(tmp_path):
    (tmp_path / "x.yaml").symlink_to(tmp_path / "y.yaml")
    (tmp_path / "y.yaml").symlink_to(tmp_path / "x.yaml")
    return tmp_path / "x.yaml", "cannot read: Too many levels of symbolic links"


def _dangling_link(tmp_path):
    (tmp_path / "x.yaml").symlink_to(tmp_path / "nowhere.yaml")
    return tmp_path / "x.yaml", "cannot read: No such file or directory"


def _two_mib(tmp_path):
    (tmp_path / "x.yaml").write_text(GUEST + "#" * (2 << 20) + "\n")
    return tmp_path / "x.yaml", "larger than 262144 bytes"


def _endless_line(tmp_path):
    (tmp_path / "x.yaml").write_text("name: " + "a" * (8 << 20))
    return tmp_path / "x.yaml", "larger than 262144 bytes"


SPECIAL = {"fifo": _fifo, "dev-zero-link": _dev_zero, "symlink-loop": _symlink_loop,
           "dangling-link": _dangling_link, "two-mib-file": _two_mib,
           "eight-mib-line": _endless_line}


@pytest.mark.parametrize("make", SPECIAL.values(), ids=SPECIAL.keys())
@pytest.mark.parametrize("how", ["validate", "guest", "hosts"])
def test_special_file_is_refused_without_reading_it(tmp_path, make, how):
    path, message = make(tmp_path)
    args = {"validate": ["validate", path], "guest": ["plan", "--guest", path],
            "hosts": ["validate", "--hosts", path]}[how]
    field = "--hosts" if how == "hosts" else "(file)"
    line = one_clean_line(*refvm(*args))
    assert line == f"{path}:0: {field}: {message}", line


def test_a_file_just_under_the_size_cap_is_read_in_time(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(GUEST + "".join(f"# {i:07d} {'x' * 100}\n" for i in range(2300))
                    + "colour: blue\n")
    assert 240 << 10 < path.stat().st_size <= 256 << 10
    line = one_clean_line(*refvm("validate", path))
    assert line.startswith(f"{path}:2314: colour: unknown key"), line


def test_an_image_path_that_is_a_symlink_loop(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    guest = tmp_path / "g.yaml"
    guest.write_text(GUEST.replace("path: disk.img", "path: loop/disk.img"))
    line = one_clean_line(*refvm("validate", guest))
    assert line == f"{guest}:4: image.path: cannot resolve: a symlink loop", line


def test_a_directory_is_validated_file_by_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/bad.yaml").write_text(GUEST.replace("cpus: 1", "cpus: 0"))
    (tmp_path / "good.yaml").write_text(GUEST.replace("name: tiny", "name: tiny2"))
    (tmp_path / "notes.txt").write_text("not yaml: [")
    line = one_clean_line(*refvm("validate", tmp_path))
    assert line == f"{tmp_path / 'sub/bad.yaml'}:7: cpus: must be at least 1, got 0", line


def test_duplicate_names_across_files(tmp_path):
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(GUEST)
    code, err, _ = refvm("validate", tmp_path / "a.yaml", tmp_path / "b.yaml")
    assert code == 2
    assert err.strip() == f"{tmp_path / 'b.yaml'}:1: name: 'tiny' is also the name in " \
                          f"{tmp_path / 'a.yaml'}"


def test_a_file_of_many_mistakes_lists_twenty_and_counts_the_rest(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(GUEST + "".join(f"k{i}: 1\n" for i in range(500)))
    code, err, cpu = refvm("validate", path)
    lines = err.splitlines()
    assert code == 2 and cpu <= CPU_LIMIT and "Traceback" not in err
    assert len(lines) == 21, err
    assert lines[0].startswith(f"{path}:14: k0: unknown key")
    assert lines[-1] == f"{path}:34: (file): 480 more problem(s) not shown"
