"""Redis going away mid-run: workers reconnect with backoff and nothing recorded is lost.

This test owns its Redis (an embedded server with AOF), so stopping it disturbs no one.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest

from orchestrator import Context, Orchestrator, Settings, activity, workflow
from orchestrator.embedded import EmbeddedRedis
from tests.helpers import running

pytestmark = pytest.mark.anyio

EXECUTED: list[int] = []
OUTAGE_S = 8.0  # longer than the client's own retries: the worker loops must recover


@activity(name="outage.step")
async def step(i: int) -> int:
    EXECUTED.append(i)
    await asyncio.sleep(0.05)
    return i


@workflow(name="outage.chain")
async def chain(ctx: Context, n: int) -> list[int]:
    return [await ctx.run(step, i) for i in range(n)]


async def test_redis_restart_mid_run_loses_nothing() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="tl-outage-", dir="/tmp"))
    server = EmbeddedRedis(data_dir, appendfsync="always")
    server.start()
    try:
        settings = Settings(redis_url=server.url, key_prefix="outage", lease_ttl=1.0)
        async with Orchestrator(settings=settings) as orch:
            worker = orch.worker(workflows=[chain], activities=[step], concurrency=2)
            async with running(worker):
                handle = await orch.start(chain, 40)
                while len(EXECUTED) < 10:
                    await asyncio.sleep(0.01)
                await asyncio.to_thread(server.stop)  # Redis goes away mid-run ...
                await asyncio.sleep(OUTAGE_S)
                await asyncio.to_thread(server.start)  # ... and comes back with its AOF
                assert await handle.result(timeout=60) == list(range(40))
            completed = [
                e.seq
                for e in await orch.store.read_log(handle.run_id)
                if e.type == "activity_completed"
            ]
            assert len(completed) == len(set(completed)) == 40
    finally:
        server.stop()
    # at-least-once: only what was in flight at the outage may have run twice
    assert sorted(set(EXECUTED)) == list(range(40))
    assert len(EXECUTED) - 40 <= 2
