"""Connecting to Redis: the configured URL, or the embedded server under the data dir."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import redis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import AbstractConnection, SSLConnection
from redis.asyncio.connection import Connection as TCPConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    MaxConnectionsError,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

from taskloom.engine.clustering import MAX_IN_FLIGHT, ClusterClient, cluster_url, seed_nodes
from taskloom.engine.refusals import (
    NotTLSError,
    SpeaksTLSError,
    Where,
    cluster_node,
    is_refusal,
    refusal,
    refused_replies,
)
from taskloom.errors import RedisRefusedError, RedisUnavailableError
from taskloom.redaction import redact_text, redact_url
from taskloom.settings import Settings
from taskloom.version import __version__

if TYPE_CHECKING:
    from taskloom.engine.embedded import EmbeddedRedis

__all__ = ["Connection", "check_mode", "connect", "make_client"]


T = TypeVar("T")

# Untyped in redis-py 8 (typed in 5-7): the ignore covers both.
_PACKER: Any = HiredisRespSerializer()  # type: ignore[no-untyped-call,unused-ignore]
_pack: Any = None  # hiredis's packer; without hiredis there is no _Tuned to use it
if HIREDIS_AVAILABLE:
    from hiredis import pack_command as _pack
_TUNED: dict[str, type[AbstractConnection]] = {}
PLAIN_CHECK_AFTER_S = 0.5
"""A TLS handshake still unanswered after this long is checked for a plain server."""


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
        # Straight to hiredis: redis-py's packer first rebuilds the arguments in a
        # Python generator (an isinstance per argument, thousands per batch of script
        # calls). Only a command name of two words (``SCRIPT LOAD``) is split as it
        # splits them; what hiredis refuses (a bytearray, None) goes its way, which
        # converts it or raises its DataError.
        first = args[0]
        if " " not in first if isinstance(first, str) else b" " not in first:
            try:
                return [_pack(args)]
            except TypeError:
                pass
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


class _TLSCheck:
    """A TLS connection that notices a server speaking plain Redis on its port.

    A TLS ClientHello sent to plain Redis gets no answer: the server waits for the end
    of a command line that never comes, and the handshake would hang until the
    connect timeout, then be retried as an outage. When the handshake is still
    unanswered after :data:`PLAIN_CHECK_AFTER_S`, a second, plain connection sends
    ``PING``; a Redis reply (``+PONG``, ``-NOAUTH ...``) means the port is not TLS, and
    the connect fails with :class:`NotTLSError`, a refusal. A TLS server merely slow to
    answer ignores the plain ``PING`` and the handshake goes on.
    """

    host: str
    port: int

    async def _connect(self) -> None:
        parent: Any = super()
        handshake = asyncio.ensure_future(parent._connect())
        try:
            done, _ = await asyncio.wait({handshake}, timeout=PLAIN_CHECK_AFTER_S)
            if not done and await _answers_plain_redis(self.host, self.port):
                raise NotTLSError(f"{self.host}:{self.port} answered a plain PING")
            await handshake
        finally:
            if not handshake.done():
                handshake.cancel()
                with contextlib.suppress(BaseException):
                    await handshake


class _PlainCheck:
    """A plain TCP connection that notices a server speaking only TLS on its port.

    Redis with a ``tls-port`` drops a plain client at its first command (the bytes are
    no TLS ClientHello): to a retry on connection errors that is an outage, retried for
    ~40 s and then reported as "cannot reach Redis". When the first commands of a new
    connection fail so, a TLS handshake is tried on the same port; a server that
    answers it serves TLS there, and the connect fails with :class:`SpeaksTLSError`, a
    refusal naming the fix (``rediss://``). A server that merely went away answers no
    handshake and the error stays an outage.
    """

    host: str
    port: int

    async def on_connect_check_health(self, check_health: bool = True) -> None:
        parent: Any = super()
        try:
            await parent.on_connect_check_health(check_health=check_health)
        except RedisConnectionError as exc:
            if not is_refusal(exc) and await _answers_tls(self.host, self.port):
                raise RedisConnectionError(str(exc)) from SpeaksTLSError(
                    f"{self.host}:{self.port} answered a TLS handshake"
                )
            raise


async def _answers_tls(host: str, port: int) -> bool:
    """Whether the server at ``host:port`` answers a TLS handshake (its certificate
    unchecked: only whether it speaks TLS is asked)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(1.0):
            _, writer = await asyncio.open_connection(host, port, ssl=context)
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
    except ssl.SSLError as exc:  # answered, with an alert (a client certificate asked)
        return "ALERT" in str(exc)
    except (OSError, TimeoutError):
        return False
    return True


async def _answers_plain_redis(host: str, port: int) -> bool:
    """Whether the server at ``host:port`` replies to a plain-text ``PING`` as Redis."""
    try:
        async with asyncio.timeout(1.0):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(b"PING\r\n")
                reply = await reader.read(16)
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return False
    return reply[:1] in (b"+", b"-")


def _tuned(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    """``cls`` (redis-py's TCP, unix-socket or TLS connection) with :class:`_Tuned`
    (when hiredis is there to pack commands), for TLS :class:`_TLSCheck` and for plain
    TCP :class:`_PlainCheck`."""
    key = f"{cls.__module__}.{cls.__qualname__}"
    if key not in _TUNED:
        bases: tuple[type, ...] = (_Tuned,) if HIREDIS_AVAILABLE else ()
        if issubclass(cls, SSLConnection):
            bases += (_TLSCheck,)
        elif issubclass(cls, TCPConnection):
            bases += (_PlainCheck,)
        _TUNED[key] = type(cls.__name__, (*bases, cls), {}) if bases else cls
    return _TUNED[key]


class _OutageRetry(Retry):
    """redis-py's retry with backoff on connection errors and timeouts, except for a
    refusal (:func:`~taskloom.engine.refusals.is_refusal`): a refused login, a failed
    TLS handshake. redis-py files those under ``ConnectionError``, and both its
    connection and its command retry them, one inside the other: a wrong password took
    6 s and a missing one 42 s to report. Here they end the call at once."""

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        backoff: Any = self._backoff
        backoff.reset()
        failures = 0
        while True:
            try:
                return await do()
            except self._supported_errors as error:
                failures += 1
                await (fail(error, failures) if with_failure_count else fail(error))
                given_up = 0 <= self._retries < failures
                if given_up or is_refusal(error) or not (is_retryable or _always)(error):
                    raise
                delay = backoff.compute(failures)
                if delay > 0:
                    await asyncio.sleep(delay)


def _always(_: Exception) -> bool:
    return True


class _QueueingPool(ConnectionPool):
    """redis-py's connection pool, except that a caller past ``max_connections`` waits
    its turn for a connection to come back instead of failing at once with
    ``MaxConnectionsError`` (a burst of a thousand calls in one tick would). The fast
    path, a free connection or room for a new one, is redis-py's own. Each release
    wakes the first in line; a turn that hears nothing for a second tries again anyway
    (room can also appear without a release: a connection lost and collected)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turns: deque[asyncio.Future[None]] = deque()

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        parent: Any = super()
        if not self._turns:  # no one waiting: take one, as redis-py does
            with contextlib.suppress(MaxConnectionsError):
                return await parent.get_connection(*args, **kwargs)
        front = False
        while True:
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if front:  # woken but beaten to the connection: first in line again
                self._turns.appendleft(turn)
            else:
                self._turns.append(turn)
            try:
                await asyncio.wait({turn}, timeout=1.0)
            except BaseException:
                if turn.done():
                    self._pass_turn()  # woken, then cancelled: the next one's turn
                else:
                    self._turns.remove(turn)
                raise
            if not turn.done():
                self._turns.remove(turn)
            with contextlib.suppress(MaxConnectionsError):
                return await parent.get_connection(*args, **kwargs)
            front = True

    async def release(self, connection: AbstractConnection) -> None:
        try:
            await super().release(connection)
        finally:
            self._pass_turn()

    def _pass_turn(self) -> None:
        if self._turns:  # it holds only turns not yet given
            self._turns.popleft().set_result(None)


class _Client(Redis):
    """redis-py's asyncio client that raises a refusal as a
    :class:`~taskloom.errors.RedisRefusedError` saying what to fix, never as a redis-py
    error that code riding out outages would retry (``ride_out``, the worker loops)."""

    where: Where = Where()
    """The server and user, as the messages name them."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        parent: Any = super()
        try:
            return await parent.execute_command(*args, **options)
        except RedisError as exc:
            refused = refusal(exc, self.where)
            if refused is None:
                raise
            raise refused from exc

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipe = _Pipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.where = self.where
        return pipe


class _Pipeline(Pipeline):
    """A pipeline of :class:`_Client`: a refusal raised, or returned among the replies
    (``raise_on_error=False``), is a :class:`~taskloom.errors.RedisRefusedError`."""

    where: Where = Where()

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        try:
            replies: list[Any] = await super().execute(raise_on_error)
        except RedisError as exc:
            refused = refusal(exc, self.where)
            if refused is None:
                raise
            raise refused from exc
        return refused_replies(replies, self.where)


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


def make_client(url: str, *, key_prefix: str = "tl", cluster: bool | None = None) -> Redis:
    """A ``decode_responses`` client that reconnects with capped exponential backoff
    while Redis is out of reach, raises :class:`~taskloom.errors.RedisRefusedError` at
    once when Redis refuses (a login, a command, a TLS handshake), and queues callers
    for a connection past ``max_connections`` (256) instead of failing them.
    ``key_prefix``: the keys an ACL user is told to be granted when it lacks them.

    A ``redis+cluster://`` / ``rediss+cluster://`` URL, or any URL with ``cluster``
    true (``TASKLOOM_REDIS_CLUSTER``), gives redis-py's Redis Cluster client, which
    answers the same commands (see :mod:`taskloom.engine.clustering`)."""
    url, is_cluster = cluster_url(url, cluster=cluster)
    if is_cluster:
        return _cluster_client(url, key_prefix=key_prefix)
    pool = _QueueingPool.from_url(
        url,
        decode_responses=True,
        retry=_OutageRetry(ExponentialBackoff(cap=2.0, base=0.05), retries=6),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
        max_connections=256,
        **_driver_info(),
    )
    tls = issubclass(pool.connection_class, SSLConnection)
    pool.connection_class = _tuned(pool.connection_class)
    client = _Client(connection_pool=pool)
    client.auto_close_connection_pool = True  # closing the client closes its pool
    client.where = Where.of(pool.connection_kwargs, tls=tls, prefix=key_prefix)
    return client


def _cluster_client(url: str, *, key_prefix: str) -> Redis:
    """redis-py's cluster client as :func:`make_client` tunes the single one: the same
    retry policy (refusals end a call at once), connection class and driver info;
    every node the URL names is a node it may start from (:func:`seed_nodes`)."""
    url, seeds = seed_nodes(url)
    client: Any = ClusterClient.from_url(
        url,
        startup_nodes=[ClusterNode(host, port) for host, port in seeds] or None,
        decode_responses=True,
        retry=_OutageRetry(ExponentialBackoff(cap=2.0, base=0.05), retries=6),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
        max_connections=MAX_IN_FLIGHT,
        **_driver_info(),
    )
    kwargs = client.connection_kwargs
    tls = issubclass(kwargs["connection_class"], SSLConnection)
    kwargs["connection_class"] = _tuned(kwargs["connection_class"])  # nodes found later
    for node in client.startup_nodes:
        node.connection_class = kwargs["connection_class"]
    first = client.startup_nodes[0]
    where = {**kwargs, "host": first.host, "port": first.port}
    client.where = Where.of(where, tls=tls, prefix=key_prefix, cluster=True)
    # Typed as the single client, whose commands it answers: the store and the loops
    # above it take either.
    single: Redis = client
    return single


async def check_mode(client: Redis) -> None:
    """Raise :class:`~taskloom.errors.RedisRefusedError` if ``client`` (a single-Redis
    client) reaches a node of a Redis Cluster, or (a cluster client) a Redis without
    cluster mode; at connect time, rather than at the first redirect."""
    where: Where = getattr(client, "where", Where())
    if where.cluster:
        return  # a Redis without cluster mode failed the cluster client's first command
    try:
        info = await client.info("cluster")
    except ResponseError:
        return  # INFO refused (a managed service's ACL): the first redirect tells
    if int(info.get("cluster_enabled", 0)):
        raise cluster_node(where)


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
    client = make_client(url, key_prefix=settings.key_prefix, cluster=settings.redis_cluster)
    try:
        await client.ping()
        await check_mode(client)
    except (RedisError, RedisClusterException, RedisRefusedError) as exc:
        await client.aclose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        if isinstance(exc, RedisRefusedError):
            raise
        raise RedisUnavailableError(
            f"cannot reach Redis at {redact_url(url)} ({redact_text(str(exc))}); start "
            f"Redis there, fix TASKLOOM_REDIS_URL, or unset it to use the embedded server"
        ) from None
    return Connection(client=client, url=url, embedded=embedded)
