"""The idle stop of a kept embedded Redis: a small watcher process that shuts the server
down cleanly once no client has used it for a while.

:class:`~taskloom.engine.embedded.EmbeddedRedis` with ``keep=True`` (the ``taskloom``
commands) leaves its redis-server running for the next command and starts this module
beside it, as a script, by path::

    python -I .../taskloom/engine/idlestop.py --socket DIR/redis.sock --lock DIR/.lock \
        --pid SERVER_PID --idle 1800

It imports neither taskloom nor redis-py, only the standard library, and speaks the four
Redis commands it needs itself: the process that sits beside the server for hours stays
small (about 10 MB) and nothing installed can break it.

How it decides. It holds one connection of its own, named ``taskloom-idle:<pid>:<idle>``
(so a command finds it in ``CLIENT LIST`` and knows its idle period), and every poll
reads ``CLIENT LIST`` and ``INFO stats``. The server is quiet when no other client is
connected (a worker, ``taskloom serve``, a command, anyone) and no connection was made
since the last poll (so a command that came and went between two polls counts as use).
A connection whose name starts with ``taskloom-idle:`` does not count: a monitoring
connection may take such a name so as not to keep the server up.
After ``idle`` quiet seconds it takes the data directory's start lock, checks once more
and sends ``SHUTDOWN``: Redis writes and fsyncs its append-only file and exits, and the
watcher holds the lock until the process is gone. A command starting at that moment
therefore either made its connection before the last check (which then sees it) or
waits for the lock and starts a new server. The watcher ends when the server goes away,
however it went (``taskloom stop``, a crash, a newer watcher replacing it).

The helpers here that :mod:`taskloom.engine.embedded` shares (:func:`pid_alive`,
:func:`watcher_name`, :func:`parse_watcher_name`) are standard library only too.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import select
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["WATCHER_PREFIX", "main", "parse_watcher_name", "pid_alive", "watcher_name"]

WATCHER_PREFIX = "taskloom-idle:"
"""The start of the client name a watcher gives its connection; no connection named so
counts as use of the server."""
_MIN_POLL = 0.05
_MAX_POLL = 10.0
_IO_TIMEOUT = 10.0
_GONE_TIMEOUT = 30.0


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (an exited child nobody reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def watcher_name(pid: int, idle: float) -> str:
    """The client name of the watcher with process id ``pid`` and idle period ``idle``."""
    return f"{WATCHER_PREFIX}{pid}:{idle!r}"


def parse_watcher_name(name: str) -> tuple[int, float] | None:
    """``(pid, idle)`` of a watcher's client name, or ``None`` for any other name."""
    if not name.startswith(WATCHER_PREFIX):
        return None
    pid, _, idle = name[len(WATCHER_PREFIX) :].partition(":")
    try:
        return int(pid), float(idle)
    except ValueError:
        return None


class _ServerError(Exception):
    """Redis answered with an error."""


class _Connection:
    """One RESP2 connection over a unix socket: commands of bulk strings in, one reply out."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(_IO_TIMEOUT)
        self.sock.connect(path)
        self._reader = self.sock.makefile("rb")

    def call(self, *args: str) -> object:
        """Send one command and read its reply (``ConnectionError`` when the server hangs up)."""
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(parts))
        return self._reply()

    def _reply(self) -> object:
        line = self._reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("the server closed the connection")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body.decode()
        if kind == b"-":
            raise _ServerError(body.decode(errors="replace"))
        if kind == b":":
            return int(body)
        if kind == b"$":
            size = int(body)
            if size < 0:
                return None
            data = self._reader.read(size + 2)
            if len(data) != size + 2:
                raise ConnectionError("the server closed the connection")
            return data[:-2].decode(errors="replace")
        if kind == b"*":
            return [self._reply() for _ in range(max(int(body), 0))]
        raise ConnectionError(f"unexpected reply {line[:40]!r}")

    def hung_up_within(self, seconds: float) -> bool:
        """Wait up to ``seconds``; ``True`` as soon as the server closes the connection."""
        readable, _, _ = select.select([self.sock], [], [], seconds)
        return bool(readable) and not self.sock.recv(1, socket.MSG_PEEK)

    def close(self) -> None:
        self._reader.close()
        self.sock.close()


def _log(message: str) -> None:
    """A line in the server's log (the watcher's stderr is redis.log)."""
    stamp = time.strftime("%d %b %Y %H:%M:%S")
    print(f"{os.getpid()}:idle {stamp} {message}", file=sys.stderr, flush=True)


class _Watcher:
    def __init__(self, *, socket_path: str, lock_path: str, server_pid: int, idle: float) -> None:
        self.lock_path = lock_path
        self.server_pid = server_pid
        self.idle = idle
        self.poll = min(max(idle / 10, _MIN_POLL), _MAX_POLL)
        self.conn = _Connection(socket_path)

    def register(self) -> None:
        """Name the connection; refuse a server other than the one this watcher is for."""
        info = str(self.conn.call("INFO", "server"))
        if f"process_id:{self.server_pid}\r\n" not in info:
            raise ConnectionError(f"the server on the socket is not pid {self.server_pid}")
        self.conn.call("CLIENT", "SETNAME", watcher_name(os.getpid(), self.idle))

    def sample(self) -> tuple[int, int]:
        """(clients other than watchers, connections received since the server started)."""
        listing = str(self.conn.call("CLIENT", "LIST"))
        others = 0
        for line in listing.splitlines():
            fields = dict(f.partition("=")[::2] for f in line.split(" "))
            if not fields.get("name", "").startswith(WATCHER_PREFIX):
                others += 1
        stats = str(self.conn.call("INFO", "stats"))
        received = next(
            (
                int(line.partition(":")[2])
                for line in stats.splitlines()
                if line.startswith("total_connections_received:")
            ),
            -1,
        )
        return others, received

    def run(self) -> int:
        """Watch until the server is gone or this watcher shut it down."""
        _log(
            f"watching redis-server {self.server_pid}: shut down after {self.idle:g} s "
            f"without a client"
        )
        try:
            seen = self.sample()[1]
            quiet_since = time.monotonic()
            while not self.conn.hung_up_within(self.poll):
                others, received = self.sample()
                if others or received != seen:
                    seen, quiet_since = received, time.monotonic()
                elif time.monotonic() - quiet_since >= self.idle:
                    if self.shutdown_if_quiet(seen):
                        return 0
                    seen, quiet_since = self.sample()[1], time.monotonic()
        except (OSError, _ServerError) as exc:
            _log(f"stopped watching redis-server {self.server_pid}: {exc}")
            return 0
        _log(f"redis-server {self.server_pid} went away (or another watcher took over)")
        return 0

    def shutdown_if_quiet(self, seen: int) -> bool:
        """Under the start lock, shut the server down if it is still quiet."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a command is starting or stopping the server right now
            if self.sample() != (0, seen):
                return False
            _log(f"no client for {self.idle:g} s: shutting down redis-server {self.server_pid}")
            try:
                self.conn.call("SHUTDOWN")
            except ConnectionError:
                pass  # SHUTDOWN answers by closing the connection
            except _ServerError as exc:
                _log(f"redis-server {self.server_pid} refused to shut down: {exc}")
                return False
            deadline = time.monotonic() + _GONE_TIMEOUT
            while pid_alive(self.server_pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            return True
        finally:
            os.close(fd)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="stop an idle embedded redis-server of taskloom")
    p.add_argument("--socket", required=True, help="the server's unix socket")
    p.add_argument("--lock", required=True, help="the data directory's start lock")
    p.add_argument("--pid", type=int, required=True, help="the server's process id")
    p.add_argument("--idle", type=float, required=True, help="quiet seconds before stopping")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Detach, connect and watch; the process that started it returns once the watcher
    is registered with the server (0) or could not be (1)."""
    args = _parser().parse_args(argv)
    ready_r, ready_w = os.pipe()
    if os.fork():  # the parent reports and exits, so the watcher belongs to no one
        os.close(ready_w)
        return 0 if os.read(ready_r, 1) == b"1" else 1
    os.close(ready_r)
    try:
        watcher = _Watcher(
            socket_path=args.socket, lock_path=args.lock, server_pid=args.pid, idle=args.idle
        )
        watcher.register()
    except (OSError, _ServerError) as exc:
        _log(f"cannot watch redis-server {args.pid}: {exc}")
        os.write(ready_w, b"0")
        return 1
    os.write(ready_w, b"1")
    os.close(ready_w)
    return watcher.run()


if __name__ == "__main__":
    sys.exit(main())
