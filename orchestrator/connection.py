"""Connecting to Redis: the configured URL, or the embedded server under the data dir."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import RedisUnavailableError
from .settings import Settings

if TYPE_CHECKING:
    from .embedded import EmbeddedRedis

__all__ = ["Connection", "connect", "make_client"]


def make_client(url: str) -> Redis:
    """A ``decode_responses`` client that reconnects with capped exponential backoff."""
    return Redis.from_url(
        url,
        decode_responses=True,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=6),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
        max_connections=256,
    )


@dataclass
class Connection:
    """An open Redis client, and the embedded server behind it if there is one."""

    client: Redis
    url: str
    embedded: EmbeddedRedis | None = None

    async def close(self) -> None:
        """Close the client; stop the embedded server if this process started it."""
        await self.client.aclose()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)


async def connect(settings: Settings) -> Connection:
    """Connect as ``settings`` say; with no URL, start or reuse the embedded Redis."""
    embedded = None
    url = settings.redis_url
    if url is None:
        from .embedded import EmbeddedRedis  # only processes without a URL need it

        embedded = EmbeddedRedis(settings.data_dir, appendfsync=settings.appendfsync)
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
            f"cannot reach Redis at {url} ({exc}); start Redis there, fix "
            f"TASKLOOM_REDIS_URL, or unset it to use the embedded server"
        ) from None
    return Connection(client=client, url=url, embedded=embedded)
