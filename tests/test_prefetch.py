"""Prefetch: a busy worker claims short activities ahead of its free slots, never long
ones, and hands back what it holds when it stops."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from taskloom import Context, Orchestrator, activity, activity_info, workflow
from tests.helpers import running

pytestmark = pytest.mark.anyio

RAN: Counter[tuple[str, int]] = Counter()  # (worker id, item) -> executions
GATE = asyncio.Event()


@activity(name="prefetch.nap")
async def nap(i: int, seconds: float) -> int:
    RAN[(activity_info().worker_id, i)] += 1
    await asyncio.sleep(seconds)
    return i


@activity(name="prefetch.gate")
async def gate(i: int) -> int:
    RAN[(activity_info().worker_id, i)] += 1
    await GATE.wait()
    return i


@workflow(name="prefetch.naps")
async def naps(ctx: Context, n: int, seconds: float) -> list[int]:
    return await ctx.gather(*(ctx.run(nap, i, seconds) for i in range(n)))


@workflow(name="prefetch.gated")
async def gated(ctx: Context) -> list[int]:
    return await ctx.gather(ctx.run(gate, 0), ctx.run(nap, 1, 0.0), ctx.run(nap, 2, 0.0))


DEFS: dict[str, Any] = {"workflows": [naps, gated], "activities": [nap, gate]}


@pytest.fixture(autouse=True)
def _reset() -> None:
    global GATE  # an asyncio.Event belongs to the loop of the test that first awaits it
    RAN.clear()
    GATE = asyncio.Event()


async def test_long_activities_stay_in_the_queue_for_an_idle_worker(
    orch: Orchestrator, make_worker: Any
) -> None:
    busy = make_worker(concurrency=1, **DEFS)
    async with running(busy):
        # Teach the busy worker that its activities are long (0.6 s > the horizon).
        assert await (await orch.start(naps, 1, 0.6)).result(timeout=10) == [0]
        idle = make_worker(concurrency=4, **DEFS)
        async with running(idle):
            handle = await orch.start(naps, 5, 0.6)
            assert await handle.result(timeout=10) == list(range(5))
    on_busy = sum(n for (w, _), n in RAN.items() if w == busy.worker_id)
    # The warm-up, plus one of the five: a second one would have waited in the busy
    # worker for a slot while the idle worker had three free.
    assert on_busy == 2, RAN
    assert sum(RAN.values()) == 6


async def test_a_stopping_worker_hands_back_what_it_prefetched(
    orch: Orchestrator, make_worker: Any
) -> None:
    # Long leases: a claim that was not given back would keep the step from the other
    # worker for 30 s, far past this test's timeouts.
    first = make_worker(concurrency=1, lease_ttl=30.0, **DEFS)
    serving = asyncio.create_task(first.run())
    await first.started.wait()
    await (await orch.start(naps, 3, 0.0)).result(timeout=10)  # short: it will prefetch
    RAN.clear()
    handle = await orch.start(gated)
    while first.prefetched < 1:  # step 0 holds the slot, step 1 or 2 waits for it
        await asyncio.sleep(0.01)
    first.stop()
    while first.prefetched:
        await asyncio.sleep(0.01)

    second = make_worker(concurrency=2, lease_ttl=30.0, **DEFS)
    async with running(second):
        # Both quick steps run on the second worker while the gate still holds the first.
        async with asyncio.timeout(10):
            while sum(n for (w, i), n in RAN.items() if w == second.worker_id) < 2:
                await asyncio.sleep(0.01)
        GATE.set()
        await serving
        assert await handle.result(timeout=10) == [0, 1, 2]
    assert {i: n for (w, i), n in RAN.items() if w == second.worker_id} == {1: 1, 2: 1}
    assert sum(RAN.values()) == 3, f"each step ran once: {RAN}"
