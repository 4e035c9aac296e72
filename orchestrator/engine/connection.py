"""Connecting to Redis: the configured URL, or the embedded server under the data dir."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

from taskloom.errors import RedisUnavailableError
from taskloom.redaction import redact_text, redact_url
from taskloom.settings import Settings
from taskloom.version import __version__

if TYPE_CHECKING:
    from taskloom.engine.embedded import EmbeddedRedis

__all__ = ["Connection", "connect", "make_client"]


# Untyped in redis-py 8 (typed in 5-7): the ignore covers both.
_PACKER: Any = HiredisRespSerializer()  # type: ignore[no-untyped-call,unused-ignore]
_TUNED: dict[str, type[AbstractConnection]] = {}


class _Tuned:
    """What a taskloom connection does differently from redis-py's asyncio one, both
    for CPU per command (a worker spends its time in many small Redis round trips).

    - Commands are packed by hiredis's C packer, as redis-py's synchronous client does
      when hiredis is installed (its asyncio client never does): a script call of a
      hundred arguments took 72 us in Python and 8 us in C here. The same bytes; a
      value hiredis cannot pack (None, a bool) raises redis-py's ``DataError`` too.
    - A write on an open connection is not wrapped in ``asyncio.wait_for(...,
      socket_timeout)``: on Python 3.11 that costs a task and two callbacks per
      command, a third of a chain step's event-loop callbacks. The read of every
      reply keeps the timeout, so a server that stops answering is still noticed in
      ``socket_timeout``; a write that fills the socket buffer of a server that
      stopped reading waits until it reads again (or the connection drops).
    """

    socket_timeout: float | None
    is_connected: bool

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = _PACKER.pack(*args)
        return packed

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        parent: Any = super()
        timeout = self.socket_timeout
        if not timeout or not self.is_connected:  # connecting reads replies: bounded
            await parent.send_packed_command(command, check_health)
            return
        if check_health:
            await parent.check_health()
        self.socket_timeout = None
        try:
            await parent.send_packed_command(command, check_health=False)
        finally:
            self.socket_timeout = timeout


def _tuned(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    """``cls`` (redis-py's TCP, unix-socket or TLS connection) with :class:`_Tuned`."""
    key = f"{cls.__module__}.{cls.__qualname__}"
    if key not in _TUNED:
        _TUNED[key] = type(cls.__name__, (_Tuned, cls), {})
    return _TUNED[key]


def _driver_info() -> dict[str, Any]:
    """Who is connecting, for CLIENT SETINFO, worked out once per client.

    Left to itself, redis-py reads its own version from the installed package's
    metadata for every new connection (about 1 ms each); a worker that opens fifty
    connections in a burst of activities paid that fifty times. Older redis-py (no
    ``redis.driver_info``) keeps its own default.
    """

    try:
        from redis.driver_info import DriverInfo
    except ImportError:
        return {}
    info = DriverInfo(name="redis-py", lib_version=redis.__version__)
    return {"driver_info": info.add_upstream_driver("taskloom", __version__)}


def make_client(url: str) -> Redis:
    """A ``decode_responses`` client that reconnects with capped exponential backoff."""
    client = Redis.from_url(
        url,
        decode_responses=True,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=6),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
        max_connections=256,
        **_driver_info(),
    )
    pool = client.connection_pool
    if HIREDIS_AVAILABLE:  # a dependency (redis[hiredis]), unless someone removed it
        pool.connection_class = _tuned(pool.connection_class)
    return client


@dataclass
class Connection:
    """An open Redis client, and the embedded server behind it if there is one."""

    client: Redis
    url: str
    embedded: EmbeddedRedis | None = None

    def __repr__(self) -> str:
        return f"Connection(url={redact_url(self.url)!r}, embedded={self.embedded!r})"

    async def close(self) -> None:
        """Close the client; stop the embedded server if this process started it and
        does not keep it."""
        await self.client.aclose()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)


async def connect(settings: Settings) -> Connection:
    """Connect as ``settings`` say; with no URL, start or reuse the embedded Redis (kept
    running after this process if ``settings.embedded_keep``)."""
    embedded = None
    url = settings.redis_url
    if url is None:
        from taskloom.engine.embedded import EmbeddedRedis  # only processes without a URL need it

        fsync = "always" if settings.durability == "fsync" else settings.appendfsync
        embedded = EmbeddedRedis(
            settings.data_dir,
            appendfsync=fsync,
            keep=bool(settings.embedded_keep),
            idle=settings.embedded_idle,
        )
        # In this thread, not a helper thread: the server's parent-death signal follows
        # the thread that started it, and it must live as long as this process.
        embedded.start()
        url = embedded.url
    client = make_client(url)
    try:
        await client.ping()
    except RedisError as exc:
        await client.aclose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        raise RedisUnavailableError(
            f"cannot reach Redis at {redact_url(url)} ({redact_text(str(exc))}); start "
            f"Redis there, fix TASKLOOM_REDIS_URL, or unset it to use the embedded server"
        ) from None
    return Connection(client=client, url=url, embedded=embedded)
