"""A worker outlives its Redis going away entirely and coming back without its data (no
persistence; every node of a cluster restarted): it rides the outage out, says so while
it lasts, and serves the next run.

Found by a drill (a `taskloom worker` on a local cluster, every node SIGKILLed, started
again): redis-py's cluster client raises ``RedisClusterUnreachableError``, which is no
``RedisError``, so the worker's loops, which ride out Redis errors, died of it and said
nothing, and a stopping worker crashed on it; and on a single Redis as on a cluster, a
Redis back without the queues' consumer groups failed every read with NOGROUP for good.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from taskloom import Context, Orchestrator, Settings, Worker, activity, workflow
from taskloom.testing.cluster import LocalCluster
from tests.helpers import RestartableRedis, running, wait_until

pytestmark = pytest.mark.anyio


@activity(name="outage.inc")
async def inc(x: int) -> int:
    return x + 1


@workflow(name="outage.one")
async def one(ctx: Context, x: int) -> int:
    return await ctx.run(inc, x)


@pytest.fixture
def single(tmp_path: Path) -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    server = RestartableRedis(tmp_path)
    server.start()
    try:
        yield f"redis://127.0.0.1:{server.port}/0", server.kill, server.start
    finally:
        server.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    with LocalCluster(tmp_path, masters=1) as nodes:
        port = nodes.ports[0]
        yield nodes.url, lambda: nodes.kill(port), lambda: nodes.restart(port)


@pytest.mark.parametrize("where", ["single", "cluster"])
async def test_a_worker_outlives_its_redis_coming_back_empty(
    where: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    url, kill, restart = request.getfixturevalue(where)
    orch = Orchestrator(settings=Settings(redis_url=url, key_prefix="outage"))
    await orch.connect()
    worker = Worker(orch.store, workflows=[one], activities=[inc], lease_ttl=0.5)
    try:
        async with running(worker):
            assert await (await orch.start(one, 1)).result(timeout=20) == 2
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="taskloom.engine.worker"):
                kill()
                await wait_until(
                    lambda: any("Redis error" in r.getMessage() for r in caplog.records),
                    "the worker to say Redis is out of reach",
                )
                restart()
                handle = await orch.start(one, 41)
                assert await handle.result(timeout=30) == 42
            assert any("consumer groups" in r.getMessage() for r in caplog.records)
            assert worker._refused is None
        # It stopped cleanly (an exception in a loop or in its shutdown would raise here).
    finally:
        await orch.close()
