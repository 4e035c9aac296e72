"""Redis going away mid-run: workers reconnect with backoff and nothing recorded is lost.

A test that stops Redis owns its server (an embedded one with AOF), so stopping it
disturbs no one; a Redis error on one call is injected at the call, on the shared Redis.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from taskloom import Context, Orchestrator, Settings, Store, Worker, activity, workflow
from taskloom.engine.embedded import EmbeddedRedis
from tests.helpers import running, wait_until

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


# -- deliveries read, then Redis fails before they start (issue 12, finding 3) ------------
MARKED: list[int] = []
FAN_OUT = 50


@activity(name="outage.mark")
async def mark(i: int) -> int:
    MARKED.append(i)
    await asyncio.sleep(0.02)
    return i


@workflow(name="outage.fan_out")
async def fan_out(ctx: Context, n: int) -> list[int]:
    return await ctx.gather(*(ctx.run(mark, i) for i in range(n)))


def fail_one_start(
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    *,
    after_script: bool = False,
    when: Callable[[], bool] = lambda: True,
    fault: Callable[[], None] | None = None,
) -> list[BaseException]:
    """Make one ``store.start_activities`` call fail as a dropped connection does: the
    first made once ``when()`` holds, after the worker read its deliveries. ``fault``
    runs first (it may kill Redis: the real call then fails once the client's retries
    give up); without it, ``after_script`` says the claims are taken in Redis and only
    the reply is lost. Returns a list that gets the error once the call has raised."""
    real, failed, armed = store.start_activities, [], [True]

    async def start(tasks: Sequence[tuple[str, str]], worker: str, *, ttl_ms: int) -> list[str]:
        if not armed or not when():
            return await real(tasks, worker, ttl_ms=ttl_ms)
        armed.clear()
        try:
            if fault is not None:
                fault()
                return await real(tasks, worker, ttl_ms=ttl_ms)  # Redis is gone
            if after_script:
                await real(tasks, worker, ttl_ms=ttl_ms)
            raise RedisConnectionError("injected: connection lost during start_activities")
        except RedisError as exc:
            failed.append(exc)
            raise

    monkeypatch.setattr(store, "start_activities", start)
    return failed


async def completed_once(store: Store, run_id: str) -> list[str]:
    """The seqs with a completed outcome; fails if one was recorded twice or the steps
    hash (the exactly-once guard) disagrees with the log."""
    events = await store.read_log(run_id)
    done = [e for e in events if e.type == "activity_completed"]
    seqs = [e.seq for e in done]
    assert len(seqs) == len(set(seqs)), f"recorded twice: {sorted(seqs)}"
    steps = await store.raw.hgetall(store.keys.steps(run_id))
    assert {e.seq: e.id for e in done} == {s: i for s, i in steps.items() if s in set(seqs)}
    return [s for s in seqs if s is not None]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("lost", ["request", "reply"])
async def test_deliveries_a_worker_could_not_start_are_run_elsewhere(
    orch: Orchestrator,
    store: Store,
    make_worker: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
    lost: str,
) -> None:
    """A worker that read deliveries and then failed to start them (Redis errored) does
    not keep them: another worker's reclaim (or its own) runs them, the run completes."""
    MARKED.clear()
    failed = fail_one_start(store, monkeypatch, after_script=lost == "reply")
    workers = [make_worker(workflows=[fan_out], activities=[mark], concurrency=4) for _ in "ab"]
    async with running(*workers):
        handle = await orch.start(fan_out, FAN_OUT)
        assert await handle.result(timeout=30) == list(range(FAN_OUT))
    assert failed, "a start_activities call failed after its deliveries were read"
    assert len(await completed_once(orch.store, handle.run_id)) == FAN_OUT
    assert sorted(MARKED) == list(range(FAN_OUT)), "each activity ran exactly once"
    assert not any(w._held_msgs for w in workers)


@pytest.mark.timeout(120)
async def test_redis_killed_while_deliveries_start_then_restarted_the_fan_out_completes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis is SIGKILLed the moment a worker starts deliveries it read, mid fan-out, and
    restarted (same socket, its AOF) seconds later; two workers stay up throughout."""
    MARKED.clear()
    data_dir = Path(tempfile.mkdtemp(prefix="tl-held-", dir="/tmp"))
    server = EmbeddedRedis(data_dir)  # AOF, appendfsync everysec
    server.start()

    def kill() -> None:
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        server.stop()  # reaps the dead process; start() runs a new one on the same socket

    try:
        settings = Settings(redis_url=server.url, key_prefix="held", lease_ttl=1.0)
        async with Orchestrator(settings=settings) as orch:
            failed = fail_one_start(
                orch.store, monkeypatch, when=lambda: len(MARKED) >= 10, fault=kill
            )
            workers = [
                orch.worker(workflows=[fan_out], activities=[mark], concurrency=4) for _ in "ab"
            ]
            async with running(*workers):
                handle = await orch.start(fan_out, FAN_OUT)
                # Down until the start has failed (the client's retries gave up): longer
                # than the leases, so the runs' owners lose them meanwhile.
                await wait_until(lambda: failed, "the start to fail", timeout=60)
                server.start()  # in this thread: the server lives as long as it does
                assert await handle.result(timeout=45) == list(range(FAN_OUT))
            assert len(await completed_once(orch.store, handle.run_id)) == FAN_OUT
    finally:
        server.stop()
    assert sorted(set(MARKED)) == list(range(FAN_OUT))


# -- an outcome recorded, its reply lost (issue 12, finding 4) ----------------------------
def lose_one_record_reply(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the first ``store.record`` call write its outcomes and then fail as a dropped
    connection does (the server crashed before answering): the reply is lost. Returns a
    list that gets an entry once that happened."""
    real, lost = store.record, []

    async def record(*args: Any, **kwargs: Any) -> Any:
        routings = await real(*args, **kwargs)
        if not lost:
            lost.append(1)
            raise RedisConnectionError("injected: connection lost before record's reply")
        return routings

    monkeypatch.setattr(store, "record", record)
    return lost


@pytest.mark.timeout(60)
async def test_an_outcome_whose_reply_was_lost_still_wakes_its_owner(
    orch: Orchestrator,
    store: Store,
    make_worker: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker sends the outcome again, which Redis drops as a duplicate: before, no
    one told the run's owner about the first (recorded) one and the run hung."""
    lost = lose_one_record_reply(store, monkeypatch)
    worker = make_worker(workflows=[chain], activities=[step], concurrency=2)
    async with running(worker):
        handle = await orch.start(chain, 3)
        assert await handle.result(timeout=30) == [0, 1, 2]
    assert lost, "a record call's reply was lost"
    assert len(await completed_once(orch.store, handle.run_id)) == 3
