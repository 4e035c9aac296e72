"""Activity claims: the heartbeat renews a claim once it is a heartbeat interval old,
not at every heartbeat, and a long activity keeps its claim for as long as it runs."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from redis.asyncio import Redis

from taskloom import Context, Orchestrator, Worker, activity, activity_info, workflow
from tests.helpers import running, wait_until

pytestmark = pytest.mark.anyio

RAN: Counter[str] = Counter()
GATE = asyncio.Event()
LEASE = 0.4


@activity(name="claims.long")
async def long_one() -> str:
    RAN[activity_info().run_id] += 1
    await GATE.wait()
    return "done"


@workflow(name="claims.one")
async def one(ctx: Context) -> str:
    return await ctx.run(long_one)


async def test_a_claim_is_renewed_once_it_is_a_heartbeat_interval_old(
    orch: Orchestrator,
) -> None:
    worker = Worker(orch.store, workflows=[one], activities=[long_one], lease_ttl=LEASE)
    runner, interval = worker.activities, 0.25
    old, young, unknown = ("r", "1"), ("r", "2"), ("r", "3")
    runner.inflight.update(dict.fromkeys((old, young, unknown)))
    runner.claims_sent([old], 100.0)
    runner.claims_sent([young, ("gone", "1")], 100.0 + interval / 2)
    assert runner.claims_due(100.0 + interval, interval) == [old, unknown]
    assert ("gone", "1") not in runner.claimed, "claims no longer in flight are forgotten"
    runner.claims_sent([old, unknown], 100.0 + interval)
    assert runner.claims_due(100.0 + 1.5 * interval, interval) == [young]


async def test_a_long_activity_keeps_its_claim_across_leases(
    orch: Orchestrator, client: Redis
) -> None:
    GATE.clear()
    worker = Worker(orch.store, workflows=[one], activities=[long_one], lease_ttl=LEASE)
    async with running(worker):
        handle = await orch.start(one)
        await wait_until(lambda: RAN[handle.run_id], "the activity started")
        claims = await wait_until(
            lambda: client.keys(f"{orch.store.keys.prefix}:run:{{{handle.run_id}}}:claim:*"),
            "its claim",
        )
        owners = []
        until = time.monotonic() + 5 * LEASE  # five leases: renewed at least twice

        async def sample() -> bool:
            owners.append(await client.get(claims[0]))
            return time.monotonic() > until

        await wait_until(sample, "five leases to pass", timeout=30)
        GATE.set()
        assert await handle.result(timeout=10) == "done"
    assert set(owners) == {worker.worker_id}, "the claim never lapsed"
    assert RAN[handle.run_id] == 1
