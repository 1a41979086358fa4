"""The refvm pytest plugin: scenario YAML files are collected directly as test items.

One item per guest x firmware x scenario, named like ``boot[refguest-uefi-qemu]``. Infrastructure
problems happen in the item's setup (image, hypervisor start) and so show as pytest *errors*;
guest problems happen in its call and show as *failures*. Every result carries the properties
``category`` (infra | guest) and ``reason`` (one line), and failures quote the console log.

With ``--hosts FILE`` the matrix is spread over a pool of hosts (harness/hosts.py): each case is
pinned to one host slot at collection, marked ``xdist_group(<host>#<slot>)``, and ``-n N``
runs with ``--dist loadgroup`` so that pytest-xdist gives each slot's cases to one worker, in
turn. Every result then carries ``host`` (and ``worker``) properties.
"""
from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

import pytest

from ..backends import BACKENDS, DEFAULT_BACKEND
from ..catalog import load_scenarios, select_scenarios
from ..errors import ConfigError, HarnessError, Unsupported
from ..hosts import check_uri
from ..images.cache import ImageUnavailable
from ..keep import KEEPER_KEY
from ..matrix import build as build_matrix
from ..model import FAMILIES, FIRMWARES
from ..release import load_release, parse_freebsd_release
from . import pool, workers
from .state import RefvmState

STATE_KEY = pytest.StashKey[RefvmState]()
CONTROLLER_KEY = pytest.StashKey[workers.Controller]()
CONSOLE_LINES_IN_REPORT = 200  # the full log stays in the artifacts directory


def pytest_addoption(parser):
    parser.addini("refvm_scenario_dirs", "directories (relative to rootdir) whose YAML files "
                  "are scenarios", type="linelist", default=["scenarios"])
    group = parser.getgroup("refvm", "refvm reference-VM conformance")
    group.addoption("--backend", default=DEFAULT_BACKEND, choices=BACKENDS,
                    help=f"hypervisor backend (default here: {DEFAULT_BACKEND})")
    group.addoption("--guest", action="append", default=[], metavar="NAME|PATH",
                    help="guest name or guest file (repeatable; default: the repository's guests)")
    group.addoption("--firmware", action="append", default=[], choices=FIRMWARES,
                    help="only these firmware profiles (repeatable)")
    group.addoption("--scenario", action="append", default=[], metavar="NAME",
                    help="only these scenarios (repeatable)")
    group.addoption("--artifacts", default="artifacts", metavar="DIR",
                    help="where console and hypervisor logs are kept (default: ./artifacts)")
    group.addoption("--accel", default="auto", choices=("auto", "kvm", "tcg"),
                    help="QEMU accelerator; auto probes KVM with a real boot, else TCG")
    group.addoption("--qemu-binary", default="qemu-system-x86_64", metavar="PATH",
                    help="QEMU to run (default: qemu-system-x86_64 from PATH)")
    group.addoption("--libvirt-uri", default="qemu:///system", metavar="URI",
                    help="libvirt connection for --backend libvirt (e.g. qemu+tcp://host/system)")
    group.addoption("--csm-firmware", default=None, metavar="PATH",
                    help="bhyve: a pinned BHYVE_UEFI_CSM.fd (no longer packaged since 2024)")
    group.addoption("--hosts", default=None, metavar="FILE",
                    help="a hosts file (YAML): spread the matrix over these libvirt hosts; "
                         "with -n N (pytest-xdist) N cases run at once, max_vms per host")
    group.addoption("--offline", action="store_true",
                    help="never fetch or build images; cases whose image is missing are skipped")
    group.addoption("--progress", action="store_true",
                    help="a line per case as it starts and ends, and an estimate of the whole "
                         "run from earlier runs, instead of pytest's dots (refvm run's default)")
    group.addoption("--release", default=None, metavar="FILE",
                    help="a release validation file (releases/14.3.yaml): the report says "
                         "which of its expected skips held, and its verdict")
    group.addoption("--bhyve-release", default=None, metavar="X.Y", type=_bhyve_release,
                    help="bhyve: the FreeBSD release expected (a host's own bhyve wins)")
    group.addoption("--report", action="store_true",
                    help="write report.json, report.md and report.html into --artifacts "
                         "(refvm run always does)")


def pytest_configure(config):
    try:
        config.stash[STATE_KEY] = state = RefvmState(config.option)
        _check_selection(config, state)
        release = load_release(config.option.release) if config.option.release else None
    except ConfigError as err:  # a bad hosts file or selection: one line each, no traceback
        raise pytest.UsageError(str(err)) from None
    if state.pool is not None:
        pool.distribute_by_host(config)
    for name in FIRMWARES + FAMILIES + BACKENDS:
        config.addinivalue_line("markers", f"{name}: refvm cases using {name}")
    config.addinivalue_line("markers", "vm: the test boots a virtual machine")
    if config.option.report and not workers.is_worker(config):
        from ..report.collect import ReportCollector
        config.pluginmanager.register(ReportCollector(Path(config.option.artifacts), state,
                                                      config.option, release), "refvm-report")
    if config.option.progress and not workers.is_worker(config):
        _register_progress(config)
    if workers.is_worker(config):
        workers.register_worker()
    elif workers.uses_workers(config):
        controller = config.stash[CONTROLLER_KEY] = workers.Controller()

        def forward_and_stop(signum, _frame):
            controller.forward()
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, forward_and_stop)
        signal.signal(signal.SIGINT, forward_and_stop)
    elif signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        # SIGTERM (a CI job cancelled) unwinds like Ctrl-C, so every VM is torn down; a
        # second SIGTERM (runners often send more than one) does not cut that short.
        workers.stop_once_on(signal.SIGTERM)


