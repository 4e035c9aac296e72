"""Reading a run's outcome: ``handle.result()`` and ``handle.status()`` read what the
run's last write recorded, not its log, and a waiter wakes once, not per event (issue 18).

Before, ``result()`` read the run's whole log (2N+2 events for N steps) for one value,
and a waiter on a long chain woke for every event appended to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from taskloom import (
    Context,
    Orchestrator,
    RunCancelledError,
    RunFailedError,
    RunHandle,
    Settings,
    Store,
    Worker,
    activity,
    workflow,
)
from taskloom.engine.follow import Entry, StreamFollower
from tests.helpers import own_socket_redis, running, wait_until

pytestmark = pytest.mark.anyio

STEPS = 200


@activity(name="results.step")
async def step(i: int) -> int:
    return i


@workflow(name="results.chain")
async def chain(ctx: Context, n: int) -> int:
    total = 0
    for i in range(n):
        total += await ctx.run(step, i)
    return total


@workflow(name="results.big")
async def big(ctx: Context, size: int) -> str:
    return "x" * size


@workflow(name="results.broken")
async def broken(ctx: Context) -> None:
    await ctx.run(step, 1)
    raise ValueError("the numbers do not add up")


@workflow(name="results.forever")
async def forever(ctx: Context) -> None:
    await ctx.wait_for_signal("never")


FLOWS = [chain, big, broken, forever]


class CountingFollower(StreamFollower):
    """A real follower that counts how often a waiter was woken (a read returned)."""

    def __init__(self, client: Redis) -> None:
        super().__init__(client)
        self.woken = 0

    async def read(self, key: str, after: str, *, block_ms: int) -> list[Entry]:
        entries = await super().read(key, after, block_ms=block_ms)
        self.woken += 1
        return entries


@pytest.fixture(scope="module")
def own_server() -> Iterator[str]:
    """A redis-server of this module's own (on a unix socket): its command statistics
    count only what these tests send."""
    with own_socket_redis() as sock:
        yield f"unix://{sock}"


@pytest.fixture
async def own(own_server: str) -> AsyncIterator[Orchestrator]:
    client = Redis.from_url(own_server, decode_responses=True)
    orch = Orchestrator(client=client, settings=Settings(redis_url=own_server, key_prefix="res"))
    await orch.connect()
    yield orch
    await orch.close()
    await client.aclose()


async def _commands(client: Redis) -> dict[str, int]:
    stats: dict[str, Any] = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def test_result_and_status_of_a_long_chain_read_the_record_not_the_log(
    own: Orchestrator,
) -> None:
    handle = await own.start(chain, STEPS)
    async with running(Worker(own.store, workflows=FLOWS, activities=[step], concurrency=4)):
        assert await handle.result(timeout=120) == sum(range(STEPS))
    assert len(await own.store.read_log(handle.run_id)) == 2 * STEPS + 2
    client = own.store.raw
    await client.config_resetstat()
    fresh = own.handle(handle.run_id)
    assert await fresh.result(timeout=10) == sum(range(STEPS))
    assert await fresh.status() == "completed"
    calls = await _commands(client)
    calls.pop("config|resetstat", None)
    assert not {c for c in calls if c.startswith(("xrange", "xread", "xrevrange"))}, calls
    assert sum(calls.values()) <= 3, calls  # an HMGET each (and the INFO asking)


async def test_a_waiter_on_a_long_chain_wakes_once_not_per_event(
    orch: Orchestrator, store: Store, client: Redis
) -> None:
    handle = await orch.start(chain, STEPS)
    follower = CountingFollower(client)
    waiter = RunHandle(store, handle.run_id, follower=follower)
    waiting = asyncio.create_task(waiter.result(timeout=120))
    await wait_until(lambda: follower.waiting == 1, "the waiter waiting")
    started = asyncio.get_running_loop().time()
    async with running(Worker(store, workflows=FLOWS, activities=[step], concurrency=4)):
        assert await waiting == sum(range(STEPS))
    took = asyncio.get_running_loop().time() - started
    # Woken when the run ended, and once per 5 s of quiet (a check the run still exists);
    # before, once per batch of the 2N+2 events.
    assert follower.woken <= 2 + int(took / 5), follower.woken
    await follower.aclose()


async def test_a_result_larger_than_the_payload_threshold_comes_back_whole(
    orch: Orchestrator, store: Store
) -> None:
    size = orch.settings.payload_threshold * 2
    handle = await orch.start(big, size)
    async with running(Worker(store, workflows=FLOWS, activities=[step])):
        assert await handle.result(timeout=60) == "x" * size
    assert await handle.status() == "completed"


async def test_failed_and_cancelled_runs_raise_as_before(orch: Orchestrator, store: Store) -> None:
    failing = await orch.start(broken)
    stuck = await orch.start(forever)
    waiters = [asyncio.create_task(h.result(timeout=60)) for h in (failing, stuck)]
    async with running(Worker(store, workflows=FLOWS, activities=[step])):
        with pytest.raises(RunFailedError, match="ValueError: the numbers do not add up") as err:
            await waiters[0]
        assert err.value.error["type"] == "ValueError"
        await stuck.cancel()
        with pytest.raises(RunCancelledError):
            await waiters[1]
    assert await failing.status() == "failed"
    assert await stuck.status() == "cancelled"
    with pytest.raises(RunFailedError):
        await orch.handle(failing.run_id).result(timeout=5)  # ended before the call
