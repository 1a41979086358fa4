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
from .errors import ConfigError, HarnessError, Problem, Unsupported
from .hosts import HostPool, check_uri, load_hosts
from .images.cache import ImageCache, ImageUnavailable
from .matrix import build as build_matrix
from .model import FIRMWARES, load_guest
from .paths import SCENARIOS_DIR, cache_dir
from .yamlfile import load_file

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _selection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS)
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
    run = sub.add_parser("run", help="run the conformance suite (pytest); extra args go to pytest")
    _selection_options(run)
    images = sub.add_parser("images", help="fetch, build, verify, import or repin guest images")
    images.add_argument("action", choices=("fetch", "verify", "import", "repin"))
    images.add_argument("files", nargs="*", type=Path, metavar="FILE",
                        help="import: images downloaded elsewhere, matched to guests by sha256")
    images.add_argument("--guest", action="append", default=[], metavar="NAME|PATH")
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
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "run":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if "--" in extra:  # `refvm run -- -n 2`: the separator is ours, not an argument to pytest
        extra.remove("--")
    try:
        if getattr(args, "libvirt_uri", None) is not None:
            check_uri(args.libvirt_uri)
        return {"validate": cmd_validate, "plan": cmd_plan, "run": cmd_run,
                "images": cmd_images, "clean": cmd_clean,
                "doctor": cmd_doctor}[args.command](args, extra)
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
            spec = run.vm_spec(case, cache.expected_path(case.guest))
            try:
                row["commands"] = case_backend.command_lines(spec)
                row["adds"] = scenario_additions(case_backend, spec)
                row["details"] = case_backend.plan_details(spec)
            except Unsupported as err:  # this one case needs what the host lacks: run skips
                row["skip"] = str(err)
            except HarnessError as err:  # the host is unreachable or broken: run errors
                row["error"] = str(err)
        rows.append(row)
    if args.json:
        print(json.dumps({"backend": backend.describe(), "run_id": run.run_id, "cases": rows},
                         indent=2))
        return EXIT_OK
    print(f"# backend: {backend.describe()}")
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
    load_guests(args.guest)
    select_scenarios(load_scenarios(), args.scenario)
    if args.hosts:
        load_hosts(args.hosts)
    pytest_args = [str(SCENARIOS_DIR), "-p", "harness.pytest_plugin.plugin",
                   "--backend", args.backend, "--artifacts", args.artifacts, "--accel", args.accel,
                   "--qemu-binary", args.qemu_binary]
    if args.csm_firmware:
        pytest_args += ["--csm-firmware", args.csm_firmware]
    if args.backend == "libvirt":
        pytest_args += ["--libvirt-uri", args.libvirt_uri]
    for option in ("guest", "firmware", "scenario"):
        for value in getattr(args, option):
            pytest_args += [f"--{option}", value]
    if args.offline:
        pytest_args.append("--offline")
    if args.hosts:
        pytest_args += ["--hosts", str(args.hosts)] + _parallel_options(args.hosts, extra)
    outcomes = _Outcomes()
    code = int(pytest.main(pytest_args + extra, plugins=[outcomes]))
    if code == pytest.ExitCode.USAGE_ERROR:  # a bad option after `--`: refvm's usage status
        return EXIT_USAGE
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


def _parallel_options(hosts_file: Path, extra: list[str]) -> list[str]:
    """``-n <capacity>`` for a pool run, unless the pytest arguments choose their own."""
    if any(arg == "-n" or arg.startswith(("-n", "--numprocesses")) for arg in extra):
        return []
    capacity = HostPool(load_hosts(hosts_file)).capacity
    return ["-n", str(capacity)] if capacity > 1 else []


def _image_note(row: dict) -> str:
    """What a run will need first when the case's image is not on this host yet."""
    if row["image_ready"]:
        return ""
    return " (image not here yet: refvm images fetch, or import)"


# images --------------------------------------------------------------------------------------
def cmd_images(args, _extra) -> int:
    guests = load_guests(args.guest)
    fetching = args.action == "fetch"
    cache = ImageCache(cache_dir(), allow_fetch=fetching, allow_build=fetching,
                       log=lambda text: print(f"refvm: {text}", flush=True))
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

    removed = reap(log=say, dry_run=args.dry_run)
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
