"""The ``refvm`` command: validate, plan, run, images.

``run`` is pytest underneath (same options as the plugin, anything else passed through), so a
CI job may call either ``refvm run`` or ``pytest``; ``plan`` shows the matrix and the exact
hypervisor command lines without booting anything.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from .backends import BACKENDS, DEFAULT_BACKEND
from .catalog import (load_all, load_guests, load_scenario, load_scenarios, matrix_guests,
                      repo_guest_files, same_file_key, scenario_files, select_scenarios,
                      unique_files)
from .errors import ConfigError, HarnessError, Problem, Unsupported, escape
from .hosts import HostPool, check_uri, load_hosts
from .images.cache import ImageCache, ImageUnavailable
from .matrix import build as build_matrix
from .model import FIRMWARES, load_guest
from .release import load_release, parse_freebsd_release
from .report.expectations import FAULTS
from .paths import SCENARIOS_DIR, cache_dir
from .yamlfile import load_file

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _selection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default=None, choices=BACKENDS,
                        help=f"hypervisor backend (default here: {DEFAULT_BACKEND})")
    parser.add_argument("--guest", action="append", default=[], metavar="NAME|PATH")
    parser.add_argument("--firmware", action="append", default=[], choices=FIRMWARES)
    parser.add_argument("--scenario", action="append", default=[], metavar="NAME")
    parser.add_argument("--artifacts", default="artifacts", metavar="DIR")
    parser.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    parser.add_argument("--qemu-binary", default="qemu-system-x86_64", metavar="PATH")
    parser.add_argument("--libvirt-uri", default="qemu:///system", metavar="URI")
    parser.add_argument("--csm-firmware", default=None, metavar="PATH")
    parser.add_argument("--offline", action="store_true")
    _hosts_option(parser)


def _release_options(parser: argparse.ArgumentParser, doing: str) -> None:
    parser.add_argument("--bhyve-release", type=_release, default=None, metavar="X.Y",
                        help=f"bhyve: {doing} this FreeBSD release's bhyve (11.3 ... 15.x); "
                             "a FreeBSD host's own bhyve still wins, and a mismatch is said")
    parser.add_argument("--release", type=Path, default=None, metavar="FILE",
                        help="a release validation file (releases/14.3.yaml): its backend, "
                             "guests, firmware, scenarios and expected skips")


def _hosts_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hosts", default=None, metavar="FILE", type=Path,
                        help="a hosts file (YAML): spread the matrix over these libvirt hosts")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refvm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    validate = sub.add_parser("validate", help="check guest, scenario and hosts files")
    validate.add_argument("files", nargs="*", type=Path, metavar="FILE|DIR",
                          help="guest and scenario files, or directories of them (*.yaml)")
    validate.add_argument("--hosts", action="append", default=[], type=Path, metavar="FILE",
                          help="a hosts file to check (repeatable)")
    plan = sub.add_parser("plan", help="show the test matrix and exact command lines")
    _selection_options(plan)
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    _release_options(plan, "plan against")
    run = sub.add_parser("run", help="run the conformance suite (pytest); extra args go to pytest")
    _selection_options(run)
    run.add_argument("-j", "--jobs", type=_jobs, default=None, metavar="N",
                     help="VMs at once (default: as many as cores and free memory allow)")
    run.add_argument("--quiet", action="store_true",
                     help="no line per case and no estimate (CI logs): pytest's own output")
    _release_options(run, "run on a host with")
    run.add_argument("--keep-failed", action="store_true",
                     help="keep a failing case's VM up after the run and hand you its console "
                          "(Ctrl-] leaves); cases run one at a time in this process")
    repro = sub.add_parser("repro", help="boot one case's VM, run its steps, then hand its "
                                         "console to you")
    repro.add_argument("case", metavar="CASE", help="a case as refvm plan lists it, e.g. "
                                                    "boot[refguest-csm-qemu]")
    repro.add_argument("--until", metavar="STEP", default=None,
                       help="run the steps up to this one (its number, or its kind: login); "
                            "default: all but the final poweroff and the steps that need the "
                            "VM stopped")
    for name, default in (("--guest", None), ("--artifacts", "artifacts"),
                          ("--accel", "auto"), ("--qemu-binary", "qemu-system-x86_64"),
                          ("--libvirt-uri", "qemu:///system"), ("--csm-firmware", None)):
        if name == "--guest":
            repro.add_argument(name, action="append", default=[], metavar="NAME|PATH")
        else:
            repro.add_argument(name, default=default)
    repro.add_argument("--backend", default=None, choices=BACKENDS,
                       help="default: the one CASE names (its last word), else "
                            f"{DEFAULT_BACKEND}")
    repro.add_argument("--offline", action="store_true")
    images = sub.add_parser("images", help="fetch, build, verify, import or repin guest images")
    images.add_argument("action", choices=("fetch", "verify", "import", "repin"))
    images.add_argument("files", nargs="*", type=Path, metavar="FILE",
                        help="import: images downloaded elsewhere, matched to guests by sha256")
    images.add_argument("--guest", action="append", default=[], metavar="NAME|PATH")
    images.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS,
                        help="fetch: the hypervisor that runs an unattended install (Windows)")
    images.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    images.add_argument("--qemu-binary", default="qemu-system-x86_64", metavar="PATH")
    images.add_argument("--libvirt-uri", default="qemu:///system", metavar="URI")
    images.add_argument("--csm-firmware", default=None, metavar="PATH")
    images.add_argument("--artifacts", default="artifacts", metavar="DIR",
                        help="fetch: where an install's console logs go")
    images.add_argument("--allow-unavailable", action="store_true",
                        help="fetch: a guest whose download this host cannot reach is reported, "
                             "not an error (bootstrap on a host without those sites)")
    images.add_argument("--no-update", action="store_true",
                        help="repin: use apt's lists as they are (no apt-get update first)")
    clean = sub.add_parser("clean", help="remove what runs that were killed left behind")
    clean.add_argument("--libvirt-uri", default="qemu:///system", metavar="URI")
    clean.add_argument("--dry-run", action="store_true",
                       help="only list what would be removed, and why each is judged dead")
    _hosts_option(clean)
    sub.add_parser("doctor", help="check that this host can run the suite, and say how to fix it")
    report = sub.add_parser("report", help="work with runs' report.json files")
    report_sub = report.add_subparsers(dest="report_command", required=True)
    compare = report_sub.add_parser(
        "compare", help="what regressed, was fixed, is new or gone between two runs "
                        "(exit status 1 if anything regressed)")
    compare.add_argument("old", type=Path, metavar="OLD.json")
    compare.add_argument("new", type=Path, metavar="NEW.json")
    compare.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "run":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if "--" in extra:  # `refvm run -- -n 2`: the separator is ours, not an argument to pytest
        extra.remove("--")
    try:
        if getattr(args, "release", None) is not None:
            apply_release(args, load_release(args.release))
        if args.command == "repro":  # `boot[refguest-uefi-bhyve]` names its backend
            from .repro import backend_of
            args.backend = backend_of(args.case, args.backend)
        if hasattr(args, "backend") and args.backend is None:
            args.backend = DEFAULT_BACKEND
        if getattr(args, "libvirt_uri", None) is not None:
            check_uri(args.libvirt_uri)
        return {"validate": cmd_validate, "plan": cmd_plan, "run": cmd_run,
                "images": cmd_images, "clean": cmd_clean,
                "doctor": cmd_doctor, "report": cmd_report, "repro": cmd_repro}[args.command](args, extra)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EXIT_USAGE
    except HarnessError as err:
        print(f"refvm: [{err.category}] {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("refvm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `refvm plan | head`: the reader has gone, nothing to report
        sys.stderr.close()
        return EXIT_OK
    except Exception as err:  # noqa: BLE001 - a bug in refvm: one line, traceback on request
        if os.environ.get("REFVM_DEBUG"):
            raise
        print(f"refvm: internal error: {type(err).__name__}: {err} "
              "(this is a bug in refvm; REFVM_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 3


# validate ------------------------------------------------------------------------------------
def _classify(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """(guest files, scenario files) among ``files``, each read once here. A file in a folder
    named scenarios, or with ``steps``, is a scenario; a file that a guest names as its
    ``image.build`` is a build recipe (guests/linux/refguest/recipe.yaml), left to the image
    builder; anything else, unreadable files included, is checked as a guest."""
    scenarios, guests, recipes = [], [], set()
    for path in files:
        try:
            raw = load_file(path)
        except ConfigError:
            raw = None
        if path.parent.name == "scenarios" or isinstance(raw, dict) and "steps" in raw:
            scenarios.append(path)
            continue
        guests.append(path)
        image = raw.get("image") if isinstance(raw, dict) else None
        build = image.get("build") if isinstance(image, dict) else None
        if isinstance(build, str) and build and "\0" not in build:
            recipes.add(same_file_key(path.parent / build))
            recipes.update(_lock_beside(path.parent / build))
    return [p for p in guests if same_file_key(p) not in recipes], scenarios


def _lock_beside(recipe: Path) -> list:
    """The lock file a Debian root-file-system recipe names (``lock: lock.yaml``), also the
    builder's to check; none when the recipe cannot be read or names none."""
    try:
        raw = load_file(recipe)
    except (ConfigError, OSError):
        return []
    lock = raw.get("lock") if isinstance(raw, dict) else None
    if isinstance(lock, str) and lock and "/" not in lock and "\0" not in lock:
        return [same_file_key(recipe.parent / lock)]
    return []


def _yaml_files(paths: list[Path], problems: list[Problem]) -> list[Path]:
    """The files named, with each directory replaced by the YAML files under it (sorted,
    recursively), each file once. A path that does not exist is a problem; a FIFO, device or
    symlink loop is passed on, for the loader to refuse without reading it."""
    files = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml")
                           and not p.is_dir())
            if not found:
                problems.append(Problem(str(path), 0, "(file)", "no *.yaml files under it"))
            files += found
        elif os.path.lexists(path):
            files.append(path)
        else:
            problems.append(Problem(str(path), 0, "(file)", "no such file"))
    return unique_files(files)


def cmd_validate(args, _extra) -> int:
    """Check files (default: the repository's); every problem is one ``file:line: field:`` line."""
    problems: list[Problem] = []
    if args.files:
        files = _yaml_files(args.files, problems)
    elif args.hosts:
        files = []
    else:
        files = repo_guest_files() + scenario_files()
    guests, scenarios = _classify(files)
    for paths, loader in ((guests, load_guest), (scenarios, load_scenario)):
        try:
            load_all(paths, loader)  # also: two files may not use one name
        except ConfigError as err:
            problems += err.problems
    hosts_files = unique_files(args.hosts)
    for hosts_file in hosts_files:
        try:
            load_hosts(hosts_file)
        except ConfigError as err:
            problems += err.problems
    if problems:
        print(ConfigError(problems), file=sys.stderr)
        return EXIT_USAGE
    print(f"ok: {len(guests) + len(scenarios) + len(hosts_files)} file(s) valid")
    return EXIT_OK


# plan ----------------------------------------------------------------------------------------
def cmd_plan(args, _extra) -> int:
    from .pytest_plugin.state import BackendsByHost
    from .runner import Run

    guests = matrix_guests(args.guest)
    scenarios = select_scenarios(load_scenarios(), args.scenario)
    cache = ImageCache(cache_dir(), allow_fetch=False, allow_build=False)
    pool = HostPool(load_hosts(args.hosts)) if args.hosts else None
    backends = BackendsByHost(args, cache, lambda: guests, planning=True)
    backend = pool.offer(args.backend) if pool else backends.get(None)
    run = Run(None, Path(args.artifacts))
    matrix = build_matrix(scenarios, guests, backend, args.firmware)
    hosts = pool.assign((case.id, case.firmware, case.backend)
                        for case, reason in matrix if reason is None) if pool else {}
    rows = []
    for case, reason in matrix:
        image = cache.expected_path(case.guest)
        row = {"id": case.id, "skip": reason, "error": None, "commands": [], "adds": [],
               "image": str(image), "image_ready": image.is_file()}
        host = hosts.get(case.id)
        if pool and reason is None and host is None:
            row["skip"] = reason = pool.why_none(case.firmware, case.backend)
        if host is not None:
            row["host"] = {"name": host.host.name, "uri": host.host.uri, "slot": host.group}
        if reason is None:
            case_backend = backends.get(host and host.host)
            spec = run.vm_spec(case, cache.expected_path(case.guest), case_backend)
            try:
                row["commands"] = case_backend.command_lines(spec)
                row["adds"] = scenario_additions(case_backend, spec)
                row["details"] = case_backend.plan_details(spec)
            except Unsupported as err:  # this one case needs what the host lacks: run skips
                row["skip"] = str(err)
            except HarnessError as err:  # the host is unreachable or broken: run errors
                row["error"] = str(err)
        rows.append(row)
    rows = _install_rows(guests, backend, backends, cache, args.firmware, run.run_id) + rows
    note = _release_note(backend, getattr(args, "bhyve_release", None))
    release = _planned_release(args, rows)
    if args.json:
        print(json.dumps({"backend": backend.describe(), "run_id": run.run_id, "cases": rows,
                          **({"release_note": note} if note else {}),
                          **({"release": release} if release else {})}, indent=2))
        return EXIT_OK
    print(f"# backend: {backend.describe()}")
    if note:
        print(f"# note: {note}")
    if release:
        print(f"# {release['file']}: as planned, {release['verdict']} (if every case that "
              f"runs passes)")
        for skip in release["expected_skips"]:
            print(f"#   expected skip, line {skip['line']}: {skip['expects']}: held for "
                  f"{len(skip['held'])} case(s)")
        for key in FAULTS:
            for entry in release[key]:
                case_id = entry if isinstance(entry, str) else entry["id"]
                why = "" if isinstance(entry, str) else f": {entry['reason']}"
                print(f"#   {key.replace('_', ' ')}: {case_id}{why}")
    print(f"# paths below use run id {run.run_id}; each run uses its own")
    for row in rows:
        where = f" on {row['host']['slot']}" if row.get("host") else ""
        verdict = f"SKIP: {row['skip']}" if row["skip"] else \
            f"ERROR: {row['error']}" if row["error"] else f"run{where}{_image_note(row)}"
        print(f"{row['id']:48} {verdict}")
    for row in rows:
        if not row["commands"]:
            continue
        print(f"\n# {row['id']}")
        if row.get("host"):
            print(f"#   host: {row['host']['name']} ({row['host']['uri']}), "
                  f"slot {row['host']['slot']}")
        for piece in row["adds"]:
            print(f"#   scenario adds: {piece}")
        for argv in row["commands"]:
            print(" \\\n    ".join(_pairs(argv)))
        if row.get("details"):
            print(row["details"])
    return EXIT_OK


def _install_rows(guests, backend, backends, cache, firmwares, run_id: str) -> list[dict]:
    """The unattended installs (`refvm images fetch` runs them once) of the guests that have
    one: the installer VM's command lines, with the cache paths they will use."""
    from .images.windows.install import install_spec
    from .paths import temp_root

    rows = []
    for guest in guests:
        if not guest.image.install:
            continue
        firmware = guest.firmware[0]
        if firmwares and firmware not in firmwares:
            continue
        target = cache.installed_path(guest)
        row = {"id": f"install[{guest.name}-{firmware}-{backend.name}]", "install": True,
               "skip": backend.unsupported(firmware), "error": None, "commands": [],
               "adds": [], "image": str(target), "image_ready": target.is_file()}
        if row["skip"] is None:
            scratch = target.parent / f"refvm-install-{run_id}"
            win = guest.windows
            spec = install_spec(guest, f"refvm-install-{run_id}", scratch / "system.raw",
                                cache.media_path(win.iso), scratch / "answers.iso",
                                cache.media_path(win.virtio_win) if win.virtio_win else None,
                                temp_root() / f"refvm-install-{run_id}",
                                Path("artifacts") / f"install-{guest.name}")
            case_backend = backends.get(None)
            try:
                row["commands"] = case_backend.command_lines(spec)
                row["details"] = case_backend.plan_details(spec)
            except Unsupported as err:
                row["skip"] = str(err)
            except HarnessError as err:
                row["error"] = str(err)
        rows.append(row)
    return rows


def _planned_release(args, rows: list[dict]) -> dict | None:
    """The release file's expectations against the plan: a case the plan runs counts as one
    that will run ("run"), a planned skip or error as that."""
    from .report.expectations import check

    release = getattr(args, "release_file", None)
    if release is None:
        return None
    planned = [{"id": row["id"], "reason": row["skip"] or row["error"] or "",
                "result": "skip" if row["skip"] else "error" if row["error"] else "run"}
               for row in rows if not row.get("install")]
    return check(release, planned)


def scenario_additions(backend, spec) -> list[str]:
    """What a scenario's attachments add to the bare guest's VM: whole commands that only the
    scenario needs (e.g. tap set-up), and the pieces it adds to the hypervisor's command."""
    from dataclasses import replace

    bare = backend.command_lines(replace(spec, disks=(spec.boot_disk,), nics=(),
                                         serials=spec.serials[:1]))
    by_program = {argv[0]: argv for argv in bare}
    added = []
    for argv in backend.command_lines(spec):
        if argv in bare:
            continue
        if argv[0] not in by_program:
            added.append(shlex.join(argv))
            continue
        base = set(_pairs(by_program[argv[0]]))
        added += [piece for piece in _pairs(argv) if piece not in base]
    return added


def _pairs(argv: list[str]) -> list[str]:
    """Group '-opt value' pairs on one line each, for reading; every token shell-quoted."""
    lines, i = [shlex.quote(argv[0])], 1
    while i < len(argv):
        if argv[i].startswith("-") and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            lines.append(f"{shlex.quote(argv[i])} {shlex.quote(argv[i + 1])}")
            i += 2
        else:
            lines.append(shlex.quote(argv[i]))
            i += 1
    return lines


# run -----------------------------------------------------------------------------------------
class _Outcomes:
    """Counts results so ``refvm run`` exits 0 only when every selected case passed.

    A case the matrix rules out (its ``skip`` property says ``matrix``) is not a failure to
    run; any other skip is, except one whose guest image this host cannot have (``image``:
    a download it cannot reach) when the guests were not chosen by name: the repository's
    FreeBSD and Windows guests are skipped on a host without their images, not failed. Read
    from the reports, which pytest-xdist relays from workers."""

    def __init__(self):
        self.passed = self.failed = self.runtime_skips = self.image_skips = 0

    def pytest_runtest_logreport(self, report):
        skip = dict(report.user_properties).get("skip")
        if report.failed:
            self.failed += 1
        elif report.skipped and skip == "image":
            self.image_skips += 1
        elif report.skipped and skip != "matrix":
            self.runtime_skips += 1
        elif report.passed and report.when == "call":
            self.passed += 1


