"""What every part of the store shares: one client, the key layout, the Lua scripts.

:class:`StoreBase` holds them once for :class:`~taskloom.engine.store.Store`, whose parts
(runs, log, leases, claims, outcomes, queues) are mixins over it; beside it are the clock
the stored times use, the retry loop for calls that must outlive a Redis outage, and the
helpers that batch one script call per run into a pipeline.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from taskloom.engine.clustering import is_cluster, wait_for_fsync
from taskloom.engine.keys import Keys
from taskloom.luascripts import LuaScripts

__all__ = ["RIDE_OUT_REMIND_S", "StoreBase", "group_by_run", "now_ms", "raise_first", "ride_out"]

T = TypeVar("T")


def now_ms() -> int:
    """Wall-clock milliseconds, as stored in leases and timers."""
    return int(time.time() * 1000)


RIDE_OUT_REMIND_S = 30.0
"""While :func:`ride_out` keeps missing, it says so again at most this often (the misses
in between are logged at DEBUG); a call that ran at least this long before it failed
met a new outage, whose backoff starts over."""


async def ride_out(call: Callable[[], Awaitable[T]], *, what: str, log: logging.Logger) -> T:
    """``call()``'s result, retrying while Redis cannot be reached (0.05 s, doubling, at
    most 5 s apart; each try is also the client's own retries, a few seconds). A miss is
    logged as ``what (error); retrying in ...``: at WARNING the first of an outage and
    then once every :data:`RIDE_OUT_REMIND_S`, at DEBUG in between (a hundred steps
    holding outcomes through a 10 s outage logged ~700 lines)."""
    delay, warned = 0.05, -math.inf
    while True:
        started = time.monotonic()
        try:
            return await call()
        except RedisError as exc:
            now = time.monotonic()
            if now - started >= RIDE_OUT_REMIND_S:  # it ran well meanwhile: a new outage
                delay, warned = 0.05, -math.inf
            level = logging.DEBUG
            if now - warned >= RIDE_OUT_REMIND_S:
                level, warned = logging.WARNING, now
            log.log(level, "%s (%s); retrying in %.2fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


class StoreBase:
    """The client, keys and scripts that every part of the store reads and writes with."""

    def __init__(self, client: Redis, *, prefix: str = "tl") -> None:
        self.client = client
        # redis-py's stubs type replies as unions of every shape; we rely on
        # decode_responses=True and read replies as the documented shapes.
        self.raw: Any = client
        self.keys = Keys(prefix)
        self.scripts = LuaScripts(self.raw, package="taskloom")
        self.waitaof = False
        """Whether each batch of writes that creates a run or records or schedules a step
        ends with ``WAITAOF 1 0``: it returns once they are on the Redis host's disk
        (``TASKLOOM_DURABILITY=fsync`` on Redis ≥ 7.2; see :mod:`taskloom.engine.durability`)."""

    def _sync(self, pipe: Any) -> None:
        """End ``pipe`` with WAITAOF when the durability level asks for it: one fsync
        wait shared by every write of the batch, in the same round trip (on a cluster,
        one on each node the batch writes to:
        :func:`~taskloom.engine.clustering.wait_for_fsync`)."""
        if not self.waitaof:
            return
        if is_cluster(self.client):
            wait_for_fsync(self.raw, pipe)
        else:
            pipe.execute_command("WAITAOF", 1, 0, 0)

    async def _call(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self.scripts.call(name, keys, args)


def group_by_run(items: Sequence[tuple[Any, ...]]) -> dict[str, list[int]]:
    """Positions of ``items`` by their first field, the run id (one script call per run:
    a run's keys share a hash slot, several runs' keys need not)."""
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(item[0], []).append(i)
    return groups


def raise_first(replies: list[Any]) -> list[Any]:
    """Raise the first error among pipeline replies (they come back as objects)."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies
