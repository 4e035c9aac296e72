"""Waiting on many runs at once: the waits share a few connections (issue 17).

Before, every ``handle.result()`` held a pooled connection in an ``XREAD BLOCK`` of
its own: 400 waiters in one process failed 144 times with ``MaxConnectionsError``.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis

from taskloom import Context, Orchestrator, RunNotFoundError, Settings, Store, Worker, workflow
from taskloom.engine.follow import StreamFollower
from tests.helpers import running, wait_until

pytestmark = pytest.mark.anyio

WAITERS = 2_000
POOL = 16
"""The waiting client's pool: far fewer connections than waiters."""


@workflow(name="follow.square")
async def square(ctx: Context, n: int) -> int:
    return n * n


@workflow(name="follow.forever")
async def forever(ctx: Context) -> None:
    await ctx.wait_for_signal("never")


async def _connections(client: Redis, name: str) -> list[dict[str, Any]]:
    """The server's CLIENT LIST entries of the clients named ``name``."""
    listed: list[dict[str, Any]] = await client.client_list()
    return [c for c in listed if c.get("name") == name]


async def test_two_thousand_waiters_all_return_over_a_bounded_number_of_connections(
    redis_url: str, prefix: str, store: Store, client: Redis
) -> None:
    name = f"waiters-{uuid.uuid4().hex[:8]}"
    url = f"{redis_url}?client_name={name}&max_connections={POOL}"
    async with Orchestrator(settings=Settings(redis_url=url, key_prefix=prefix)) as orch:
        handles = await asyncio.gather(*(orch.start(square, n) for n in range(WAITERS)))
        stuck = await orch.start(forever)
        waiters = [asyncio.create_task(h.result()) for h in handles]
        impatient = asyncio.create_task(stuck.result(timeout=0.5))
        cancelled = waiters[:10]
        await wait_until(
            lambda: orch.follower.waiting >= WAITERS, "every waiter waiting", timeout=120
        )
        named = await _connections(client, name)
        assert 0 < len(named) <= POOL
        assert sum(c["cmd"] == "xread" for c in named) <= orch.follower.lanes
        with pytest.raises(TimeoutError):
            await impatient  # its time-out ends it, and only it
        for task in cancelled:
            task.cancel()

        async with running(Worker(store, workflows=[square, forever], concurrency=64)):
            results = await asyncio.gather(*waiters[10:])
        assert results == [n * n for n in range(10, WAITERS)]
        assert all(task.cancelled() for task in cancelled)
        assert orch.follower.waiting == 0
        assert 0 < len(await _connections(client, name)) <= POOL


async def test_a_new_waiter_is_served_while_another_read_blocks(client: Redis, prefix: str) -> None:
    follower = StreamFollower(client, lanes=2, block_ms=3_000)
    quiet, busy = f"{prefix}:quiet", f"{prefix}:busy"
    waiting = asyncio.create_task(follower.read(quiet, "0-0", block_ms=60_000))
    await wait_until(lambda: follower.reading == 1, "the first read out")
    served = asyncio.create_task(follower.read(busy, "0-0", block_ms=60_000))
    await wait_until(lambda: follower.reading == 2, "a second lane for the new key")
    entry = await client.xadd(busy, {"n": "1"})
    assert await served == [(entry, {"n": "1"})]
    assert not waiting.done()
    waiting.cancel()
    await follower.aclose()


async def test_waiters_past_the_lanes_share_the_next_read(client: Redis, prefix: str) -> None:
    follower = StreamFollower(client, lanes=1, block_ms=200)
    keys = [f"{prefix}:s{i}" for i in range(5)]
    first = asyncio.create_task(follower.read(keys[0], "0-0", block_ms=60_000))
    await wait_until(lambda: follower.reading == 1, "the one lane out")
    rest = [asyncio.create_task(follower.read(k, "0-0", block_ms=60_000)) for k in keys[1:]]
    entries = [await client.xadd(k, {"k": k}) for k in keys]
    got = await asyncio.gather(first, *rest)
    assert got == [[(e, {"k": k})] for e, k in zip(entries, keys, strict=True)]
    assert follower.reading <= 1
    await follower.aclose()


async def test_a_read_after_an_id_gets_only_the_later_entries_and_times_out_empty(
    client: Redis, prefix: str
) -> None:
    follower = StreamFollower(client)
    key = f"{prefix}:log"
    one = await client.xadd(key, {"n": "1"})
    two = await client.xadd(key, {"n": "2"})
    early, late = await asyncio.gather(
        follower.read(key, "0-0", block_ms=5_000), follower.read(key, one, block_ms=5_000)
    )
    assert early == [(one, {"n": "1"}), (two, {"n": "2"})]
    assert late == [(two, {"n": "2"})]
    assert await follower.read(key, two, block_ms=50) == []
    await follower.aclose()


async def test_an_unknown_run_is_still_not_found(orch: Orchestrator) -> None:
    with pytest.raises(RunNotFoundError):
        await orch.handle("no-such-run").result(timeout=5)
