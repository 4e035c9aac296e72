"""Small helpers for tests."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sized
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import RedisError

from taskloom import Worker
from taskloom.engine.embedded import find_redis_server
from taskloom.testing.cluster import free_port_block, release_ports

ROOT = Path(__file__).resolve().parent.parent
"""The checkout: where commands run from and what PYTHONPATH holds."""
TASKLOOM = (sys.executable, "-m", "taskloom.terminal.cli")
"""The ``taskloom`` command line, as this interpreter runs it (no install needed)."""
S = TypeVar("S", bound=Sized)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@contextlib.asynccontextmanager
async def running(*workers: Worker) -> AsyncIterator[None]:
    """Run in-process workers for the body of a ``with`` block, then stop them."""
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        await asyncio.gather(*(w.started.wait() for w in workers))
        yield
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks)


async def wait_until(check: Callable[[], Any], what: str, timeout: float = 10) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy, and return it;
    fail the test, saying ``what`` was awaited, after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                value = check()
                if asyncio.iscoroutine(value):
                    value = await value
                if value:
                    return value
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


def eventually(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """:func:`wait_until` for plain code: poll ``check`` until it returns something
    truthy, and return it; fail the test, saying ``what`` was awaited, after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


async def at_least(items: Awaitable[S], n: int) -> S | None:
    """``items`` once they are ``n`` or more, else ``None`` (for :func:`wait_until`)."""
    got = await items
    return got if len(got) >= n else None


@contextlib.contextmanager
def own_redis(home: Path, *args: str, ready: Callable[[], object]) -> Iterator[None]:
    """A redis-server of the test's own, started with ``args`` (its files in ``home``,
    no persistence) and killed afterwards; ``ready()`` raises a ``RedisError`` until it
    answers."""
    proc = subprocess.Popen(
        [find_redis_server(), *args, "--save", "", "--appendonly", "no", "--dir", str(home)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                ready()
                break
            except RedisError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.01)
        yield
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def own_socket_redis(*args: str, password: str | None = None) -> Iterator[Path]:
    """A redis-server of the test's own on a unix socket (under a short /tmp path),
    started with ``args`` (and ``--requirepass`` with ``password``) and killed
    afterwards; its socket's path."""
    from redis import Redis as SyncRedis

    home = Path(tempfile.mkdtemp(prefix="tl-own-", dir="/tmp"))  # a short socket path
    sock = home / "redis.sock"
    if password is not None:
        args = (*args, "--requirepass", password)
    admin = SyncRedis(unix_socket_path=str(sock), password=password)
    try:
        with own_redis(home, "--port", "0", "--unixsocket", str(sock), *args, ready=admin.ping):
            yield sock
    finally:
        admin.close()
        shutil.rmtree(home, ignore_errors=True)


def taskloom(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the ``taskloom`` command line to its end, as a user's shell would."""
    return subprocess.run(
        [*TASKLOOM, *args],
        cwd=ROOT,
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
    )


def start_taskloom(
    *args: str, env: dict[str, str], stderr: int = subprocess.STDOUT
) -> subprocess.Popen[str]:
    """Start the ``taskloom`` command line and return at once; its output is piped
    (with its errors, unless ``stderr`` says otherwise)."""
    return subprocess.Popen(
        [*TASKLOOM, *args], cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=stderr
    )


def samples(text: str) -> Samples:
    """Every sample of a Prometheus exposition, keyed by (sample name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(got: Samples, name: str, **labels: str) -> float:
    """One sample of :func:`samples`' result."""
    return got[(name, frozenset(labels.items()))]


def act(id: str, *inputs: str, role: str = "writer", **extra: Any) -> dict[str, Any]:
    """A plan activity as a planner writes it: ``write part ID``."""
    base = {"id": id, "role": role, "instructions": f"write part {id}", "inputs": list(inputs)}
    return base | extra


Opener = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
"""Opens a connection to the server behind a :class:`Relay`."""


class Relay:
    """A TCP relay on a loopback port in front of a server (``async with``).

    ``entered`` counts the connections clients opened through it. Once :meth:`arm`\\ ed,
    it loses the reply to the next request that carries a marker: the server runs the
    request, and the relay closes that connection instead of passing the reply on."""

    def __init__(self, open_server: Opener) -> None:
        self._open_server = open_server
        self.entered = 0
        self.port = 0
        self.marker, self.armed = b"", False
        self.seen = 0  # requests that carried the marker
        self.dropped = 0  # replies lost on purpose
        self._relays: set[asyncio.Task[None]] = set()

    @classmethod
    def to(cls, url: str) -> Relay:
        """A relay to the Redis at ``url`` (``redis://host:port`` or ``unix://path``)."""
        parts = urlparse(url)
        if parts.scheme == "unix":
            return cls(lambda: asyncio.open_unix_connection(parts.path))
        return cls(lambda: asyncio.open_connection(parts.hostname, parts.port or 6379))

    def url(self, db: int = 0) -> str:
        """A redis-py URL that reaches the server through the relay."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def arm(self, marker: bytes) -> None:
        """Lose the reply to the next request carrying ``marker``."""
        self.marker, self.armed = marker, True

    async def __aenter__(self) -> Relay:
        self._listener = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._listener.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        self._listener.close()
        for relay in self._relays:
            relay.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.entered += 1
        self._relays.add(task := asyncio.current_task())  # type: ignore[arg-type]
        up_reader, up_writer = await self._open_server()
        lose = asyncio.Event()

        async def requests() -> None:
            while data := await reader.read(65536):
                if self.marker and self.marker in data:
                    self.seen += 1
                    if self.armed:
                        self.armed = False
                        lose.set()
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def replies() -> None:
            while data := await up_reader.read(65536):
                if lose.is_set():  # the server ran it; the client never hears
                    self.dropped += 1
                    return
                writer.write(data)
                await writer.drain()
            writer.close()

        try:
            with contextlib.suppress(OSError):  # either side hung up
                sides = [asyncio.ensure_future(requests()), asyncio.ensure_future(replies())]
                await asyncio.wait(sides, return_when=asyncio.FIRST_COMPLETED)
                for side in sides:
                    side.cancel()
                await asyncio.gather(*sides, return_exceptions=True)
        finally:
            for w in (writer, up_writer):
                w.close()
            self._relays.discard(task)  # type: ignore[arg-type]


class RestartableRedis:
    """A redis-server of the test's own on a TCP port, no persistence, that can be
    SIGKILLed and started again (empty) on the same port: :meth:`start`, :meth:`kill`;
    :meth:`close` at the end gives the port back."""

    def __init__(self, home: Path) -> None:
        self.home, self.port = home, free_port_block(1)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it (empty); callers connect with retries, as taskloom's client does."""
        args = [find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.home)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill(self) -> None:
        """SIGKILL it, if running."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def close(self) -> None:
        """Kill it and give its port back (it reserved the port while it lived)."""
        self.kill()
        release_ports([self.port])
