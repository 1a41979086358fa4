"""TEST DOUBLE: stand-ins for the PowerShell scripts of harness/families/windows.yaml, run by
the cmd.exe that tests/fake_qemu_windows.py plays after the SAC login (never for real use).

No PowerShell runs on this machine (none is packaged for Debian, PyPI or npm), so what a script
*does* is played here in Python, one function per script, on real data: the scratch disk
images QEMU was given (``\\\\.\\PhysicalDriveN`` is the Nth disk device of the QEMU argv, boot
disk first, serials and sector sizes from the argv, ``readonly=on`` refusing writes), real TCP
to the host (QEMU's user network carries the gateway 10.0.2.2 to the host's loopback: so does
this), COM2 (the ``-chardev socket`` QEMU listens on), and the VM's UEFI vars file (read
and written with virt-firmware, as OVMF keeps it; at each boot a BootNext is consumed). Only
the *syntax* of the scripts is proven, by the tree-sitter PowerShell grammar
(tests/test_windows_family.py); their semantics here are as read from the cmdlets' and .NET's
documentation, not seen on Windows.

A script is recognised by matching it whole against the script this double was written for
(whitespace runs count as one space); the values the harness put in are taken from it. Anything
else fails loudly: a PowerShell-like error and exit status 1, never a silent success. Errors
follow powershell -Command's rule: an exception in a .NET method ends the script with status 1
only under ``$ErrorActionPreference='Stop'``; without it the script goes on and (its last
statement succeeding) exits 0.

``FAKE_WINDOWS_CORRUPT`` (comma-separated): ``disk-write`` flips one byte of what
disk_write_random puts on the disk (it still reports the hash of what it meant to write);
``tcp-send`` flips one byte of what tcp_send sends. The harness must notice both.
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field

from virt.firmware.efi import ucs16  # the harness's own dependency (virt-firmware)
from virt.firmware.efi.efivar import EfiVar
from virt.firmware.varstore.edk2 import Edk2VarStore

STOP = "$ErrorActionPreference='Stop'; "
VALUE = r"[A-Za-z0-9_./:\\-]+"  # what the harness may put into a command (families.SAFE_VALUE)
SHA = ("[BitConverter]::ToString([Security.Cryptography.SHA256]::Create().ComputeHash($b))"
       ".Replace('-','').ToLower()")
RANDOM = ("$b=New-Object byte[] {length}; "
          "[Security.Cryptography.RandomNumberGenerator]::Create().GetBytes($b); ")
RECEIVED = "C:\\rv.urx"
QEMU_GATEWAY = "10.0.2.2"  # slirp: the host, reached at its loopback
DHCP_ADDRESS = "10.0.2.15"  # slirp's first lease, which Windows asks for at boot
GLOBAL_GUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"  # EFI_GLOBAL_VARIABLE


class PsError(Exception):
    """An exception a cmdlet or .NET method would raise: (message, error id)."""


@dataclass
class Machine:
    """The guest's devices as Windows would number them, from the QEMU argv."""
    disks: list = field(default_factory=list)
    nics: list = field(default_factory=list)
    com2: "Com2 | None" = None
    files: dict = field(default_factory=dict)
    readers: dict = field(default_factory=dict)
    corrupt: tuple = ()
    cpus: int = 1
    topology: tuple = (1, 1, 1)  # sockets, cores per socket, threads per core
    rtc_utc: bool = True
    busy: dict = field(default_factory=dict)  # CPU number -> busy time, 100 ns units
    booted: float = 0.0  # the time of this boot (each reboot sets it again)
    uefi: bool = False
    vars_path: str | None = None  # the VM's own UEFI vars file (pflash unit 1)
    efivars: dict = field(default_factory=dict)  # volatile: (name, GUID) -> (attributes, data)

    @classmethod
    def from_argv(cls, argv: list[str], options, listen_unix) -> "Machine":
        drives = {d["id"]: d for d in options(argv, "-drive") if d.get("if") == "none"}
        machine = cls(corrupt=tuple(os.environ.get("FAKE_WINDOWS_CORRUPT", "").split(",")),
                      booted=time.time())
        smp = argv[argv.index("-smp") + 1] if "-smp" in argv else "1"
        shape = dict(p.split("=", 1) for p in smp.split(",") if "=" in p)
        machine.cpus = int(shape.get("cpus", smp.split(",")[0]))
        if "sockets" in shape:
            machine.topology = (int(shape["sockets"]), int(shape["cores"]),
                                int(shape["threads"]))
        else:  # QEMU 7.2's q35 without a topology: one socket, one core per vCPU
            machine.topology = (1, machine.cpus, 1)
        machine.busy = {cpu: 0 for cpu in range(machine.cpus)}
        machine.rtc_utc = "base=utc" in argv
        machine.uefi = any(d.get("if") == "pflash" for d in options(argv, "-drive"))
        machine.vars_path = vars_file(argv, options)
        machine.firmware_boot()
        for dev in options(argv, "-device"):
            if "drive" in dev and dev["drive"] in drives and not dev[""].startswith("ide-cd"):
                drive = drives[dev["drive"]]
                nvme = dev[""] == "nvme"
                machine.disks.append({
                    "file": drive["file"], "serial": dev.get("serial", ""),
                    "readonly": drive.get("readonly") == "on",
                    "sector": int(dev.get("logical_block_size", 512)),
                    "model": "QEMU NVMe Ctrl" if nvme else "Red Hat VirtIO SCSI Disk Device"})
            elif dev[""] in ("virtio-net-pci", "e1000", "e1000e"):
                number = len(machine.nics) + 1  # Windows: Ethernet, Ethernet 2, ...
                machine.nics.append({"name": "Ethernet" if number == 1 else f"Ethernet {number}",
                                     "mac": dev["mac"].upper().replace(":", "-")})
        for chardev in options(argv, "-chardev"):
            if chardev.get("id") == "com2" and chardev[""] == "socket":
                machine.com2 = Com2(chardev["path"], listen_unix)
        return machine

    def firmware_boot(self) -> None:
        """What OVMF does with the vars file at each boot: a BootNext is consumed (deleted)
        and names the entry booted; else Boot0004 "Windows Boot Manager" (the console says
        so). BootCurrent is volatile: kept here, not in the file."""
        self.efivars = {}
        if not self.uefi:
            return
        current = 4
        if self.vars_path:
            store = Edk2VarStore(self.vars_path)
            found = store.get_varlist()
            boot_next = found.get("BootNext")
            if boot_next is not None:
                current = int.from_bytes(bytes(boot_next.data), "little")
                del found["BootNext"]
                store.write_varstore(self.vars_path, found)
        self.efivars[("BootCurrent", GLOBAL_GUID)] = (6, current.to_bytes(2, "little"))

    def efivar(self, name: str, guid: str):
        """(attributes, data) of a variable, volatile or in the vars file; None if absent."""
        if (name, guid) in self.efivars:
            return self.efivars[(name, guid)]
        var = Edk2VarStore(self.vars_path).get_varlist().get(name) if self.vars_path else None
        if var is None or str(var.guid).lower() != guid:
            return None
        return var.attr, bytes(var.data)

    def set_efivar(self, name: str, guid: str, attributes: int, data: bytes) -> None:
        if not attributes & 1 or not self.vars_path:  # not EFI_VARIABLE_NON_VOLATILE
            self.efivars[(name, guid)] = (attributes, data)
            return
        store = Edk2VarStore(self.vars_path)
        found = store.get_varlist()
        found[name] = EfiVar(ucs16.from_string(name), guid=guid, attr=attributes, data=data)
        store.write_varstore(self.vars_path, found)

    def disk(self, path: str) -> dict:
        match = re.fullmatch(r"\\\\\.\\PhysicalDrive(\d+)", path)
        if not match or int(match.group(1)) >= len(self.disks):
            raise PsError(f'Exception calling "Open" with "4" argument(s): "The system cannot '
                          f'find the file specified."', "FileNotFoundException")
        return self.disks[int(match.group(1))]

    def disk_number(self, name: str) -> dict:
        digits = re.sub(r"\D", "", name)  # ('@name@' -replace '\D','')
        if not digits or int(digits) >= len(self.disks):
            raise PsError(f"No MSFT_Disk objects found with property 'Number' equal to "
                          f"'{digits}'.", "CmdletizationQuery_NotFound_Number,Get-Disk")
        return self.disks[int(digits)]


