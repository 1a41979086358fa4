"""Test doubles for the bhyve backend. Nothing here is used by the harness itself.

bhyve cannot run on Linux, so the backend is tested two ways:
- SAMPLES: what `bhyve -s help`, `bhyve -l help`, `bhyve -h` and `freebsd-version -u` print on
  each release, fed to BhyveCaps.probe through a canned runner (no process is started);
- install_fake_programs(): tests/fake_bhyve.py installed under the names bhyve, bhyvectl,
  bhyveload and ifconfig, so the lifecycle code runs real child processes.

Where each sample comes from (FreeBSD sources; see also the backend's module docstrings):
- `-s help`: pci_emul.c pci_print_supported_devices() prints each emulation's pe_emu on its own
  line. The names are bhyve(8)'s PCI EMULATION list (main, October 2025). We did not check
  release by release which of the minor emulations (virtio-input, hda, ...) each of 13.2 and
  14.1 has; the ones the builder uses (hostbridge, lpc, virtio-blk, ahci-hd, nvme, virtio-net)
  are in all three. NO_NVME is the same list without nvme: what a bhyve built without
  pci_nvme.c (nvme came with 12.0) prints; 11.3's exact list was not confirmed.
- `-l help`: pci_lpc.c lpc_print_supported_devices(): "bootrom", then com1..com4; main's
  amd64/pci_lpc.c adds "tpm" and the pc-testdev name. 13.2 is given the older list.
- `-h`: usage() text. 13.2 and 14.1: bhyverun.c's usage with "-A: create ACPI tables" (the
  stable/14-era text, which also has -D, -k, -K, -o). 15.0: amd64/bhyverun_machdep.c
  bhyve_usage(), whose synopsis is [-aCDeHhPSuWwxY] and which has no -A line.
- `freebsd-version -u`: freebsd-version(1) prints e.g. 14.1-RELEASE-p6.
- `bhyvectl --help`: bhyvectl.c usage() (exit 1); SNAPSHOT_BUILD is the pair of usage texts
  of a BHYVE_SNAPSHOT build (both print their snapshot options only #ifdef BHYVE_SNAPSHOT).
"""
from __future__ import annotations

import json
from pathlib import Path

from harness.backends.bhyve.backend import Programs

FAKE = Path(__file__).with_name("fake_bhyve.py")

PCI_HELP = "\n".join([
    "hostbridge", "amd_hostbridge", "passthru", "virtio-net", "virtio-blk", "virtio-scsi",
    "virtio-9p", "virtio-rnd", "virtio-console", "virtio-input", "ahci", "ahci-cd", "ahci-hd",
    "e1000", "uart", "lpc", "fbuf", "xhci", "nvme", "hda"]) + "\n"
PCI_HELP_NO_NVME = PCI_HELP.replace("nvme\n", "")

LPC_HELP_OLD = "bootrom\ncom1\ncom2\ncom3\ncom4\n"
LPC_HELP_NEW = LPC_HELP_OLD + "tpm\npc-testdev\n"

_USAGE_COMMON = (
    "       -C: include guest memory in core file\n"
    "       -c: number of CPUs and/or topology specification\n"
    "       -D: destroy on power-off\n"
    "       -e: exit on unhandled I/O access\n"
    "       -G: start a debug server\n"
    "       -H: vmexit from the guest on HLT\n"
    "       -h: help\n"
    "       -k: key=value flat config file\n"
    "       -K: PS2 keyboard layout\n"
    "       -l: LPC device configuration\n"
    "       -m: memory size\n"
    "       -o: set config 'var' to 'value'\n"
    "       -P: vmexit from the guest on pause\n"
    "       -p: pin 'vcpu' to 'hostcpu'\n"
    "       -S: guest memory cannot be swapped\n"
    "       -s: <slot,driver,configinfo> PCI slot config\n"
    "       -U: UUID\n"
    "       -u: RTC keeps UTC time\n"
    "       -W: force virtio to use single-vector MSI\n"
    "       -w: ignore unimplemented MSRs\n"
    "       -x: local APIC is in x2APIC mode\n"
    "       -Y: disable MPtable generation\n")
USAGE_WITH_A = (
    "Usage: bhyve [-AaCDeHhPSuWwxY]\n"
    "             [-c [[cpus=]numcpus][,sockets=n][,cores=n][,threads=n]]\n"
    "             [-G port] [-k config_file] [-l lpc] [-m mem] [-o var=value]\n"
    "             [-p vcpu:hostcpu] [-r file] [-s pci] [-U uuid] vmname\n"
    "       -A: create ACPI tables\n"
    "       -a: local apic is in xAPIC mode (deprecated)\n" + _USAGE_COMMON)
