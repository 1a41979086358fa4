"""Test doubles. Nothing here is used by the harness itself: unit tests only.

ScriptedGuestConsole plays a guest's serial console on one end of a socketpair: a getty with a
real password check, a shell that understands the harness's marker lines, kernel messages at
chosen moments. End-to-end tests boot real guests instead.
"""
from __future__ import annotations

import socket
import threading
import time


class ScriptedGuestConsole:
    """A fake guest console.

    ``commands`` maps a command line to (output, status). ``boot_output`` is printed before
    the first login prompt; with ``prompt_needs_newline`` the prompt only appears after the
    harness sends a newline; ``after_prompt`` is printed right after each login prompt (kernel
    messages landing on top of it), ``after_password_prompt`` likewise after "Password: ",
    ``after_first_shell_prompt`` after the shell's first prompt;
    ``echo`` echoes typed characters like a tty does.
    """

    def __init__(self, user="root", password="secret", commands=None, boot_output="",
                 prompt_needs_newline=False, after_prompt="", echo=True, on_login_text="",
                 hostname="guest", after_password_prompt="", after_first_shell_prompt=""):
        self.harness_side, self._guest = socket.socketpair()
        self.user, self.password = user, password
        self.commands = commands or {}
        self.boot_output = boot_output
        self.prompt_needs_newline = prompt_needs_newline
        self.after_prompt = after_prompt
        self.after_password_prompt = after_password_prompt
        self.after_first_shell_prompt = after_first_shell_prompt
        self.echo = echo
        self.on_login_text = on_login_text
        self.hostname = hostname
        self.received = b""
        self._stop = False
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()

    # Guest side ------------------------------------------------------------------------------
    def _send(self, text: str) -> None:
        try:
            self._guest.sendall(text.encode())
        except OSError:
            self._stop = True

    def _readline(self, echo=True) -> str | None:
        line = b""
        while not self._stop:
            try:
                ch = self._guest.recv(1)
            except OSError:
                return None
            if not ch:
                return None
            self.received += ch
            if ch in b"\r\n":
                if echo and self.echo:
                    self._send("\r\n")
                return line.decode()
            line += ch
            if echo and self.echo:
                self._send(ch.decode())
        return None

    def _main(self) -> None:
        if self.boot_output:
            self._send(self.boot_output)
        if self.prompt_needs_newline and self._readline() is None:
            return
        while not self._stop:
            self._send(f"\r\n{self.hostname} login: ")
            if self.after_prompt:
                self._send(self.after_prompt)
            user = self._readline()
            if user is None:
                return
            if not user:
                continue
            self._send("Password: " + self.after_password_prompt)
            password = self._readline(echo=False)
            if password is None:
                return
            if user != self.user or password != self.password:
                time.sleep(0.05)
                self._send("\r\nLogin incorrect\r\n")
                continue
            self._send(self.on_login_text)
            self._shell()
            return

    def _shell(self) -> None:
        status = 0
        first = True
        while not self._stop:
            # Like busybox ash's line editor: the first prompt asks where the cursor is.
            self._send("~ # \x1b[6n" if first else "~ # ")
            if first and self.after_first_shell_prompt:
                self._send(self.after_first_shell_prompt)
            first = False
            line = self._readline()
            if line is None:
                return
            for command in [c.strip() for c in line.split(";") if c.strip()]:
                if command.startswith("echo "):
                    text = command[5:].replace("''", "").replace("$?", str(status))
                    self._send(text + "\r\n")
                    continue
                output, status = self.commands.get(command, (f"sh: {command}: not found", 127))
                if output:
                    self._send(output.replace("\n", "\r\n") + "\r\n")

    def close(self) -> None:
        self._stop = True
        for sock in (self._guest, self.harness_side):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass

    def hang_up(self) -> None:
        """Close only the guest's end, as a hypervisor that exits does."""
        self._stop = True
        # shutdown() first: close() alone does not wake the thread blocked in recv(), and the
        # kernel only sends EOF once that thread lets go of the socket.
        self._guest.shutdown(socket.SHUT_RDWR)
        self._guest.close()

    def say(self, text: str) -> None:
        """Print something on the console now (e.g. a panic while the harness waits)."""
        self._send(text)


class TricklingConsole:
    """A console that delivers text like a real serial line: in small writes (1..16 bytes by
    default) at a set rate, from a separate process (tests/trickle_feeder.py) so that the
    feeder's CPU is not counted as the harness's. ``parts`` is a list of (text, repeat).

    ``transport``: "socket" (a socketpair, like QEMU's socket chardev, libvirt's bridged
    stream) or "fifo" (QEMU's pipe chardev, the QEMU backend's console: the feeder opens the
    FIFOs read-write as QEMU does, and ``harness_side`` is the backend's FifoConsole)."""

    def __init__(self, parts, rate: float = 80_000, pieces=(1, 16), seed: int = 10,
                 transport: str = "socket"):
        import json
        import subprocess
        import sys
        import tempfile
        from pathlib import Path

        from harness.backends.qemu.fifo import FifoConsole, make_fifos

        self.size = sum(len(text.encode()) * repeat for text, repeat in parts)
        spec = {"rate": rate, "pieces": list(pieces), "seed": seed,
                "parts": [[text, repeat] for text, repeat in parts]}
        feeder = [sys.executable, str(Path(__file__).with_name("trickle_feeder.py"))]
        self._dir = None
        if transport == "fifo":
            self._dir = tempfile.TemporaryDirectory()
            base = Path(self._dir.name) / "com1"
            make_fifos(base)
            spec["fifo"] = str(base)
            self.process = subprocess.Popen(feeder + ["-1", json.dumps(spec)])
            deadline = time.monotonic() + 10
            while True:  # like QEMU, the feeder holds both FIFOs before the harness opens them
                try:
                    self.harness_side = FifoConsole(base)
                    break
                except OSError:
                    if time.monotonic() > deadline:  # the feeder never opened them: stop it
                        self.process.kill()
                        self.process.wait()
                        self._dir.cleanup()
                        raise
                    time.sleep(0.01)
            return
        self.harness_side, guest = socket.socketpair()
        self.process = subprocess.Popen(feeder + [str(guest.fileno()), json.dumps(spec)],
                                        pass_fds=[guest.fileno()])
        guest.close()

    def close(self) -> None:
        if self._dir is not None:
            self.harness_side.close()
            self.process.terminate()
        else:
            try:
                self.harness_side.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.harness_side.close()
        try:
            self.process.wait(10)
        except Exception:  # noqa: BLE001 - a stuck feeder must not hang the test run
            self.process.kill()
            self.process.wait()
        if self._dir is not None:
            self._dir.cleanup()
