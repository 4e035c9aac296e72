"""A real terminal for CLI tests: the command runs on a pseudo-terminal (so it sees a
TTY, as a person's shell gives it), and the test reads its screen and types."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Mapping, Sequence

from tests.helpers import ROOT


class Terminal:
    """``taskloom`` (or any command) on a pty: :meth:`expect` text, :meth:`send` lines."""

    def __init__(self, args: Sequence[str], *, env: Mapping[str, str]) -> None:
        master, slave = pty.openpty()
        # a wide window, as a person's terminal would be: tables are not cut short
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        self.proc = subprocess.Popen(
            list(args),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=ROOT,
            # The window's size is the pty's: COLUMNS and LINES, which a runner may set
            # for its own output (pytest-xdist's workers get 80x24), would override it.
            env={k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")},
            start_new_session=True,
        )
        os.close(slave)
        self.master = master
        self.screen = ""

    def expect(self, text: str, timeout: float = 30) -> str:
        """Read until ``text`` appears after what earlier calls consumed; return all read."""
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} did not appear; the terminal shows:\n{self.screen}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.2))
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the command exited
                    chunk = b""
                if not chunk and self.proc.poll() is not None:
                    raise AssertionError(f"exited before {text!r}; it showed:\n{self.screen}")
                self.screen += chunk.decode(errors="replace").replace("\r\n", "\n")
        seen, _, self.screen = self.screen.partition(text)
        return seen + text

    def send(self, line: str) -> None:
        """Type ``line`` and Enter."""
        os.write(self.master, (line + "\n").encode())

    def kill(self) -> None:
        """SIGKILL the command (and anything it started)."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        os.close(self.master)

    def wait(self, timeout: float = 30) -> int:
        """Its exit code, once it exits."""
        code = self.proc.wait(timeout)
        os.close(self.master)
        return code