USAGE_15 = (
    "Usage: bhyve [-aCDeHhPSuWwxY]\n"
    "             [-c [[cpus=]numcpus][,sockets=n][,cores=n][,threads=n]]\n"
    "             [-G port] [-k config_file] [-l lpc] [-m mem] [-o var=value]\n"
    "             [-p vcpu:hostcpu] [-r file] [-s pci] [-U uuid] vmname\n"
    "       -a: local apic is in xAPIC mode (deprecated)\n" + _USAGE_COMMON)

# bhyvectl.c usage(), its first lines (the rest is register get/set options): a GENERIC build,
# and one with BHYVE_SNAPSHOT, whose usage adds --checkpoint and --suspend after --destroy. The
# snapshot bhyve's usage (bhyverun.c) adds "-r: path to checkpoint file" after -p.
BHYVECTL_USAGE = ("Usage: bhyvectl --vm=<vmname>\n"
                  "       [--cpu=<vcpu_number>]\n"
                  "       [--create]\n"
                  "       [--destroy]\n"
                  "       [--get-all]\n"
                  "       [--get-stats]\n")
BHYVECTL_USAGE_SNAPSHOT = BHYVECTL_USAGE.replace(
    "       [--destroy]\n",
    "       [--destroy]\n       [--checkpoint=<filename>]\n       [--suspend=<filename>]\n")
USAGE_SNAPSHOT = USAGE_WITH_A.replace(
    "       -p: pin 'vcpu' to 'hostcpu'\n",
    "       -p: pin 'vcpu' to 'hostcpu'\n       -r: path to checkpoint file\n")
SNAPSHOT_BUILD = {"usage": USAGE_SNAPSHOT, "bhyvectl": BHYVECTL_USAGE_SNAPSHOT}

SAMPLES = {
    "13.2": {"version": "13.2-RELEASE-p11\n", "pci": PCI_HELP, "lpc": LPC_HELP_OLD,
             "usage": USAGE_WITH_A},
    "14.1": {"version": "14.1-RELEASE-p6\n", "pci": PCI_HELP, "lpc": LPC_HELP_NEW,
             "usage": USAGE_WITH_A},
    "15.0": {"version": "15.0-RELEASE\n", "pci": PCI_HELP, "lpc": LPC_HELP_NEW,
             "usage": USAGE_15},
}


def canned_runner(sample: dict, calls: list | None = None, freebsd_version_fails=False):
    """A BhyveCaps runner answering from a sample; records the argv it was asked for."""
    def run(argv):
        if calls is not None:
            calls.append(list(argv))
        tool, args = Path(argv[0]).name, argv[1:]
        if tool == "freebsd-version":
            return (127, "freebsd-version: not found") if freebsd_version_fails \
                else (0, sample["version"])
        if tool == "uname":
            return 0, sample["version"]
        if tool == "bhyvectl" and args == ["--help"]:  # usage(): exit 1
            return 1, sample.get("bhyvectl", BHYVECTL_USAGE)
        if args == ["-s", "help"]:
            return 0, sample["pci"]
        if args == ["-l", "help"]:
            return 0, sample["lpc"]
        if args == ["-h"]:
            return 0, sample["usage"]
        return 1, f"unexpected {argv}"
    return run


# The fake programs --------------------------------------------------------------------------
class FakeHost:
    """tests/fake_bhyve.py under each program name, with its control file and call log.

    The fake finds the control file through the environment variable FAKE_BHYVE_CONTROL
    (= ``self.control``), which the test sets with monkeypatch."""

    def __init__(self, root: Path):
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        for name in ("bhyve", "bhyvectl", "bhyveload", "ifconfig"):
            (self.bin / name).symlink_to(FAKE)
        self.control = root / "control.json"
        self.log = root / "calls.jsonl"
        self.run_dir = root / "run"  # the running fake bhyve's snapshot sockets
        self.run_dir.mkdir()
        self.set(exits={}, console="fake guest console")

    @property
    def programs(self) -> Programs:
        return Programs(bhyve=str(self.bin / "bhyve"), bhyvectl=str(self.bin / "bhyvectl"),
                        bhyveload=str(self.bin / "bhyveload"), ifconfig=str(self.bin / "ifconfig"))

    def set(self, **control) -> None:
        """exits: {"bhyve": [0, 1], "ifconfig:create": [1], ...}; console: text bhyve prints;
        hang: bhyve waits for SIGTERM (then exits 1, an ACPI power-off) instead of exiting;
        bridge: the name `ifconfig bridge create` prints (default bridge7); snapshot: False
        for a bhyve built without BHYVE_SNAPSHOT; checkpoint_fails: the checkpoint fails."""
        data = {"log": str(self.log), "exits": {}, "console": "", "hang": False,
                "bridge": "bridge7", "run_dir": str(self.run_dir)}
        data.update(control)
        self.control.write_text(json.dumps(data))

    def calls(self) -> list[list[str]]:
        """Every program run so far, as [program name, args...]."""
        if not self.log.exists():
            return []
        return [[c["prog"]] + c["argv"] for c in map(json.loads, self.log.read_text().splitlines())]
