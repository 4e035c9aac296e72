"""Timer partitions (``TASKLOOM_QUEUE_PARTITIONS`` spreads the durable timers too), on a
single Redis and on the local 3-master cluster: timers set in partitions other than 0
fire; a worker set to one partition fires the timers a four-partition worker wrote; a
pop interrupted after its take fires after the grace; a timer set again during a pop is
kept; a run put on the run queue twice by a timer sees each of its timers fire once."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from redis.crc import key_slot

import tests.test_partitions as queue_partitions
from taskloom import Context, ManualClock, Orchestrator, Store, Worker, workflow
from taskloom.engine.clustering import is_cluster
from taskloom.engine.partitions import TIMERS_MARK, TimerPartitions
from taskloom.engine.store._timers import FIRE_AGAIN_MS, Timers, timer_partition
from tests.helpers import running, wait_until

pytestmark = pytest.mark.anyio

# Each test on a single Redis, then on the local 3-master cluster; workers of 4 partitions.
redis_url = queue_partitions.redis_url
make_worker = queue_partitions.make_worker
PARTS = queue_partitions.PARTS

HOUR = 3600


@workflow(name="tparts.nap")
async def nap(ctx: Context, naps: int) -> int:
    for _ in range(naps):
        await ctx.sleep(HOUR)  # long: the run leaves memory, its timer goes to Redis
    return naps


def run_ids(parts: list[int], *, tag: str) -> list[str]:
    """A run id whose timers go to each partition of ``parts`` (of ``PARTS``)."""
    out = []
    for part in parts:
        k = 0
        while timer_partition(f"{tag}-{part}-{k}", PARTS) != part:
            k += 1
        out.append(f"{tag}-{part}-{k}")
    return out


async def parked(store: Store, worker: Worker, run_id: str) -> float | None:
    """The due time of ``run_id``'s timer, once the run has left the worker's memory
    with its timer in its partition."""
    key = store.keys.timer_set(timer_partition(run_id, PARTS))
    due = await store.raw.zscore(key, run_id)
    return due if due is not None and run_id not in worker.runs else None


async def fired(store: Store, run_id: str) -> list[str]:
    """The steps whose ``timer_fired`` the run's log holds (each once, if all is well)."""
    return [e.seq or "" for e in await store.read_log(run_id) if e.type == "timer_fired"]


async def test_timers_of_every_partition_fire_and_spread_over_the_masters(
    orch: Orchestrator, make_worker: Callable[..., Worker], store: Store
) -> None:
    clock = ManualClock()
    worker = make_worker(workflows=[nap], clock=clock)
    ids = run_ids(list(range(PARTS)), tag="spread")
    async with running(worker):
        handles = [await orch.start(nap, 1, run_id=run_id) for run_id in ids]
        for run_id in ids:
            await wait_until(lambda r=run_id: parked(store, worker, r), f"{run_id} parked")
        clock.advance(HOUR)
        for handle in handles:
            assert await handle.result(timeout=30) == 1
    for run_id in ids:
        assert await fired(store, run_id) == ["0"]
    keys = [store.keys.timer_set(i) for i in range(PARTS)]
    assert keys[0] == store.keys.timers, "partition 0 is the timer set there always was"
    for key in keys:
        assert await store.raw.zcard(key) == 0
    assert await store.raw.zscore(store.keys.queue_partitions, TIMERS_MARK) == PARTS
    if is_cluster(store.client):  # each partition in a slot of its own, on several masters
        assert len({key_slot(k.encode()) for k in keys}) == PARTS
        masters = {store.client.get_node_from_key(k).name for k in keys}
        assert len(masters) >= 2, masters


async def test_a_one_partition_worker_fires_the_timers_a_four_partition_worker_wrote(
    orch: Orchestrator, make_worker: Callable[..., Worker], store: Store
) -> None:
    clock = ManualClock()
    ids = run_ids([1, 2, 3], tag="mark")
    four = make_worker(workflows=[nap], clock=clock)
    async with running(four):
        handles = [await orch.start(nap, 1, run_id=run_id) for run_id in ids]
        for run_id in ids:
            await wait_until(lambda r=run_id: parked(store, four, r), f"{run_id} parked")
    one = make_worker(workflows=[nap], clock=clock, partitions=1)
    async with running(one):
        assert one.timer_partitions.count == 1 and one.timer_partitions.readable == PARTS
        clock.advance(HOUR)
        for handle in handles:
            assert await handle.result(timeout=30) == 1
    for run_id in ids:
        assert await fired(store, run_id) == ["0"]


async def test_the_timers_mark_only_grows(store: Store) -> None:
    one = TimerPartitions(store, 1)
    await one.sync()
    assert one.readable == 1
    await TimerPartitions(store, 4).sync()
    await one.sync()
    assert one.readable == 4
    two = TimerPartitions(store, 2)
    await two.sync()
    assert two.readable == 4, "a worker set lower still pops every partition written to"


async def test_a_pop_interrupted_after_its_take_fires_after_the_grace(
    orch: Orchestrator, make_worker: Callable[..., Worker], store: Store
) -> None:
    clock = ManualClock()
    worker = make_worker(workflows=[nap], clock=clock)
    (run_id,) = run_ids([2], tag="taken")
    part = timer_partition(run_id, PARTS)
    sets = [store.keys.timer_set(part), store.keys.timers_firing(part)]
    async with running(worker):
        handle = await orch.start(nap, 1, run_id=run_id)
        due = int(await wait_until(lambda: parked(store, worker, run_id), "the run parked"))
        # A popper takes the timer, then dies before it reaches the run queue.
        again = due + FIRE_AGAIN_MS
        assert await store.scripts.call("take_timers", sets, [due, 100, again]) == [run_id]
        clock.advance(HOUR)  # due, but taken: the live worker leaves it until the grace ends
        assert await store.raw.zscore(sets[1], run_id) == again
        clock.advance(FIRE_AGAIN_MS / 1000)
        assert await handle.result(timeout=30) == 1
        await wait_until(lambda: _gone(store, sets[1], run_id), "the firing entry dropped")
    assert await fired(store, run_id) == ["0"]


