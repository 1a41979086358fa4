"""What the host's bhyve can do, read from bhyve itself once per run.

bhyve's command line changed between FreeBSD 11.3 and 15: flags came (-D, -o) and went (-A),
emulations were added (nvme), the boot ROM learnt to take a UEFI variable file. Guessing from
the release number alone goes wrong on patched or -STABLE hosts, so the facts come from the
binary where it can tell us, and from the release only where it cannot:

- ``bhyve -s help``  lists the PCI emulations, one per line (pci_emul.c:
  pci_print_supported_devices prints each ``pe_emu``);
- ``bhyve -l help``  lists the LPC devices, one per line (pci_lpc.c:
  lpc_print_supported_devices: ``bootrom``, ``com1``..``com4``, newer ones ``tpm``,
  ``pc-testdev``);
- ``bhyve -h``       prints the usage text, one ``-X: meaning`` line per flag (bhyverun.c /
  bhyverun_machdep.c usage()); it says whether -A, -D and -o exist;
- ``freebsd-version -u`` (else ``uname -r``) gives the release, used only for what the binary
  does not print: whether ``-l bootrom,ROM,VARS`` takes the VARS file.

Facts behind the release rules (checked against the FreeBSD sources):
- VARS file: "bhyve: Support a _VARS.fd file for bootrom" (D19976) is in stable/13 as a
  cherry-pick; we require 13.1 (the first release we could confirm) and fall back to the
  single-image BHYVE_UEFI.fd before it.
- ``-A``: main's bhyverun_machdep.c keeps ``case 'A'`` as a "NOP. For backward compatibility"
  and 15's bhyve(8) synopsis no longer lists it ([-aCDeHhPSuWwxY]); 14's still does. Without
  a usage text we assume it exists before 15.0.
- ``-D`` ("destroy the VM on guest initiated power-off") is in bhyve(8) from mid-2020, not in
  the 2018 getopt string (abehuwxACHIPSWY); without a usage text we assume 13.0+.
- ``-o`` / bhyve_config(5) (config variables, and with them ``ser=`` on virtio-blk, which
  pci_virtio_block.c reads as config node "ser"): 13.1+ without a usage text.
- ``-c cpus=,sockets=,cores=,threads=``: "Add the ability to control the CPU topology of
  created VMs from userland" (D9930), in head from April 2018, so in 12.0-RELEASE (stable/12
  branched from head in October 2018); the pre-13 bhyverun.c already has topology_parse() and
  the usage line ``[-c [[cpus=]numcpus][,sockets=n][,cores=n][,threads=n]]``.
- Snapshots (BHYVE_SNAPSHOT, not in GENERIC builds): bhyverun.c prints ``-r: path to
  checkpoint file`` only ``#ifdef BHYVE_SNAPSHOT``, and bhyvectl.c's usage lists
  ``[--suspend=<filename>]`` only then too; ``bhyvectl --help`` (an unknown option) prints
  that usage. Both must say so: a bhyve that can restore is no use without a bhyvectl that can
  suspend.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Callable

from ...errors import InfraError

VARS_FILE_SINCE = (13, 1)
ACPI_FLAG_UNTIL = (15, 0)  # first release whose bhyve(8) no longer lists -A
DESTROY_FLAG_SINCE = (13, 0)
CONFIG_OPTIONS_SINCE = (13, 1)
# -c [[cpus=]n][,sockets=n][,cores=n][,threads=n]: D9930, first released in 12.0 (see the module
# docstring). bhyve(8) of 13.0 says "The current maximum number of guest virtual CPUs is 16"
# (VM_MAXCPU). From 14.0 (release notes, ee98f99d7a68) the limit is the loader tunable
# hw.vmm.maxcpu, by default the host's CPU count.
TOPOLOGY_SINCE = (12, 0)
MAXCPU_TUNABLE_SINCE = (14, 0)
OLD_VM_MAXCPU = 16

# What every bhyve we support prints for -s help / -l help, for planning on a host without
# bhyve. Only the emulations the command-line builder uses are listed; nvme is in
# usr.sbin/bhyve since 12.0 (pci_nvme.c), unconfirmed for 11.x, so it is left out there.
_BASE_EMULATIONS = frozenset({"hostbridge", "amd_hostbridge", "lpc", "virtio-blk", "virtio-net",
                              "ahci", "ahci-hd", "ahci-cd", "e1000", "uart", "fbuf", "xhci",
                              "passthru", "virtio-rnd"})
_BASE_LPC = frozenset({"bootrom", "com1", "com2", "com3", "com4"})

# A command runner: argv -> (exit status, stdout + stderr). Tests pass canned outputs.
Runner = Callable[[list], "tuple[int, str]"]


def run_quietly(argv: list, timeout: float = 15.0) -> tuple[int, str]:
    """Run a probe command; a missing program is exit status 127, like a shell would say."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return 127, f"{argv[0]}: not found"
    except subprocess.TimeoutExpired:
        return 124, f"{argv[0]}: timed out after {timeout:.0f}s"
    return done.returncode, done.stdout + done.stderr