def vars_file(argv: list[str], options) -> str | None:
    return next((d["file"] for d in options(argv, "-drive")
                 if d.get("if") == "pflash" and d.get("unit") == "1"), None)


class Com2:
    """COM2: QEMU's ``-chardev socket,server=on`` that the harness connects to; the guest's
    SerialPort reads and writes that connection."""

    def __init__(self, path: str, listen_unix):
        self.server = listen_unix(path)
        self.conn = None
        self.connected = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.conn, _ = self.server.accept()
        self.connected.set()

    def port(self, timeout: float = 30.0) -> socket.socket:
        if not self.connected.wait(timeout):
            raise PsError("Exception calling \"Open\" with \"0\" argument(s): \"The port "
                          "'COM2' does not exist.\"", "IOException")
        return self.conn


# The scripts ------------------------------------------------------------------------------------
def pattern(text: str) -> re.Pattern:
    """The script ``text`` as a regex: literal, with ``{name}`` for a value the harness fills."""
    parts = re.split(r"\{([a-z_]+[0-9]?)\}", text)
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>{VALUE})"
                    for i, p in enumerate(parts))
    return re.compile(regex)


SCRIPTS: dict = {}


def script(text: str):
    def register(function):
        SCRIPTS[function.__name__] = (pattern(text), function)
        return function
    return register


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@script("Get-PhysicalDisk | Where-Object SerialNumber -eq '{serial}' | "
        "ForEach-Object { '\\\\.\\PhysicalDrive' + $_.DeviceId }")
