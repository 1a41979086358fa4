"""Start a VM from the commands refvm printed for a person (refvm repro, run --keep-failed)
the way a person would: pasted into sh, after refvm has exited. Shared by the vm tests
test_repro_e2e.py and test_keep_failed.py; one VM, killed before it returns."""
from __future__ import annotations

import json
import os
import select
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path


def by_hand_vm(by_hand: str, harness: list[str], home: Path) -> None:
    """Run the printed lines in sh, as a person pasting them would, after refvm has exited:
    its VM must come up in a directory of its own to a login prompt on the terminal, with the
    harness's machine and devices (``harness``: its command.txt, overlay then QEMU)."""
    home.mkdir()
    proc = subprocess.Popen(["sh", "-c", by_hand], cwd=home,
                            env=dict(os.environ, TMPDIR=str(home)),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    seen, deadline = b"", time.monotonic() + 240
    try:
        while b"login:" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                seen += chunk
        ps = subprocess.run(["ps", "-ww", "-eo", "sid=,args="], capture_output=True,
                            text=True).stdout
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    text = seen.decode(errors="replace")
    assert "login:" in text, f"no login prompt from the VM started by hand:\n{text[-2000:]}"
    made, = home.iterdir()  # the directory the lines made, and printed first
    assert text.splitlines()[0] == str(made)
    qemu, = [args for sid, args in (line.split(None, 1) for line in ps.splitlines())
             if sid == str(proc.pid) and args.startswith("qemu-system-x86_64 ")]
    same = [a for a in harness[-1].split() if "refvm-" not in a and "com1" not in a
            and a not in ("-S", "-qmp", "-pidfile")]  # all but the run's paths and harness's
    assert [a for a in qemu.split() if a in same] == same  # the same machine and devices
    overlay = shlex.split(harness[0])
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-U",
                                      str(made / "overlay-0.qcow2")], capture_output=True,
                                     text=True, check=True).stdout)
    assert info["backing-filename"] == overlay[overlay.index("-b") + 1]  # the same image
    if "uefi-vars.fd" in by_hand:  # a copy of the template the harness's VM's was made from
        template = next(line.split()[1] for line in by_hand.splitlines()
                        if line.startswith("cp ") and line.endswith(" uefi-vars.fd"))
        assert "uefi-vars.fd" in harness[-1]  # (the firmware has written to it since)
        assert (made / "uefi-vars.fd").stat().st_size == Path(template).stat().st_size
    shutil.rmtree(made)