def parse_release(text: str) -> tuple[int, int]:
    """``14.1-RELEASE-p5`` -> (14, 1); also 15.0-CURRENT, 13.2-STABLE, 11.3-RELEASE-p14."""
    match = re.search(r"\b(\d+)\.(\d+)-[A-Z]", text) or re.search(r"\b(\d+)\.(\d+)\b", text)
    if not match:
        raise InfraError(f"cannot read a FreeBSD release from {text.strip()[:80]!r}")
    return int(match.group(1)), int(match.group(2))


def parse_names(text: str) -> frozenset:
    """One name per line (``-s help``, ``-l help``); blank lines and noise are ignored."""
    return frozenset(line.strip() for line in text.splitlines()
                     if re.fullmatch(r"[a-z][a-z0-9_-]*", line.strip()))


def parse_usage_flags(text: str) -> frozenset:
    """The single-letter flags a usage text explains (lines like ``       -D: destroy ...``)."""
    return frozenset(re.findall(r"^\s*-([A-Za-z]):", text, flags=re.MULTILINE))


@dataclass(frozen=True)
class BhyveCaps:
    release: tuple
    emulations: frozenset
    lpc_devices: frozenset
    flags: frozenset = frozenset()  # from `bhyve -h`; empty when the usage text was unreadable
    release_text: str = ""
    bhyvectl_suspend: bool = False  # `bhyvectl --help` lists --suspend=<filename>
    assumed: bool = False  # True: not read from a host (planning on a machine without bhyve)
    notes: tuple = field(default_factory=tuple)

    # Flags: the usage text decides when we have one, the release otherwise.
    def _flag(self, letter: str, present: bool) -> bool:
        return letter in self.flags if self.flags else present

    @property
    def snapshot(self) -> bool:
        """bhyve and bhyvectl built with BHYVE_SNAPSHOT: bhyve's usage explains ``-r`` (restore
        from a checkpoint file) and bhyvectl's lists ``--suspend``. Not in GENERIC builds:
        absent when either usage text cannot be read."""
        return "r" in self.flags and self.bhyvectl_suspend

    def snapshot_reason(self) -> str:
        missing = [what for what, there in (
            ("bhyve's usage explains no -r", "r" in self.flags),
            ("bhyvectl's usage lists no --suspend", self.bhyvectl_suspend)) if not there]
        return (f"bhyve on FreeBSD {self.release_name} was built without snapshot support "
                f"(BHYVE_SNAPSHOT: {'; '.join(missing)})")

    @property
    def acpi_flag(self) -> bool:
        return self._flag("A", self.release < ACPI_FLAG_UNTIL)

    @property
    def destroy_flag(self) -> bool:
        return self._flag("D", self.release >= DESTROY_FLAG_SINCE)

    @property
    def config_options(self) -> bool:
        """bhyve_config(5) parsing (-o): generic ``key=value`` device options such as
        virtio-blk ``ser=`` and nvme ``ro``."""
        return self._flag("o", self.release >= CONFIG_OPTIONS_SINCE)

    @property
    def bootrom_vars(self) -> bool:
        return self.release >= VARS_FILE_SINCE

    @property
    def release_name(self) -> str:
        return self.release_text or f"{self.release[0]}.{self.release[1]}"

    def lacks_emulation(self, name: str) -> str | None:
        if name in self.emulations:
            return None
        return (f"bhyve on FreeBSD {self.release_name} has no {name} emulation "
                f"(`bhyve -s help` lists: {', '.join(sorted(self.emulations)) or 'nothing'})")

    def lacks_lpc(self, name: str) -> str | None:
        if name in self.lpc_devices:
            return None
        return (f"bhyve on FreeBSD {self.release_name} has no LPC device {name} "
                f"(`bhyve -l help` lists: {', '.join(sorted(self.lpc_devices)) or 'nothing'})")

    def vars_reason(self) -> str:
        return (f"bhyve on FreeBSD {self.release_name} cannot keep UEFI variables: "
                f"`-l bootrom,ROM,VARS` needs FreeBSD {VARS_FILE_SINCE[0]}.{VARS_FILE_SINCE[1]}"
                f" or later")

    # Construction -------------------------------------------------------------------------
    @classmethod
    def for_release(cls, release: tuple, note: str = "") -> "BhyveCaps":
        """Caps assumed from the release alone: for ``refvm plan`` on a host without bhyve."""
        emulations = set(_BASE_EMULATIONS)
        if release >= (12, 0):
            emulations.add("nvme")
        return cls(release=tuple(release), emulations=frozenset(emulations),
                   lpc_devices=_BASE_LPC, assumed=True,
                   notes=(note,) if note else ())

    @classmethod
    def probe(cls, runner: Runner = run_quietly, bhyve: str = "bhyve",
              freebsd_version: str = "freebsd-version", uname: str = "uname",
              bhyvectl: str = "bhyvectl") -> "BhyveCaps":
        """Ask the host. Raises InfraError naming the command that failed."""
        status, release_text = runner([freebsd_version, "-u"])
        if status != 0 or not release_text.strip():
            status, release_text = runner([uname, "-r"])
        if status != 0:
            raise InfraError(f"cannot tell the FreeBSD release: `{uname} -r` said "
                             f"{release_text.strip()[:200]!r}")
        release_text = release_text.strip().splitlines()[0]
        emulations = cls._names(runner, [bhyve, "-s", "help"], "PCI emulations")
        lpc = cls._names(runner, [bhyve, "-l", "help"], "LPC devices")
        _, usage = runner([bhyve, "-h"])  # usage(0): exit 0, text on stderr
        flags = parse_usage_flags(usage)
        notes = () if flags else ("`bhyve -h` printed no usage text; flags assumed from the "
                                  "release",)
        _, ctl_usage = runner([bhyvectl, "--help"])  # usage(): exit 1, text on stderr
        return cls(release=parse_release(release_text), emulations=emulations, lpc_devices=lpc,
                   flags=flags, release_text=release_text, notes=notes,
                   bhyvectl_suspend="--suspend=" in ctl_usage)

    @staticmethod
    def _names(runner: Runner, argv: list, what: str) -> frozenset:
        status, text = runner(argv)
        names = parse_names(text)
        if status != 0 or not names:
            raise InfraError(f"cannot list bhyve's {what}: `{' '.join(argv)}` exited {status}: "
                             f"{text.strip()[:200]!r}")
        return names


def bhyve_present(bhyve: str) -> bool:
    return shutil.which(bhyve) is not None
