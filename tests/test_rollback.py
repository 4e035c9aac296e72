"""Redis losing acknowledged writes (issue 12, finding 4): an owner whose view of a run is
ahead of Redis stops and replays it instead of writing past the hole.

The test owns its Redis (an embedded server with AOF), so killing it disturbs no one.
Redis loses writes as the tail of its AOF (a crash under ``appendfsync everysec``); the
test makes that tail exact: it copies the AOF at one point of the run, lets the run go on,
SIGKILLs the server and restarts it from the copy.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from taskloom import (
    ConfigurationError,
    Context,
    Orchestrator,
    RunNotFoundError,
    Settings,
    activity,
    workflow,
)
from taskloom.engine.embedded import EmbeddedRedis
from taskloom.engine.store import Op, Store
from taskloom.errors import StoreRolledBackError
from tests.helpers import running

pytestmark = pytest.mark.anyio

STEPS = 10
EXECUTED: list[int] = []
GATES: dict[int, asyncio.Event] = {}
ENTERED: dict[int, asyncio.Event] = {}


@activity(name="rollback.step")
async def step(i: int) -> int:
    EXECUTED.append(i)
    if i in GATES:
        ENTERED[i].set()
        await GATES[i].wait()
    return i * 10


@workflow(name="rollback.chain")
async def chain(ctx: Context, n: int) -> list[int]:
    return [await ctx.run(step, i) for i in range(n)]


def _crash_and_restore(server: EmbeddedRedis, snapshot: Path) -> None:
    """SIGKILL the server, put back the AOF as it was at ``snapshot``, start it again."""
    assert server.pid is not None
    os.kill(server.pid, signal.SIGKILL)
    server.stop()  # reaps the killed process, forgets its socket and pid file
    aof = server.data_dir / "appendonly"
    shutil.rmtree(aof)
    shutil.copytree(snapshot, aof)
    server.start()


async def test_an_owner_ahead_of_a_rolled_back_redis_replays_instead_of_writing_past_it() -> None:
    EXECUTED.clear()
    GATES.clear()
    ENTERED.clear()
    for i in (2, 6):
        GATES[i], ENTERED[i] = asyncio.Event(), asyncio.Event()
    data_dir = Path(tempfile.mkdtemp(prefix="tl-rollback-", dir="/tmp"))
    server = EmbeddedRedis(data_dir, appendfsync="always")
    server.start()
    try:
        settings = Settings(redis_url=server.url, key_prefix="rollback", lease_ttl=1.0)
        async with Orchestrator(settings=settings) as orch:
            worker = orch.worker(workflows=[chain], activities=[step], concurrency=2)
            async with running(worker):
                handle = await orch.start(chain, STEPS)
                await asyncio.wait_for(ENTERED[2].wait(), 30)  # steps 0 and 1 recorded
                snapshot = data_dir / "snapshot"
                await asyncio.to_thread(shutil.copytree, data_dir / "appendonly", snapshot)
                GATES[2].set()
                await asyncio.wait_for(ENTERED[6].wait(), 30)  # steps 2 to 5 recorded
                # Redis loses steps 2 to 5 while their owner holds them in memory ...
                await asyncio.to_thread(_crash_and_restore, server, snapshot)
                GATES[6].set()  # ... and step 6's outcome lands past the hole
                result = await handle.result(timeout=60)
            log = await orch.store.read_log(handle.run_id)
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    assert result == [i * 10 for i in range(STEPS)]
    completed = Counter(e.seq for e in log if e.type == "activity_completed")
    # no hole: every step's outcome is in the log, each exactly once
    assert completed == Counter(str(i) for i in range(STEPS)), completed
    assert [e.type for e in log].count("run_completed") == 1
    assert sorted(set(EXECUTED)) == list(range(STEPS))
    # the steps Redis lost ran again (at least once); no other step did
    assert {i for i, n in Counter(EXECUTED).items() if n > 1} <= {2, 3, 4, 5}


async def test_the_fsync_level_is_refused_where_the_server_cannot_keep_it() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="tl-fsync-", dir="/tmp"))
    server = EmbeddedRedis(data_dir, appendfsync="everysec")
    server.start()
    try:
        settings = Settings(redis_url=server.url, key_prefix="fsync", durability="fsync")
        orch = Orchestrator(settings=settings)
        await orch.connect()  # Redis 7.2+: WAITAOF keeps it
        assert orch.store.waitaof
        await orch.close()
    except ConfigurationError as exc:  # older: refused, saying what to change
        assert "appendfsync always" in str(exc) and "7.2" in str(exc)
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


async def test_waiting_on_a_run_redis_lost_ends_with_a_clear_error(orch: Orchestrator) -> None:
    handle = await orch.start(chain, 1)  # no worker: it stays pending
    events = handle.events()
    assert (await anext(events)).type == "run_created"
    await orch.store.raw.delete(*orch.store.keys.run_keys(handle.run_id))  # lost by Redis
    with pytest.raises(RunNotFoundError, match="is gone from Redis"):
        async with asyncio.timeout(30):  # before: followed the vanished log forever
            await anext(events)


async def test_an_outcome_recorded_here_is_checked_in_the_steps_hash(store: Store) -> None:
    # The owner checks the outcomes it recorded itself (ID=SEQ, see Writes.known) with
    # one HMGET of the steps hash, which their script wrote with the log entry: an
    # outcome Redis lost, or one recorded again after the loss under another entry,
    # stops appends, reads and lease renewals alike.
    await store.create_run("rb", workflow="wf", input_json='{"args":[],"kwargs":{}}')
    state, epoch = await store.acquire("rb", "w1", ttl_ms=30_000)
    assert state == "acquired"
    done = {"type": "activity_completed", "seq": "0", "result": 1, "ts": 1}
    [routing] = await store.record([("rb", "0", done)], "w1")
    entry = routing.entry_id
    assert entry is not None
    mark = {"type": "marker", "ts": 2}

    await store.append("rb", "w1", epoch, [Op(event=mark)], claim_ttl_ms=1000, known=[f"{entry}=0"])
    assert await store.read_log("rb", known=[f"{entry}=0"])
    assert await store.renew([("rb", epoch)], "w1", ttl_ms=30_000, known={"rb": [f"{entry}=0"]})

    await store.raw.hset(store.keys.steps("rb"), "0", "1-1")  # recorded again, elsewhere
    for gone in ([f"{entry}=0"], [f"{entry}=7"]):  # ... or never there
        with pytest.raises(StoreRolledBackError, match=entry):
            await store.append("rb", "w1", epoch, [Op(event=mark)], claim_ttl_ms=1000, known=gone)
        with pytest.raises(StoreRolledBackError, match=entry):
            await store.read_log("rb", known=gone)
        assert await store.renew([("rb", epoch)], "w1", ttl_ms=30_000, known={"rb": gone}) == [
            False
        ]
