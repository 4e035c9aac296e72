"""Partitioned activity queues (``TASKLOOM_QUEUE_PARTITIONS``), on a single Redis and on
the local 3-master cluster: a large fan-out spreads its deliveries over the partitions
and completes; a worker SIGKILLed mid-run loses nothing and records nothing twice;
retries and dead-letter redrives work; workers of different settings never leave a task
on a partition nobody reads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from taskloom import Context, Orchestrator, Store, Worker, activity, activity_info, workflow
from taskloom.engine.clustering import is_cluster
from taskloom.engine.keys import Keys, lane
from taskloom.engine.partitions import QueuePartitions, pick
from taskloom.errors import ConfigurationError
from tests.conftest import REDIS_URL
from tests.helpers import running, wait_until
from tests.test_durability import Spawn, assert_recorded_once
from tests.test_durability import (
    test_sigkill_mid_fan_out_another_worker_resumes_exactly_once as sigkill_mid_fan_out,
)

# Retries and dead letters, collected again here: on a queue of 4 partitions (this
# module's ``make_worker``), on each Redis of this module's ``redis_url``.
from tests.test_retries import (  # noqa: F401
    _reset,
    test_backoff_waits_as_configured_on_the_clock,
    test_exhausted_attempts_raise_into_the_workflow_and_leave_a_dead_letter,
    test_non_retryable_pauses_at_once_and_redrive_completes_the_run,
    test_purging_a_paused_entry_hands_the_failure_to_the_workflow,
)

pytestmark = pytest.mark.anyio

PARTS = 4


@pytest.fixture(scope="module", params=["single", "cluster"])
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here on a single Redis, then on the local 3-master cluster."""
    if request.param == "cluster":
        yield request.getfixturevalue("local_cluster").url
    else:
        yield REDIS_URL


@pytest.fixture
def make_worker(store: Store) -> Callable[..., Worker]:
    """An in-process worker on a queue of 4 partitions."""

    def make(**kwargs: Any) -> Worker:
        kwargs.setdefault("lease_ttl", 1.0)
        kwargs.setdefault("partitions", PARTS)
        return Worker(store, **kwargs)

    return make


@activity(name="parts.echo")
async def echo(x: int) -> int:
    return x


GATE: asyncio.Event  # made by the test that uses it, on its own event loop
HELD = "parts-held"  # the worker whose attempts wait at the gate


@activity(name="parts.gate")
async def gate(x: int) -> int:
    if activity_info().worker_id == HELD:
        await GATE.wait()
    return x


@workflow(name="parts.fan")
async def fan(ctx: Context, n: int) -> int:
    return sum(await asyncio.gather(*(ctx.run(echo, i) for i in range(n))))


@workflow(name="parts.gated")
async def gated(ctx: Context, n: int) -> list[int]:
    return list(await asyncio.gather(*(ctx.run(gate, i) for i in range(n))))


async def added(store: Store, queue: str, part: int) -> int:
    """How many messages partition ``part``'s stream has ever had added (Redis >= 7),
    else whether it had any."""
    info = await store.raw.xinfo_stream(store.keys.queue(lane(queue, part)))
    if "entries-added" in info:
        return int(info["entries-added"])
    return int(info["last-generated-id"] != "0-0")


async def test_a_1000_activity_fan_out_spreads_over_the_partitions_and_completes(
    orch: Orchestrator, make_worker: Callable[..., Worker], store: Store
) -> None:
    async with running(make_worker(workflows=[fan], activities=[echo], concurrency=8)):
        handle = await orch.start(fan, 1000)
        assert await handle.result(timeout=120) == sum(range(1000))
    assert len(await assert_recorded_once(store, handle.run_id)) == 1000
    counts = [await added(store, "default", i) for i in range(PARTS)]
    assert all(counts), f"every partition had deliveries: {counts}"
    if max(counts) > 1:  # counted (Redis >= 7): each had a fair share of the ~990 queued
        assert min(counts) > 1000 / PARTS / 2, counts
    for i in range(PARTS):  # every delivery acknowledged and deleted
        qkey = store.keys.queue(lane("default", i))
        assert await store.raw.xlen(qkey) == 0
        assert (await store.raw.xpending(qkey, Keys.GROUP))["pending"] == 0
    assert await store.raw.zscore(store.keys.queue_partitions, "default") == PARTS
    if is_cluster(store.client):  # each partition in a slot of its own, on 3 masters
        qkeys = [store.keys.queue(lane("default", i)) for i in range(PARTS)]
        slots = {key_slot(k.encode()) for k in qkeys}
        assert len(slots) == PARTS
        masters = {store.client.get_node_from_key(k).name for k in qkeys}
        assert len(masters) >= 2, masters


async def test_a_worker_reads_the_partitions_another_worker_wrote(
    orch: Orchestrator, make_worker: Callable[..., Worker], store: Store
) -> None:
    """A worker set to 1 partition reads all 4 that another worker writes to: the
    queue's high-water mark in Redis says how many there are."""
    global GATE
    GATE = asyncio.Event()
    # A owns the run; its one slot waits at the gate and it reads nothing ahead.
    a = make_worker(workflows=[gated], activities=[gate], concurrency=1, prefetch=0, worker_id=HELD)
    b = make_worker(activities=[gate], partitions=1, concurrency=4)
    async with running(a):
        handle = await orch.start(gated, 40)
        async with running(b):
            assert b.partitions.readable == PARTS and b.partitions.count == 1
            done = await wait_until(
                lambda: _completed_by(store, handle.run_id, b.worker_id, 39), "B's 39 steps"
            )
            GATE.set()
            assert await handle.result(timeout=60) == list(range(40))
    upper = [seq for seq in done if pick(handle.run_id, seq, PARTS) != 0]
    assert upper, "B took tasks from partitions 1-3, which its own setting does not name"
    await assert_recorded_once(store, handle.run_id)


async def _completed_by(store: Store, run_id: str, worker: str, n: int) -> list[str] | None:
    seqs = [
        e.seq or ""
        for e in await store.read_log(run_id)
        if e.type == "activity_completed" and e.data.get("worker") == worker
    ]
    return seqs if len(seqs) >= n else None


async def test_the_high_water_mark_only_grows_and_readers_follow_it(store: Store) -> None:
    one = QueuePartitions(store, "hw", 1)
    await one.sync()
    assert one.readable == 1
    four = QueuePartitions(store, "hw", 4)
    assert await four.sync() is False  # its own count already
    assert await one.sync() is True and one.readable == 4 and one.grew.is_set()
    two = QueuePartitions(store, "hw", 2)
    await two.sync()
    assert two.readable == 4, "a worker set lower still reads every partition used"
    assert await store.raw.zscore(store.keys.queue_partitions, "hw") == 4
    # the groups of the partitions a reader learned of exist: XREADGROUP on them works
    for i in range(1, 4):
        await store.raw.xinfo_groups(store.keys.queue(lane("hw", i)))
    with pytest.raises(ConfigurationError, match="colon"):
        QueuePartitions(store, "a:b", 2)


async def test_sigkill_mid_fan_out_with_partitions_loses_nothing_and_records_once(
    orch: Orchestrator, spawn_worker: Spawn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKLOOM_QUEUE_PARTITIONS", str(PARTS))  # the workers' setting
    await sigkill_mid_fan_out(orch, spawn_worker, tmp_path)
    assert await orch.store.raw.zscore(orch.store.keys.queue_partitions, "default") == PARTS