def disk_by_serial(m: Machine, serial):
    return [f"\\\\.\\PhysicalDrive{i}" for i, d in enumerate(m.disks) if d["serial"] == serial]


@script("(Get-Disk -Number ('{name}' -replace '\\D','')).Size")
def disk_size(m: Machine, name):
    return [str(os.path.getsize(m.disk_number(name)["file"]))]


@script("(Get-Disk -Number ('{name}' -replace '\\D','')).LogicalSectorSize")
def disk_sector_size(m: Machine, name):
    return [str(m.disk_number(name)["sector"])]


@script("$f=[IO.File]::Open('{dev}','Open','Read','ReadWrite'); $f.Position={skip}*{block}; "
        "$b=New-Object byte[] ({count}*{block2}); $n=0; "
        "while($n -lt $b.Length){$n+=$f.Read($b,$n,$b.Length-$n)}; $f.Close(); " + SHA)
def disk_read_sha256(m: Machine, dev, skip, block, count, block2):
    disk = m.disk(dev)
    with open(disk["file"], "rb") as f:
        f.seek(int(skip) * int(block))
        data = f.read(int(count) * int(block2))
    if len(data) < int(count) * int(block2):  # FileStream.Read returns 0 at the end: no progress
        raise PsError("the read loop never ends at the end of the disk", "Hang")
    return [sha(data)]


@script(RANDOM + "$f=[IO.File]::Open('{dev}','Open','ReadWrite','ReadWrite'); "
        "$f.Position={skip}*{block}; $f.Write($b,0,$b.Length); $f.Flush($true); $f.Close(); "
        + SHA)
def disk_write_random(m: Machine, length, dev, skip, block):
    data = os.urandom(int(length))
    write(m.disk(dev), int(skip) * int(block),
          flip(data) if "disk-write" in m.corrupt else data)
    return [sha(data)]


@script("$f=[IO.File]::Open('{dev}','Open','ReadWrite','ReadWrite'); "
        "$f.Write((New-Object byte[] 4096),0,4096); $f.Flush($true); $f.Close()")
def disk_write_probe(m: Machine, dev):
    write(m.disk(dev), 0, bytes(4096))
    return []


def write(disk: dict, offset: int, data: bytes) -> None:
    if disk["readonly"]:  # ERROR_WRITE_PROTECT from the virtio disk QEMU serves read-only
        raise PsError('Exception calling "Write" with "3" argument(s): "The media is write '
                      'protected."', "IOException")
    with open(disk["file"], "r+b") as f:
        f.seek(offset)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def flip(data: bytes) -> bytes:
    return data[:1] + bytes([data[1] ^ 0x01]) + data[2:] if len(data) > 1 else data


@script("$d=Get-PhysicalDisk | Where-Object DeviceId -eq ('{name}' -replace '\\D',''); "
        "$d.SerialNumber.Trim(); $d.Model.Trim()")
