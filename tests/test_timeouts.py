"""Timeouts, heartbeats and cancellation of running activities, against a real Redis,
with a clock the tests move where a real wait would be long."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from taskloom import (
    ActivityError,
    Context,
    ManualClock,
    Orchestrator,
    RetryPolicy,
    RunCancelledError,
    activity,
    activity_info,
    heartbeat,
    workflow,
)
from taskloom.engine.store import Store
from tests.helpers import running, wait_until

pytestmark = pytest.mark.anyio

RAN: list[tuple[str, int, Any]] = []  # (worker, attempt, heartbeat details seen)
STOPPED: list[str] = []
RELEASE = asyncio.Event()
THREAD_GO = threading.Event()


@pytest.fixture(autouse=True)
def _reset() -> None:
    global RELEASE  # an asyncio.Event belongs to the loop of the test that first awaits it
    RAN.clear()
    STOPPED.clear()
    RELEASE = asyncio.Event()
    THREAD_GO.clear()


ONCE_MORE = RetryPolicy(max_attempts=2, initial_interval=5.0, jitter=0.0)


@activity(name="t.stuck", heartbeat_timeout=10, retry=ONCE_MORE)
async def stuck(pages: int) -> str:
    info = activity_info()
    RAN.append((info.worker_id, info.attempt, info.heartbeat_details))
    if info.attempt == 1:
        heartbeat(3)  # three pages done, then it hangs, deaf to cancellation
        while not RELEASE.is_set():
            try:
                await RELEASE.wait()
            except asyncio.CancelledError:
                STOPPED.append("ignored a cancel")
        return "late"
    start = info.heartbeat_details or 0
    return f"pages {start}..{pages} on attempt {info.attempt}"


@activity(name="t.slow", timeout=60, retry=RetryPolicy(max_attempts=1))
async def slow() -> str:
    await asyncio.sleep(3600)
    return "never"


@activity(name="t.waits", retry=RetryPolicy(max_attempts=1))
async def waits_forever() -> None:
    try:
        await asyncio.sleep(3600)
    finally:
        STOPPED.append("async")


@activity(name="t.spins", retry=RetryPolicy(max_attempts=1))
def spins() -> None:
    THREAD_GO.set()
    try:
        while True:
            heartbeat()
            time.sleep(0.01)
    finally:
        STOPPED.append("sync")


@activity(name="t.gate")
async def gate() -> str:
    await RELEASE.wait()
    return "gate"


@activity(name="t.quick", schedule_to_start=0.2)
async def quick() -> str:
    return "quick"


@workflow(name="t.one")
async def one(ctx: Context, name: str, *args: Any) -> Any:
    act = {"stuck": stuck, "slow": slow}[name]
    try:
        return await ctx.run(act, *args)
    except ActivityError as exc:
        return {"error": exc.error_type, "attempts": exc.attempts, "message": str(exc)}


@workflow(name="t.both")
async def both(ctx: Context) -> list[Any]:
    return await ctx.gather(ctx.run(waits_forever), ctx.run(spins))


@workflow(name="t.kid")
async def kid(ctx: Context) -> None:
    await ctx.run(waits_forever)


@workflow(name="t.parent")
async def parent(ctx: Context) -> None:
    await ctx.child(kid)


@workflow(name="t.queued")
async def queued(ctx: Context) -> list[Any]:
    async def late_quick() -> Any:
        try:
            return await ctx.run(quick)
        except ActivityError as exc:
            return exc.error_type

    return await ctx.gather(ctx.run(gate), late_quick())


DEFS: dict[str, Any] = {
    "workflows": [one, both, queued, kid, parent],
    "activities": [stuck, slow, waits_forever, spins, gate, quick],
}


async def test_a_hung_activity_is_retried_on_another_worker_from_its_last_heartbeat(
    orch: Orchestrator, make_worker: Any
) -> None:
    clock = ManualClock()
    first = make_worker(clock=clock, concurrency=1, **DEFS)
    serving = asyncio.create_task(first.run())
    await first.started.wait()
    handle = await orch.start(one, "stuck", 9)
    await wait_until(lambda: RAN, "attempt 1")
    clock.advance(11)  # ten seconds without a heartbeat: hung
    retrying = await wait_until(
        lambda: _events(orch.store, handle.run_id, "activity_retrying"), "the attempt given up"
    )
    assert retrying[0].data["error"]["type"] == "ActivityTimeoutError"
    assert retrying[0].data["error"]["kind"] == "heartbeat"
    first.stop()  # drained, say; its hung attempt stays where it is
    await serving

    second = make_worker(clock=clock, concurrency=1, **DEFS)
    async with running(second):
        clock.advance(5)  # the backoff
        result = await handle.result(timeout=10)
    assert result == "pages 3..9 on attempt 2", "attempt 2 resumed from the last heartbeat"
    assert [(w, a) for w, a, _ in RAN] == [(first.worker_id, 1), (second.worker_id, 2)]
    RELEASE.set()  # the hung attempt finally returns: nobody records it
    await asyncio.sleep(0.05)
    completed = await _events(orch.store, handle.run_id, "activity_completed")
    assert [e.data["result"] for e in completed] == ["pages 3..9 on attempt 2"]


async def test_a_late_result_of_an_attempt_given_up_is_dropped(orch: Orchestrator) -> None:
    store = orch.store
    await store.create_run("late", workflow="t.one", input_json='{"args":[],"kwargs":{}}')
    given_up = await store.fail_attempt(
        "late", "0", attempt=1, event='{"type":"activity_retrying","seq":"0"}', worker="w1"
    )
    assert given_up.status == "ok"
    event = {"type": "activity_completed", "seq": "0", "result": "late"}
    (stale,) = await store.record([("late", "0", event)], "w1", attempts=[1])
    assert stale.status == "dup", "attempt 1 was already given up"
    (fresh,) = await store.record([("late", "0", event | {"result": "ok"})], "w2", attempts=[2])
    assert fresh.status == "ok"
    assert (await store.run_info("late")).duplicates_dropped == 1


async def test_start_to_close_timeout_fails_the_attempt(orch: Orchestrator, make_worker):
    clock = ManualClock()
    async with running(make_worker(clock=clock, **DEFS)):
        handle = await orch.start(one, "slow")
        await wait_until(lambda: _events(orch.store, handle.run_id, "activity_scheduled"), "start")
        await asyncio.sleep(0.05)
        clock.advance(61)
        out = await handle.result(timeout=10)
    assert out["error"] == "ActivityTimeoutError"
    assert "start-to-close timeout of 60s" in out["message"]


async def test_cancelling_a_run_stops_its_running_activities(orch: Orchestrator, make_worker):
    async with running(make_worker(**DEFS)):
        handle = await orch.start(both)
        await wait_until(THREAD_GO.is_set, "both activities running")
        await asyncio.sleep(0.05)
        await handle.cancel()
        with pytest.raises(RunCancelledError):
            await handle.result(timeout=10)
        await wait_until(lambda: sorted(STOPPED) == ["async", "sync"], "both to stop")


async def test_cancelling_a_run_reaches_its_child_and_the_childs_activity(
    orch: Orchestrator, make_worker: Any
) -> None:
    async with running(make_worker(**DEFS)):
        handle = await orch.start(parent)
        child = orch.handle(f"{handle.run_id}.0")
        await wait_until(lambda: _events(orch.store, child.run_id, "activity_scheduled"), "kid")
        await asyncio.sleep(0.05)
        await handle.cancel()
        with pytest.raises(RunCancelledError):
            await handle.result(timeout=10)
        with pytest.raises(RunCancelledError):
            await child.result(timeout=10)
        await wait_until(lambda: STOPPED == ["async"], "the child's activity to stop")


async def test_schedule_to_start_fails_a_task_that_waited_too_long(
    orch: Orchestrator, make_worker: Any
) -> None:
    async with running(make_worker(concurrency=1, **DEFS)):
        handle = await orch.start(queued)  # the gate holds the only slot; quick waits
        await wait_until(lambda: _events(orch.store, handle.run_id, "activity_scheduled"), "go")
        await asyncio.sleep(0.4)
        RELEASE.set()
        assert await handle.result(timeout=10) == ["gate", "ActivityTimeoutError"]


async def _events(store: Store, run_id: str, kind: str) -> list[Any]:
    return [e for e in await store.read_log(run_id) if e.type == kind]
