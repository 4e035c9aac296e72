"""The heartbeat runs on its own: nothing else a worker does periodically delays it.

A cold worker on a busy machine lost the lease of the run it was making its first model
call for (CI, stop 14): its recovery pass (eight round trips, each waiting for the GIL
behind the SDK's import in a thread) held the heartbeat, which came after it in one loop,
past the 1 s lease, while no single stall of the loop reached half a lease. The other
worker took the run over and dispatched the call again.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from taskloom import Context, Orchestrator, Worker, activity, activity_info, workflow
from tests.helpers import running, wait_until

pytestmark = pytest.mark.anyio

RAN: Counter[str] = Counter()
GATE = asyncio.Event()
LEASE = 1.0  # the default: a shorter one could lapse for real on a loaded machine


@activity(name="heartbeat.long")
async def long_one() -> str:
    RAN[activity_info().run_id] += 1
    await GATE.wait()
    return "done"


@workflow(name="heartbeat.one")
async def one(ctx: Context) -> str:
    return await ctx.run(long_one)


async def test_a_slow_recovery_pass_does_not_delay_the_heartbeat(orch: Orchestrator) -> None:
    GATE.clear()
    slow = Worker(orch.store, workflows=[one], activities=[long_one], lease_ttl=LEASE)
    recover = slow.maintenance.recover

    async def slow_recover() -> None:  # each pass takes three leases
        await asyncio.sleep(3 * LEASE)
        await recover()

    slow.maintenance.recover = slow_recover  # type: ignore[method-assign]
    other = Worker(orch.store, workflows=[one], activities=[long_one], lease_ttl=LEASE)
    async with running(slow):
        handle = await orch.start(one)
        await wait_until(lambda: RAN[handle.run_id], "the activity started")
        async with running(other):  # takes the run over if its lease ever lapses
            until = time.monotonic() + 4 * LEASE  # past a slow pass
            owners = []

            async def sample() -> bool:
                owners.append(
                    await orch.store.raw.hget(orch.store.keys.meta(handle.run_id), "owner")
                )
                return time.monotonic() > until

            await wait_until(sample, "a slow recovery pass", timeout=30)
            GATE.set()
            assert await handle.result(timeout=10) == "done"
    assert {o.decode() if isinstance(o, bytes) else o for o in owners} == {slow.worker_id}
    assert RAN[handle.run_id] == 1, "the step ran again"
    events = await orch.store.read_log(handle.run_id)
    assert sum(e.type == "activity_scheduled" for e in events) == 1