def nvme_identity(m: Machine, name):
    disk = m.disk_number(name)
    return [disk["serial"].strip(), disk["model"].strip()]


@script("(Get-NetAdapter | Where-Object MacAddress -eq ('{mac}'.ToUpper() -replace ':','-')).Name")
def nic_by_mac(m: Machine, mac):
    return [n["name"] for n in m.nics if n["mac"] == mac.upper().replace(":", "-")]


@script("if ((Get-NetAdapter -Name '{ifname}').Status -eq 'Up') {'up'} else {'down'}")
def nic_state(m: Machine, ifname):
    if not any(n["name"] == ifname for n in m.nics):
        raise PsError(f"Get-NetAdapter : No MSFT_NetAdapter objects found with property 'Name' "
                      f"equal to '{ifname}'.", "CmdletizationQuery_NotFound_Name,Get-NetAdapter")
    return ["up"]


@script("Get-NetIPAddress -AddressFamily IPv4 | Where-Object { $_.InterfaceAlias -eq "
        "'{ifname}' -and $_.IPAddress -notlike '169.254.*' } | ForEach-Object IPAddress")
def nic_ipv4(m: Machine, ifname):
    return [DHCP_ADDRESS] if m.nics and m.nics[0]["name"] == ifname else []


def connect(host: str, port: str) -> socket.socket:
    host = "127.0.0.1" if host == QEMU_GATEWAY else host
    try:
        return socket.create_connection((host, int(port)), timeout=60)
    except OSError as e:
        raise PsError(f'New-Object : Exception calling ".ctor" with "2" argument(s): '
                      f'"{e.strerror}"', "MethodInvocationException") from None


@script(RANDOM + SHA + "; $c=New-Object Net.Sockets.TcpClient('{host}',{port}); "
        "$s=$c.GetStream(); $s.Write($b,0,$b.Length); $c.Close()")
def tcp_send(m: Machine, length, host, port):
    data = os.urandom(int(length))
    with connect(host, port) as conn:
        conn.sendall(flip(data) if "tcp-send" in m.corrupt else data)
    return [sha(data)]


@script("$c=New-Object Net.Sockets.TcpClient('{host}',{port}); $m=New-Object IO.MemoryStream; "
        "$c.GetStream().CopyTo($m); $c.Close(); $b=$m.ToArray(); $b.Length; " + SHA)
def tcp_receive(m: Machine, host, port):
    data = bytearray()
    with connect(host, port) as conn:
        while chunk := conn.recv(1 << 16):
            data += chunk
    return [str(len(data)), sha(bytes(data))]


@script("(Start-Process powershell -PassThru -WindowStyle Hidden -ArgumentList "
        "'-NoProfile','-Command','$p=New-Object IO.Ports.SerialPort ''{dev}'',{baud}; "
        "$p.Open(); $b=New-Object byte[] {length}; $n=0; while($n -lt {length2})"
        "{$n+=$p.Read($b,$n,{length3}-$n)}; [IO.File]::WriteAllBytes(''C:\\rv.urx'',$b)').Id")
def uart_receive_start(m: Machine, dev, baud, length, length2, length3):
    if dev != "COM2" or m.com2 is None:
        raise PsError(f"the port '{dev}' does not exist", "IOException")
    want = int(length)

    def reader():
        conn, data = m.com2.port(), bytearray()
        while len(data) < want and (chunk := conn.recv(want - len(data))):
            data += chunk
        m.files[RECEIVED] = bytes(data)

    pid = 4100 + 4 * len(m.readers)
    m.readers[pid] = threading.Thread(target=reader, daemon=True)
    m.readers[pid].start()
    return [str(pid)]


@script("Wait-Process -Id {pid}; $b=[IO.File]::ReadAllBytes('C:\\rv.urx'); $b.Length; " + SHA)
def uart_receive_finish(m: Machine, pid):
    reader = m.readers.pop(int(pid), None)
    if reader is not None:
        reader.join()
    if RECEIVED not in m.files:
        raise PsError("Exception calling \"ReadAllBytes\" with \"1\" argument(s): \"Could not "
                      "find file 'C:\\rv.urx'.\"", "FileNotFoundException")
    data = m.files[RECEIVED]
    return [str(len(data)), sha(data)]


@script(RANDOM + SHA + "; $p=New-Object IO.Ports.SerialPort '{dev}',{baud}; $p.Open(); "
        "$p.Write($b,0,$b.Length); $p.Close()")