def _bhyve_release(text: str) -> tuple:
    try:
        return parse_freebsd_release(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _register_progress(config) -> None:
    from ..paths import cache_dir
    from .progress import Progress

    def write(line: str) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            print(line, flush=True)
        else:
            reporter.write_line(line)

    try:
        count = int(getattr(config.option, "numprocesses", 0) or 0) or 1
    except ValueError:  # "auto" before pytest-xdist resolves it
        count = os.cpu_count() or 1
    config.pluginmanager.register(Progress(cache_dir(), count, write), "refvm-progress")


def _check_selection(config, state) -> None:
    """``--libvirt-uri`` is a URI a hosts file could hold, and ``--guest`` and ``--scenario``
    name things that exist, checked once here: left to collection, a bad guest file is an
    error per scenario file and an unknown name selects nothing, which passes. Scenario names
    are those of the files in the scenario directories or named on the command line that load
    (a broken one is reported when it is collected)."""
    check_uri(config.option.libvirt_uri)
    if config.option.guest:
        state.guests  # noqa: B018 - loads and checks them, raising ConfigError
    if config.option.scenario:
        paths = [p for d in config.getini("refvm_scenario_dirs")
                 for p in sorted((config.rootpath / d).glob("*.yaml"))]
        paths += [Path(a.split("::")[0]) for a in config.args
                  if a.split("::")[0].endswith((".yaml", ".yml"))]
        scenarios = []
        for path in paths:
            try:
                scenarios += load_scenarios([path])
            except ConfigError:
                continue
        select_scenarios(scenarios, config.option.scenario)


def pytest_unconfigure(config):
    state = config.stash.get(STATE_KEY, None)
    if state is not None:
        state.close()
    controller = config.stash.get(CONTROLLER_KEY, None)
    if controller is not None:
        controller.close()
    if workers.is_worker(config):
        workers.unregister_worker()


def pytest_report_header(config):
    opts = config.option
    lines = [f"refvm: backend {opts.backend}, accel {opts.accel}, artifacts {opts.artifacts}"]
    state = config.stash.get(STATE_KEY, None)
    if state is not None and state.pool is not None:
        lines.append(f"refvm: hosts {opts.hosts}: {state.backend.describe()}; "
                     f"{state.pool.capacity} VM(s) at once at most")
    return lines


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Pin every runnable case to a host slot of the pool (the same on every xdist worker,
    which collect the same items in the same order). First, so that pytest-xdist reads the
    groups; so -k/-m deselection comes after it: select with --scenario, --firmware and
    --guest to keep the spread even."""
    state = config.stash[STATE_KEY]
    if state.pool is not None:
        pool.pin_to_hosts(state.pool, items)


def pytest_collect_file(file_path: Path, parent):
    """Scenario files are YAML files in the configured scenario directories, or named on the
    command line. (Other YAML, such as tests' malformed-input corpus, is not collected.)"""
    if file_path.suffix not in (".yaml", ".yml"):
        return None
    config = parent.config
    dirs = [config.rootpath / d for d in config.getini("refvm_scenario_dirs")]
    named = any(Path(arg.split("::")[0]).resolve() == file_path.resolve()
                for arg in config.args)
    if named or any(file_path.parent.resolve() == d.resolve() for d in dirs):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFile(pytest.File):
    def collect(self):
        state = self.config.stash[STATE_KEY]
        try:
            scenarios = load_scenarios([self.path])  # one, or one per variant
            guests = state.guests
        except ConfigError as err:
            raise self.CollectError(str(err)) from None
        wanted = self.config.option.scenario
        if wanted:
            scenarios = [s for s in scenarios if s.name in wanted or s.base in wanted]
        for case, reason in build_matrix(scenarios, guests, state.backend,
                                         self.config.option.firmware):
            item = ScenarioItem.from_parent(self, name=case.id, case=case, skip_reason=reason)
            for marker in (case.firmware, case.guest.family, case.backend, "vm"):
                item.add_marker(marker)
            yield item


class ScenarioItem(pytest.Item):
    def __init__(self, *, case, skip_reason, **kwargs):
        super().__init__(**kwargs)
        self.case = case
        self.skip_reason = skip_reason
        self.host = None  # the pool's host that runs this case (with --hosts)
        self.vm = None

    @property
    def state(self) -> RefvmState:
        return self.config.stash[STATE_KEY]

    def record(self, name: str, value) -> None:
        self.user_properties.append((name, value))
        if self.vm is not None:
            self.vm.log.note(f"recorded {name} = {value}")

    def setup(self):
        """Everything before the guest runs: image, hypervisor. Problems here are infra."""
        if self.skip_reason:  # ruled out by the matrix (or no host offers it): not a fault
            self.user_properties.append(("skip", "matrix"))
            pytest.skip(self.skip_reason)
        try:
            image = self.state.image_for(self.case.guest)
        except ImageUnavailable as err:  # cannot be had on this host (offline, no route)
            self.user_properties.append(("skip", "image"))
            pytest.skip(str(err))
        if self.host is not None:  # before the host is reached: its summary counts failures
            self.record("host", pool.host_label(self.host))
            self.record("worker", os.environ.get("PYTEST_XDIST_WORKER", "main"))
        backend = self.state.backend_for(self.host)
        if self.host is not None:
            why = backend.unsupported(self.case.firmware)
            if why:
                pytest.skip(f"host {self.host.name}: {why}")
        self.record("backend", backend.describe())
        try:
            self.vm = self.state.run.boot(self.case, image, backend)
        except Unsupported as err:  # the host cannot express this VM: a reason, not a fault
            pytest.skip(str(err))
        self.record("console_log", str(self.vm.log.path))

    def runtest(self):
        self.state.run.run_steps(self.case, self.vm, self.record)

    def teardown(self):
        keeper = self.config.stash.get(KEEPER_KEY, None)  # refvm run --keep-failed
        if keeper is not None and keeper.keep(self):
            self.vm = None
        if self.vm is not None:
            self.state.run.release(self.vm)
            self.vm = None

    def reportinfo(self):
        return self.path, None, self.case.id

    def repr_failure(self, excinfo, style=None):
        if _explained(excinfo.value):
            return f"[{_category(excinfo.value)}] {excinfo.value}"
        return super().repr_failure(excinfo, style)


def _explained(exc) -> bool:
    """An error the harness raised on purpose, whose message says it all: shown as that one
    message, not a traceback into the harness (a harness bug still gets its traceback)."""
    return isinstance(exc, (HarnessError, ConfigError))


def _category(exc) -> str:
    return getattr(exc, "category", "infra")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not isinstance(item, ScenarioItem) or not report.failed:
        return
    exc = call.excinfo.value if call.excinfo else None
    category = "guest" if call.when == "call" and _category(exc) == "guest" else "infra"
    first_line = str(exc).strip().splitlines()[0] if exc is not None and str(exc).strip() \
        else type(exc).__name__
    item.user_properties.append(("category", category))
    item.user_properties.append(("reason", first_line))
    if call.when == "call":
        item.failed_because = first_line  # refvm run --keep-failed keeps its VM
    report.user_properties = list(item.user_properties)
    if call.when != "call" and _explained(exc):
        # pytest shows setup and teardown errors as tracebacks, never through repr_failure
        report.longrepr = f"[{category}] {exc}"
    if item.vm is not None:
        # Report sections reach junitxml's <system-out> (written from the teardown report).
        item.add_report_section(call.when, "stdout",
                                f"console log {item.vm.log.path} (last "
                                f"{CONSOLE_LINES_IN_REPORT} lines):\n"
                                + item.vm.log.tail(CONSOLE_LINES_IN_REPORT) + "\n")


def pytest_terminal_summary(terminalreporter, config):
    state = config.stash.get(STATE_KEY, None)
    if state is not None and state.pool is not None:
        pool.write_host_summary(terminalreporter, state.pool)