def cmd_run(args, extra) -> int:
    import pytest

    # The selection and the hosts file are checked here, once: inside pytest a bad guest file
    # would be a collection error (and a traceback) for every scenario file.
    guests = load_guests(args.guest)
    scenarios = select_scenarios(load_scenarios(), args.scenario)
    if args.hosts:
        load_hosts(args.hosts)
    refused = _bhyve_release_here(args)
    if refused is not None:
        return refused
    pytest_args = [str(SCENARIOS_DIR), "-p", "harness.pytest_plugin.plugin",
                   "--backend", args.backend, "--artifacts", args.artifacts, "--accel", args.accel,
                   "--qemu-binary", args.qemu_binary, "--report"]
    if not any(arg.startswith("--junit-xml") or arg.startswith("--junitxml") for arg in extra):
        pytest_args.append(f"--junitxml={Path(args.artifacts) / 'junit.xml'}")
    if args.csm_firmware:
        pytest_args += ["--csm-firmware", args.csm_firmware]
    if args.backend == "libvirt":
        pytest_args += ["--libvirt-uri", args.libvirt_uri]
    for option in ("guest", "firmware", "scenario"):
        for value in getattr(args, option):
            pytest_args += [f"--{option}", value]
    if args.offline:
        pytest_args.append("--offline")
    if args.release:
        pytest_args += ["--release", str(args.release)]
    if args.bhyve_release:
        pytest_args += ["--bhyve-release", "%d.%d" % args.bhyve_release]
    if not args.quiet:
        pytest_args.append("--progress")
    plugins = [_Outcomes()]
    if args.keep_failed:
        _one_at_a_time(args, extra)
        from .keep import Keeper
        plugins.append(Keeper())
    elif args.hosts:
        pytest_args += ["--hosts", str(args.hosts)] + _parallel_options(args.hosts, extra)
    else:
        pytest_args += _local_jobs(args, extra, guests, scenarios)
    try:
        code = int(pytest.main(pytest_args + extra, plugins=plugins))
    finally:
        if args.keep_failed:
            plugins[1].hand_over_all()
    outcomes = plugins[0]
    if code == pytest.ExitCode.USAGE_ERROR:  # a bad option after `--`: refvm's usage status
        return EXIT_USAGE
    if args.release:
        return _release_verdict(Path(args.artifacts) / "report.json", code)
    if code != 0:
        return code
    if outcomes.passed == 0:
        print("refvm: no case ran and passed", file=sys.stderr)
        return 5
    if outcomes.image_skips:
        chosen = " chosen by name" if args.guest else ""
        print(f"refvm: {outcomes.image_skips} case(s) of guests{chosen} whose image this host "
              f"cannot have were skipped (refvm images import FILE adds one)", file=sys.stderr)
    if outcomes.runtime_skips or (outcomes.image_skips and args.guest):
        skipped = outcomes.runtime_skips + (outcomes.image_skips if args.guest else 0)
        print(f"refvm: {skipped} selected case(s) were skipped", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _release(text: str) -> tuple:
    try:
        return parse_freebsd_release(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def apply_release(args, release) -> None:
    """A release file names the matrix: its backend, guests, firmware, scenarios and (for
    bhyve) the FreeBSD release. The same choices on the command line would be two answers to
    one question, so they are refused unless they agree."""
    def refuse(option: str, message: str):
        raise ConfigError([Problem("(command line)", 0, option, message)])

    for option in ("guest", "firmware", "scenario"):
        if getattr(args, option):
            refuse(f"--{option}", f"{args.release} names the {option}s of the matrix: leave "
                                  f"--{option} out (or copy the release file and edit it)")
    if args.backend not in (None, release.backend):
        refuse("--backend", f"{args.release} is for the {release.backend} backend, not "
                            f"{args.backend}")
    if args.bhyve_release not in (None, release.release) and release.backend == "bhyve":
        refuse("--bhyve-release", f"{args.release} is for FreeBSD {release.name}")
    args.backend = release.backend
    args.guest, args.firmware = list(release.guests), list(release.firmware)
    args.scenario = list(release.scenarios)
    if release.backend == "bhyve":
        args.bhyve_release = release.release
    args.release_file = release


def _bhyve_release_here(args) -> int | None:
    """``run --bhyve-release X.Y`` needs a host with bhyve: elsewhere it can only be planned
    (said, exit 2). On FreeBSD the host's real bhyve runs; a release mismatch is said."""
    from .pytest_plugin.state import make_backend

    if args.bhyve_release is None:
        return None
    wanted = "%d.%d" % args.bhyve_release
    if args.backend != "bhyve":
        print(f"refvm: --bhyve-release {wanted} is for --backend bhyve, not {args.backend}",
              file=sys.stderr)
        return EXIT_USAGE
    backend = make_backend("bhyve", args, None, [])
    if backend.caps.assumed:
        how = f"--release {args.release}" if args.release else \
            f"--backend bhyve --bhyve-release {wanted}"
        print(f"refvm: cannot run FreeBSD {wanted}'s bhyve here: {'; '.join(backend.caps.notes)}"
              f" (bhyve runs on FreeBSD hosts). This host can only plan it: refvm plan {how}",
              file=sys.stderr)
        return EXIT_USAGE
    note = _release_note(backend, args.bhyve_release)
    if note:
        print(f"refvm: note: {note}", file=sys.stderr)
    return None


def _release_verdict(report_path: Path, code: int) -> int:
    """A release run's exit status is its verdict: 0 when the release holds, else 1 (an
    expected skip is no failure; an unexpected one is)."""
    try:
        release = json.loads(report_path.read_text())["release"]
    except (OSError, ValueError, KeyError, TypeError):
        print(f"refvm: no release verdict in {report_path} (pytest exit status {code})",
              file=sys.stderr)
        return code or EXIT_FAILED
    print(f"refvm: {escape(str(release.get('verdict')))}; details in "
          f"{report_path.with_suffix('.md')}", file=sys.stderr)
    return EXIT_OK if release.get("holds") is True else EXIT_FAILED


def _release_note(backend, wanted) -> str | None:
    """Planned for a named release on a host whose own bhyve answered: say which one won."""
    caps = getattr(backend, "caps", None) if backend.name == "bhyve" else None
    if not wanted or caps is None or caps.assumed or tuple(caps.release) == tuple(wanted):
        return None
    return (f"this host's bhyve is FreeBSD {caps.release_name}, not the "
            f"{wanted[0]}.{wanted[1]} asked for: its real capabilities were used")


def _one_at_a_time(args, extra: list[str]) -> None:
    """--keep-failed: a kept VM lives only as long as the process that started it, so every
    case runs here, in refvm run's own process: no workers, no pool."""
    clash = "--hosts" if args.hosts else "-j" if (args.jobs or 1) > 1 else \
        "-n" if _chooses_workers(extra) else None
    if clash:
        raise ConfigError([Problem("(command line)", 0, clash, "--keep-failed runs the cases "
                                   "one at a time in refvm run's own process (a kept VM dies "
                                   "with the process that started it): leave " + clash
                                   + " out")])


def _jobs(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 256, got "
                                         f"{escape(text)[:20]!r}")
    return int(text)


def _chooses_workers(extra: list[str]) -> bool:
    return any(arg == "-n" or arg.startswith(("-n", "--numprocesses")) for arg in extra)


def _local_jobs(args, extra: list[str], guests, scenarios) -> list[str]:
    """``-n N`` for a run on this host: -j, else as many VMs as there are cores, free memory
    for (the largest selected guest + QEMU's own share) and cases; nothing when that is 1 or
    the pytest arguments choose their own."""
    from .parallel import default_jobs

    if _chooses_workers(extra):
        return []
    cases = sum(1 for guest in guests for fw in guest.firmware
                if not args.firmware or fw in args.firmware) * len(scenarios)
    jobs = args.jobs or default_jobs(cases, max((g.memory for g in guests), default=0))
    return ["-n", str(jobs)] if jobs > 1 else []


def _parallel_options(hosts_file: Path, extra: list[str]) -> list[str]:
    """``-n <capacity>`` for a pool run, unless the pytest arguments choose their own."""
    if _chooses_workers(extra):
        return []
    capacity = HostPool(load_hosts(hosts_file)).capacity
    return ["-n", str(capacity)] if capacity > 1 else []


def _image_note(row: dict) -> str:
    """What a run will need first when the case's image is not on this host yet."""
    if row.get("install"):
        return " (done)" if row["image_ready"] else " (once, by: refvm images fetch)"
    if row["image_ready"]:
        return ""
    return " (image not here yet: refvm images fetch, or import)"


# images --------------------------------------------------------------------------------------
def cmd_images(args, _extra) -> int:
    guests = load_guests(args.guest)
    fetching = args.action == "fetch"
    cache = ImageCache(cache_dir(), allow_fetch=fetching, allow_build=fetching,
                       log=lambda text: print(f"refvm: {text}", flush=True))
    if fetching and any(g.image.install for g in guests):
        cache.installer = _installer(args, cache, guests)
    if args.action == "import":
        return _import_images(cache, args.files, guests)
    if args.files:
        print(f"refvm: images {args.action} takes no files (only import does)", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "repin":
        return _repin_images(guests, update=not args.no_update)
    status = EXIT_OK
    for guest in guests:
        try:
            path = cache.prepare(guest, full_check=True)
            print(f"{guest.name}: ok {path}")
        except ImageUnavailable as err:
            print(f"{guest.name}: missing: {err}")
            if not (fetching and args.allow_unavailable):
                status = EXIT_FAILED
        except HarnessError as err:
            print(f"{guest.name}: error: {err}")
            status = EXIT_FAILED
    return status


def _installer(args, cache: ImageCache, guests):
    """What runs an unattended install for ``images fetch``: on the backend named, its
    console logs under --artifacts."""
    from .images.windows.install import Installer
    from .pytest_plugin.state import make_backend

    return Installer(lambda: make_backend(args.backend, args, cache, guests),
                     Path(args.artifacts), cache.install_key)


def _repin_images(guests, update: bool) -> int:
    """Rewrite the pins of every built guest (or those named) from the archive, saying what
    changed; guests that are downloaded or local files have nothing to repin."""
    from .images.builders import BuilderError
    from .images.debian_busybox.recipe import RecipeError
    from .images.repin import repin

    status, updated = EXIT_OK, False
    for guest in guests:
        if guest.image.build is None:
            continue
        try:
            lines = repin(guest.image.build, update and not updated,
                          log=lambda text: print(f"refvm: {text}", flush=True))
            updated = True
        except (RecipeError, BuilderError) as err:
            print(f"{guest.name}: error: {err}")
            status = EXIT_FAILED
            continue
        if lines:
            print(f"{guest.name}: repinned {guest.image.build} ({len(lines)} change(s)):")
            print("\n".join(lines))
        else:
            print(f"{guest.name}: pins unchanged ({guest.image.build})")
    return status


def _import_images(cache: ImageCache, files: list[Path], guests) -> int:
    if not files:
        print("refvm: images import needs the image files to import", file=sys.stderr)
        return EXIT_USAGE
    status = EXIT_OK
    for path in files:
        try:
            for guest, target in cache.import_file(path, guests):
                print(f"{guest.name}: ok {target} (imported from {path})")
        except HarnessError as err:
            print(f"refvm: {err}", file=sys.stderr)
            status = EXIT_FAILED
    return status


# clean ---------------------------------------------------------------------------------------
def cmd_clean(args, _extra) -> int:
    """Dead runs' scratch directories and kernel VMs here, and their libvirt domains on
    --libvirt-uri or on every host of --hosts (a host that does not answer is reported)."""
    from .backends import get_backend
    from .reaper import reap

    def say(text: str) -> None:
        print(f"refvm: {text}")

    removed = reap(log=say, dry_run=args.dry_run, kept=True)
    uris = [h.uri for h in load_hosts(args.hosts) if "libvirt" in h.backends] \
        if args.hosts else [args.libvirt_uri]
    status = EXIT_OK
    for uri in uris:
        try:  # libvirt domains of dead runs, where libvirt is installed and reachable
            get_backend("libvirt", uri=uri).reap_dead_runs(log=say, dry_run=args.dry_run)
        except HarnessError as err:
            if args.hosts:  # a host the user named: not reaching it is worth an exit status
                say(f"{uri}: {err}")
                status = EXIT_FAILED
    say(f"{len(removed)} stale run(s) {'would be cleaned (dry run)' if args.dry_run else 'cleaned'}")
    return status


# repro ---------------------------------------------------------------------------------------
def cmd_repro(args, _extra) -> int:
    """Boot exactly one case's VM, run its steps (up to --until), hand the console over."""
    from . import repro
    from .pytest_plugin.state import make_backend
    from .reaper import reap
    from .runner import Run

    guests = load_guests(args.guest)
    cache = ImageCache(cache_dir(), allow_fetch=not args.offline, allow_build=not args.offline,
                       log=lambda text: print(f"refvm: {text}", flush=True))
    backend = make_backend(args.backend, args, cache, guests)
    case, reason = repro.find_case(args.case, load_scenarios(), guests, backend)
    if reason:
        print(f"refvm: {case.id} cannot run here: {reason}", file=sys.stderr)
        return EXIT_FAILED
    count = repro.steps_until(case.scenario, args.until)
    image = cache.prepare(case.guest)
    reap(log=lambda text: print(f"refvm: {text}"))
    run = Run(backend, Path(args.artifacts))
    try:
        vm = run.boot(case, image)
        print(f"refvm: {case.id} booted as {vm.spec.name}; console log {vm.log.path}")
        print("refvm: to start the same VM by hand:\n"
              + "\n".join(repro.by_hand(backend, vm.spec, vm.machine)))
        wanted = repro.truncated(case, count)
        steps = ", ".join(step.kind for step in wanted.scenario.steps) or "none"
        held = repro.held_back(case.scenario.steps, count)
        if held and args.until is None:
            held = (f"; held back, as they stop the VM or need it stopped: {held} "
                    f"(--until STEP runs up to one of them)")
        elif held:
            held = f"; not run: {held}"
        print(f"refvm: running {count} of {len(case.scenario.steps)} step(s): {steps}{held}",
              flush=True)
        try:
            run.run_steps(wanted, vm, lambda name, value: vm.log.note(f"recorded {name} = {value}"))
        except HarnessError as err:
            print(f"refvm: step failed [{err.category}]: {err}", flush=True)
        exited = vm.machine.poll()
        if exited is not None:
            print(f"refvm: the VM has exited ({exited}): no console to hand over")
            return EXIT_OK
        repro.say(f"refvm: the console of {case.id} is yours; press {repro.ESCAPE_NAME} to "
                  f"leave (the VM is destroyed then)")
        why = repro.hand_over(vm.console, vm.machine)
        repro.say(f"\nrefvm: left the console: {why}; destroying {vm.spec.name}")
    finally:
        run.close()
    return EXIT_OK


# report --------------------------------------------------------------------------------------
def cmd_report(args, _extra) -> int:
    """``report compare OLD NEW``: one line per case whose result differs, then the counts."""
    from .errors import escape
    from .report.compare import compare, load

    old, new = load(args.old), load(args.new)  # both checked before anything is printed
    changes = compare(old, new)
    if args.json:
        print(json.dumps({kind: [dict(zip(("id", "old", "new", "reason"), row)) for row in rows]
                          for kind, rows in changes.items()}, indent=1))
    else:
        for kind, rows in changes.items():
            for case_id, before, after, reason in rows:
                why = f": {escape(reason)[:300]}" if reason and after != "pass" else ""
                print(f"{kind:9} {escape(case_id)}: {before or '-'} -> {after or '-'}{why}")
        print("refvm: " + ", ".join(f"{len(rows)} {kind}" for kind, rows in changes.items()))
    return EXIT_FAILED if changes["regressed"] else EXIT_OK


# doctor --------------------------------------------------------------------------------------
def cmd_doctor(_args, _extra) -> int:
    from .doctor import FAIL, checks_for_this_host

    checks = checks_for_this_host(cache_dir())
    for check in checks:
        print(check)
    failed = sum(c.status == FAIL for c in checks)
    print(f"refvm: {failed} problem(s) block runs" if failed else "refvm: this host can run the suite")
    return EXIT_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