async def _gone(store: Store, key: str, member: str) -> bool:
    return await store.raw.zscore(key, member) is None


async def test_a_pop_that_cannot_reach_the_run_queue_fires_after_the_grace(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run queue's write fails (its node is down, say): the pop raises, and the
    timer, taken, is fired by a later pop once the grace has passed, not before."""
    (run_id,) = run_ids([1], tag="unreached")
    await store.add_timer(run_id, 1_000, partitions=PARTS)

    async def unreachable(self: Store, taken: dict[int, list[str]]) -> None:
        raise ConnectionError("the run queue's node is down")

    monkeypatch.setattr(Timers, "_fire", unreachable)
    with pytest.raises(ConnectionError):
        await store.pop_timers(now=1_000, partitions=PARTS)
    monkeypatch.undo()
    assert await store.pop_timers(now=1_000 + FIRE_AGAIN_MS - 1, partitions=PARTS) == 0
    assert await store.pop_timers(now=1_000 + FIRE_AGAIN_MS, partitions=PARTS) == 1
    assert [f["run"] for _, f in await store.raw.xrange(store.keys.runq)] == [run_id]
    firing = store.keys.timers_firing(timer_partition(run_id, PARTS))
    assert await store.raw.zcard(firing) == 0


@pytest.mark.parametrize("later", [False, True], ids=["earlier", "later"])
async def test_a_timer_set_again_during_a_pop_is_kept(
    store: Store, monkeypatch: pytest.MonkeyPatch, later: bool
) -> None:
    """Between the take and the run queue, the run sets a timer again (its next sleep,
    say): earlier or later than the grace, it stays, and fires when due."""
    (run_id,) = run_ids([3], tag="rearm")
    await store.add_timer(run_id, 1_000, partitions=PARTS)
    rearm = 1_000 + (2 * FIRE_AGAIN_MS if later else 500)
    fire = Timers._fire

    async def rearm_then_fire(self: Store, taken: dict[int, list[str]]) -> None:
        await self.add_timer(run_id, rearm, partitions=PARTS)
        await fire(self, taken)

    monkeypatch.setattr(Timers, "_fire", rearm_then_fire)
    assert await store.pop_timers(now=1_000, partitions=PARTS) == 1
    monkeypatch.undo()
    key = store.keys.timer_set(timer_partition(run_id, PARTS))
    assert await store.raw.zscore(key, run_id) == rearm
    assert await store.raw.zcard(store.keys.timers_firing(timer_partition(run_id, PARTS))) == 0
    assert await store.pop_timers(now=rearm - 1, partitions=PARTS) == 0
    assert await store.pop_timers(now=rearm, partitions=PARTS) == 1
    woken = [f["run"] for _, f in await store.raw.xrange(store.keys.runq)]
    assert woken == [run_id, run_id]


async def test_a_run_woken_twice_by_one_timer_sees_each_timer_fire_once(
    orch: Orchestrator,
    make_worker: Callable[..., Worker],
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A popper dies after putting the run on the run queue, before it forgets the
    timer: the timer fires again after the grace, while the run sleeps its second nap.
    The extra wake changes nothing the workflow sees."""
    clock = ManualClock()
    worker = make_worker(workflows=[nap], clock=clock)
    (run_id,) = run_ids([1], tag="twice")
    firing = store.keys.timers_firing(timer_partition(run_id, PARTS))
    forget = Timers._forget

    async def crash_before_forgetting(self: Store, taken: dict[int, list[str]], at: int) -> None:
        return None

    async with running(worker):
        handle = await orch.start(nap, 2, run_id=run_id)
        first = await wait_until(lambda: parked(store, worker, run_id), "the first nap parked")
        monkeypatch.setattr(Timers, "_forget", crash_before_forgetting)
        clock.advance(HOUR)
        second = await wait_until(
            lambda: _parked_after(store, worker, run_id, first), "the second nap parked"
        )
        assert await fired(store, run_id) == ["0"]
        assert await store.raw.zscore(firing, run_id) is not None, "left as a crash leaves it"
        monkeypatch.setattr(Timers, "_forget", forget)
        clock.advance(FIRE_AGAIN_MS / 1000)  # the first timer fires again: a spurious wake
        await wait_until(lambda: _gone(store, firing, run_id), "the first timer fired again")
        await wait_until(lambda: _runq_empty(store), "the run queue read")
        await wait_until(lambda: parked(store, worker, run_id), "the run parked again")
        assert await parked(store, worker, run_id) == second
        assert (await handle.info()).status != "completed"
        assert await fired(store, run_id) == ["0"], "the second nap did not end early"
        clock.advance(HOUR)
        assert await handle.result(timeout=30) == 2
    assert await fired(store, run_id) == ["0", "1"]


async def _parked_after(store: Store, worker: Worker, run_id: str, first: float) -> float | None:
    due = await parked(store, worker, run_id)
    return due if due is not None and due > first else None


async def _runq_empty(store: Store) -> bool:
    return int(await store.raw.xlen(store.keys.runq)) == 0