def uart_send(m: Machine, length, dev, baud):
    data = os.urandom(int(length))
    m.com2.port().sendall(data)
    return [sha(data)]


# The machine (vcpus, clock, reboot) ----------------------------------------------------------
@script("(Get-CimInstance Win32_ComputerSystem).NumberOfLogicalProcessors")
def cpu_count(m: Machine):
    return [str(m.cpus)]


@script("$i=0; $s=0; Get-CimInstance Win32_Processor | Sort-Object DeviceID | ForEach-Object { "
        "$t=$_.NumberOfLogicalProcessors / $_.NumberOfCores; for($c=0; $c -lt $_.NumberOfCores; "
        "$c++){ for($h=0; $h -lt $t; $h++){ '{0} {1} {2}' -f $i,$s,$c; $i++ } }; $s++ }")
def cpu_topology(m: Machine):
    sockets, cores, threads = m.topology
    return [f"{(s * cores + c) * threads + h} {s} {c}"
            for s in range(sockets) for c in range(cores) for h in range(threads)]


@script("Get-CimInstance Win32_PerfRawData_PerfOS_Processor | Where-Object Name -ne '_Total' | "
        "ForEach-Object { 'cpu' + $_.Name + ' ' + ([uint64]$_.PercentUserTime + "
        "[uint64]$_.PercentPrivilegedTime) }")
def cpu_ticks(m: Machine):
    return [f"cpu{cpu} {busy}" for cpu, busy in sorted(m.busy.items())]


@script("$j=1..{count} | ForEach-Object { Start-Job { $e=(Get-Date).AddSeconds({seconds}); "
        "while((Get-Date) -lt $e){} } }; $null = $j | Wait-Job; $j | Remove-Job")
def cpu_load(m: Machine, count, seconds):
    """The jobs' busy loops: they take the time they say; Windows spreads ``count`` of them
    over as many CPUs (at most all)."""
    time.sleep(int(seconds))
    for cpu in range(min(int(count), m.cpus)):
        m.busy[cpu] += int(seconds) * 10_000_000
    return []


@script("Get-Date -Format 'yyyy-MM-dd HH:mm:ss'")
def rtc_read(m: Machine):
    """Windows' clock as it set it from the RTC QEMU presents (-rtc base=utc|localtime),
    read as local time: the host's UTC or local time."""
    now = time.gmtime() if m.rtc_utc else time.localtime()
    return [time.strftime("%Y-%m-%d %H:%M:%S", now)]


@script("(Get-CimInstance Win32_OperatingSystem).LastBootUpTime.ToUniversalTime().Ticks")
def boot_id(m: Machine):
    return [str(int(m.booted * 10_000_000) + 621355968000000000)]  # .NET ticks since year 1


# UEFI variables and save-restore's files -------------------------------------------------------
FIRMWARE_API = ("$q=[char]34; Add-Type -Namespace Rv -Name Fw -MemberDefinition ('[DllImport(' "
                "+ $q + 'ntdll.dll' + $q + ')] public static extern int RtlAdjustPrivilege(int p, "
                "bool e, bool t, out bool w); [DllImport(' + $q + 'kernel32.dll' + $q + ', "
                "SetLastError=true, CharSet=CharSet.Unicode)] public static extern {signature};'); "
                "$w=$false; $null=[Rv.Fw]::RtlAdjustPrivilege(22,$true,$false,[ref]$w); ")


def firmware_api(signature: str) -> str:
    return FIRMWARE_API.replace("{signature}", signature)


def firmware_guard(m: Machine, call: str) -> None:
    """What kernel32 says on a BIOS boot (ERROR_INVALID_FUNCTION)."""
    if not m.uefi:
        raise PsError(f"{call}: Win32 error 1", "RuntimeException")


@script(firmware_api("uint GetFirmwareEnvironmentVariableExW(string n, string g, byte[] b, "
                     "uint s, out uint a)")
        + "$b=New-Object byte[] 4096; $a=[uint32]0; $n=[Rv.Fw]::GetFirmwareEnvironmentVariableExW("
        "'{name}','{{guid}}',$b,4096,[ref]$a); $e=[Runtime.InteropServices.Marshal]::"
        "GetLastWin32Error(); if($n -gt 0){ (([BitConverter]::GetBytes($a) + $b[0..($n-1)]) | "
        "ForEach-Object { $_.ToString('x2') }) -join '' } elseif($e -eq 203){ '' } else { "
        "throw ('GetFirmwareEnvironmentVariableExW: Win32 error ' + $e) }")
def efivar_read(m: Machine, name, guid):
    firmware_guard(m, "GetFirmwareEnvironmentVariableExW")
    found = m.efivar(name, guid.lower())
    if found is None:
        return [""]  # ERROR_ENVVAR_NOT_FOUND
    attributes, data = found
    return [(attributes.to_bytes(4, "little") + data).hex()]


@script(firmware_api("bool SetFirmwareEnvironmentVariableExW(string n, string g, byte[] b, "
                     "uint s, uint a)")
        + "[byte[]]$v='{octal}'.Split([char]92, [StringSplitOptions]::RemoveEmptyEntries) | "
        "ForEach-Object { [Convert]::ToByte($_, 8) }; $d=[byte[]]$v[4..($v.Length-1)]; "
        "if(-not [Rv.Fw]::SetFirmwareEnvironmentVariableExW('{name}','{{guid}}',$d,$d.Length,"
        "[BitConverter]::ToUInt32($v,0))){ throw ('SetFirmwareEnvironmentVariableExW: Win32 "
        "error ' + [Runtime.InteropServices.Marshal]::GetLastWin32Error()) }")
def efivar_write(m: Machine, octal, name, guid):
    firmware_guard(m, "SetFirmwareEnvironmentVariableExW")
    value = bytes(int(part, 8) for part in octal.split("\\") if part)
    m.set_efivar(name, guid.lower(), int.from_bytes(value[:4], "little"), value[4:])
    return []


@script("Start-Process powershell -WindowStyle Hidden -ArgumentList '-NoProfile','-Command',"
        "'$i=0; while($true){ $i++; [IO.File]::WriteAllText(''C:\\rv.counter'', [string]$i); "
        "Start-Sleep 1 }'")
def counter_start(m: Machine):
    def count():
        i = 0
        while True:
            i += 1
            m.files["C:\\rv.counter"] = str(i).encode()
            time.sleep(1)

    threading.Thread(target=count, daemon=True).start()
    return []


@script("for($k=0; $k -lt 10; $k++){ try { [IO.File]::ReadAllText('C:\\rv.counter').Trim(); "
        "break } catch { Start-Sleep -Milliseconds 200 } }")
def counter_read(m: Machine):
    return [m.files.get("C:\\rv.counter", b"").decode()]


@script(RANDOM.format(length=1048576) + "[IO.File]::WriteAllBytes('C:\\rv.keep',$b); " + SHA)
def keep_write(m: Machine):
    m.files["C:\\rv.keep"] = os.urandom(1 << 20)
    return [sha(m.files["C:\\rv.keep"])]


@script("(Get-FileHash -Algorithm SHA256 C:\\rv.keep).Hash.ToLower()")
def keep_sha(m: Machine):
    return [sha(m.files["C:\\rv.keep"])]


def run(script_text: str, machine: Machine) -> tuple[str, list[str], int]:
    """(the stand-in's name or "unknown", output lines, exit status) of ``powershell
    -NoProfile -Command "script_text"``."""
    text = re.sub(r"\s+", " ", script_text).strip()
    stop = text.startswith(STOP)
    body = text[len(STOP):] if stop else text
    for name, (regex, function) in SCRIPTS.items():
        match = regex.fullmatch(body)
        if match:
            break
    else:
        return "unknown", [f"fake_windows_powershell: NO STAND-IN for this script (test "
                           f"double): {body[:200]}",
                           "    + FullyQualifiedErrorId : RefvmDoubleUnknownScript"], 1
    values = match.groupdict()
    # A script repeating a value ({length} ... {length2}) must repeat the same value.
    for key in [k for k in values if k[-1].isdigit()]:
        if values[key] != values[key.rstrip("0123456789")]:
            return name, [f"fake_windows_powershell: {name}: {key} differs"], 1
    try:
        return name, function(machine, **values), 0
    except PsError as e:
        message, error_id = e.args
        lines = [message, f"    + FullyQualifiedErrorId : {error_id}"]
        return name, lines, 1 if stop else 0
