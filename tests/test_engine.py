"""The durable engine against a real Redis: fan-out, replay, signals, children, errors."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from taskloom import (
    ActivityError,
    Context,
    NondeterminismError,
    Orchestrator,
    RunCancelledError,
    RunFailedError,
    RunIdConflictError,
    RunNotFoundError,
    SerializationError,
    activity,
    activity_info,
    workflow,
)
from taskloom.engine.store import Store
from tests.helpers import running

pytestmark = pytest.mark.anyio


@activity
async def echo(i: int) -> dict[str, int]:
    return {"i": i}


@activity
def square(x: int) -> int:  # a sync activity runs in a thread
    return x * x


@activity
async def boom(message: str) -> None:
    raise ValueError(message)


@activity
async def whoami() -> str:
    return activity_info().idempotency_key


@workflow
async def fan_in(ctx: Context, n: int) -> int:
    results = await ctx.gather(*(ctx.run(echo, i) for i in range(n)))
    assert [r["i"] for r in results] == list(range(n)), "fan-in must keep order"
    return sum(r["i"] for r in results)


@workflow
async def nested(ctx: Context) -> list[int]:
    async def branch(i: int) -> int:
        a = await ctx.run(square, i)
        b = await ctx.run(square, a)
        return int(b)

    return await ctx.gather(*(branch(i) for i in range(4)))


@workflow
async def waits_for_signal(ctx: Context) -> Any:
    first = await ctx.run(echo, 1)
    payload = await ctx.wait_for_signal("approve")
    return {"first": first, "payload": payload}


@workflow
async def parent(ctx: Context, n: int) -> dict[str, Any]:
    child_sum = await ctx.child(fan_in, n)
    return {"child": child_sum, "key": await ctx.run(whoami)}


@workflow
async def catches(ctx: Context) -> str:
    try:
        await ctx.run(boom, "bad input")
    except ActivityError as exc:
        return f"caught {exc.error_type}"
    return "not raised"


@workflow
async def fails(ctx: Context) -> None:
    await ctx.run(boom, "unrecoverable")


@workflow
async def sleeper(ctx: Context, seconds: float) -> str:
    await ctx.sleep(seconds)
    return "woke"


@workflow
async def deterministic(ctx: Context) -> dict[str, Any]:
    return {"uuid": str(ctx.uuid4()), "rand": ctx.random().random(), "now": ctx.now().isoformat()}


ALL_WF = [fan_in, nested, waits_for_signal, parent, catches, fails, sleeper, deterministic]
ALL_ACT = [echo, square, boom, whoami]


async def _steps(store: Store, run_id: str, event_type: str) -> list[str]:
    return [e.seq or "" for e in await store.read_log(run_id) if e.type == event_type]


async def test_gather_of_1000_activities_fans_in_correctly(
    orch: Orchestrator, make_worker, store: Store
) -> None:
    async with running(make_worker(workflows=ALL_WF, activities=ALL_ACT)):
        handle = await orch.start(fan_in, 1000)
        assert await handle.result(timeout=60) == sum(range(1000))
    completed = await _steps(store, handle.run_id, "activity_completed")
    assert len(completed) == 1000
    assert len(set(completed)) == 1000, "each step recorded exactly once"
    info = await handle.info()
    assert info.status == "completed" and info.duplicates_dropped == 0


async def test_gather_branches_with_several_steps_get_stable_numbers(
    orch: Orchestrator, make_worker, store: Store
) -> None:
    async with running(make_worker(workflows=ALL_WF, activities=ALL_ACT)):
        handle = await orch.start(nested)
        assert await handle.result(timeout=20) == [0, 1, 16, 81]
    seqs = sorted(await _steps(store, handle.run_id, "activity_completed"))
    assert seqs == sorted(f"0.{i}.{j}" for i in range(4) for j in range(2))


async def test_replay_returns_recorded_results_without_running_again(
    orch: Orchestrator, make_worker, store: Store
) -> None:
    calls: list[int] = []

    @activity(name="counted")
    async def counted(i: int) -> int:
        calls.append(i)
        return i

    @workflow(name="twice")
    async def twice(ctx: Context) -> int:
        a = await ctx.run(counted, 1)
        await ctx.wait_for_signal("go")  # the run is evicted here, then replayed
        return a + int(await ctx.run(counted, 2))

    async with running(make_worker(workflows=[twice], activities=[counted])):
        handle = await orch.start(twice)
        await _until(lambda: _status_is(handle, "waiting"))
        await handle.signal("go")
        assert await handle.result(timeout=20) == 3
    assert calls == [1, 2], "replay must not call a recorded activity again"


async def test_nondeterminism_is_detected_and_names_both_steps(
    orch: Orchestrator, make_worker
) -> None:
    @workflow(name="changing")
    async def v1(ctx: Context) -> int:
        await ctx.run(echo, 1)
        await ctx.wait_for_signal("go")
        return 1

    @workflow(name="changing")
    async def v2(ctx: Context) -> int:  # the code changed while the run was waiting
        await ctx.run(square, 1)
        await ctx.wait_for_signal("go")
        return 2

    async with running(make_worker(workflows=[v1], activities=ALL_ACT)):
        handle = await orch.start(v1)
        await _until(lambda: _status_is(handle, "waiting"))
    async with running(make_worker(workflows=[v2], activities=ALL_ACT)):
        await handle.signal("go")
        with pytest.raises(RunFailedError) as err:
            await handle.result(timeout=20)
    assert err.value.error["type"] == "NondeterminismError"
    message = err.value.error["message"]
    assert "'square'" in message and "'echo'" in message and "step 0" in message
    assert issubclass(NondeterminismError, Exception)


async def test_signal_reaches_a_run_no_worker_holds(orch: Orchestrator, make_worker) -> None:
    worker = make_worker(workflows=ALL_WF, activities=ALL_ACT)
    async with running(worker):
        handle = await orch.start(waits_for_signal)
        await _until(lambda: _status_is(handle, "waiting"))
        assert handle.run_id not in worker.runs
        info = await handle.info()
        assert info.owner == ""
        await handle.signal("approve", {"by": "ana"})
        assert await handle.result(timeout=20) == {"first": {"i": 1}, "payload": {"by": "ana"}}


async def test_signal_sent_before_the_wait_is_kept(orch: Orchestrator, make_worker) -> None:
    handle = await orch.start(waits_for_signal)
    await handle.signal("approve", "early")
    async with running(make_worker(workflows=ALL_WF, activities=ALL_ACT)):
        assert (await handle.result(timeout=20))["payload"] == "early"


async def test_child_workflow_and_idempotency_key(orch: Orchestrator, make_worker) -> None:
    async with running(make_worker(workflows=ALL_WF, activities=ALL_ACT)):
        handle = await orch.start(parent, 10)
        result = await handle.result(timeout=20)
    assert result == {"child": 45, "key": f"{handle.run_id}/1"}
    child = await orch.handle(f"{handle.run_id}.0").info()
    assert child.status == "completed" and child.parent == {"run_id": handle.run_id, "seq": "0"}


async def test_activity_errors_are_typed_and_catchable(orch: Orchestrator, make_worker) -> None:
    async with running(make_worker(workflows=ALL_WF, activities=ALL_ACT)):
        assert await (await orch.start(catches)).result(timeout=20) == "caught ValueError"
        with pytest.raises(RunFailedError, match="unrecoverable"):
            await (await orch.start(fails)).result(timeout=20)


async def test_durable_sleep_and_deterministic_helpers(
    orch: Orchestrator, make_worker, store: Store
) -> None:
    async with running(make_worker(workflows=ALL_WF, activities=ALL_ACT)):
        handle = await orch.start(sleeper, 1.5)  # long enough to be evicted meanwhile
        await _until(lambda: _status_is(handle, "waiting"))
        assert await handle.result(timeout=20) == "woke"
        first = await (await orch.start(deterministic)).result(timeout=20)
    events = await store.read_log(handle.run_id)
    started = next(e for e in events if e.type == "timer_started")
    fired = next(e for e in events if e.type == "timer_fired")
    assert fired.data["ts"] >= started.data["due_ms"]
    assert first["uuid"] and 0 <= first["rand"] < 1


async def test_now_and_recorded_values_replay_as_recorded(
    orch: Orchestrator, make_worker, store: Store
) -> None:
    readings = iter([1, 2, 3])  # each execution reads afresh; the log keeps the first

    @workflow(name="records")
    async def records(ctx: Context) -> list[Any]:
        first = [ctx.now().isoformat(), ctx.record("reading", next(readings))]
        await ctx.wait_for_signal("go")  # evicted here: the rest runs on a replay
        return [*first, ctx.record("reading", next(readings))]

    async with running(make_worker(workflows=[records])):
        handle = await orch.start(records)
        await _until(lambda: _status_is(handle, "waiting"))
    recorded = [e for e in await store.read_log(handle.run_id) if e.type.endswith("_recorded")]
    async with running(make_worker(workflows=[records])):
        await handle.signal("go")
        result = await handle.result(timeout=20)
    now_event = next(e for e in recorded if e.type == "now_recorded")
    assert result[0] == datetime.fromtimestamp(now_event.data["value"] / 1000, UTC).isoformat()
    assert result[1:] == [1, 3], "the replay read 2 but returned the recorded 1"
    assert [e.data["name"] for e in recorded if e.type == "value_recorded"] == ["reading"]


async def test_cancel_stops_a_waiting_run(orch: Orchestrator, make_worker) -> None:
    async with running(make_worker(workflows=ALL_WF, activities=ALL_ACT)):
        handle = await orch.start(waits_for_signal)
        await _until(lambda: _status_is(handle, "waiting"))
        await handle.cancel()
        with pytest.raises(RunCancelledError):
            await handle.result(timeout=20)
    assert (await handle.info()).status == "cancelled"


async def test_runs_are_listed_by_status_from_the_index(orch: Orchestrator, make_worker) -> None:
    pending = await orch.start(fan_in, 1, run_id="listed-pending")
    assert [r.run_id for r in await orch.list_runs("pending")] == [pending.run_id]
    async with running(make_worker(workflows=ALL_WF, activities=ALL_ACT)):
        await pending.result(timeout=20)
    assert [r.run_id for r in await orch.list_runs("completed")] == [pending.run_id]
    assert await orch.list_runs("pending") == []


# -- bad input ----------------------------------------------------------------------------
async def test_run_id_is_an_idempotency_key(orch: Orchestrator) -> None:
    first = await orch.start(fan_in, 3, run_id="order-42")
    again = await orch.start(fan_in, 3, run_id="order-42")
    assert again.run_id == first.run_id
    with pytest.raises(RunIdConflictError, match="different input"):
        await orch.start(fan_in, 4, run_id="order-42")
    with pytest.raises(RunIdConflictError, match="different workflow"):
        await orch.start(sleeper, 3, run_id="order-42")


async def test_arguments_that_are_not_json_are_refused_early(orch: Orchestrator) -> None:
    with pytest.raises(SerializationError, match=r"input of workflow 'fan_in'.*JSON"):
        await orch.start(fan_in, object())


async def test_unknown_workflow_fails_the_run_with_the_fix(orch: Orchestrator, make_worker) -> None:
    async with running(make_worker(workflows=ALL_WF, activities=ALL_ACT)):
        handle = await orch.start("no.such.workflow")
        with pytest.raises(RunFailedError) as err:
            await handle.result(timeout=20)
    assert err.value.error["type"] == "UnknownWorkflowError"
    assert "--import" in err.value.error["message"]


async def test_unknown_activity_fails_the_step_with_the_fix(
    orch: Orchestrator, make_worker
) -> None:
    @workflow(name="calls_unknown")
    async def calls_unknown(ctx: Context) -> Any:
        return await ctx.run("no.such.activity")

    async with running(make_worker(workflows=[calls_unknown])):
        with pytest.raises(RunFailedError, match=r"no.such.activity.*not registered"):
            await (await orch.start(calls_unknown)).result(timeout=20)


async def test_unknown_run_id_is_a_clear_error(orch: Orchestrator) -> None:
    with pytest.raises(RunNotFoundError, match="taskloom runs"):
        await orch.handle("nope").info()
    with pytest.raises(RunNotFoundError):
        await orch.handle("nope").signal("x")


async def test_late_duplicate_results_are_dropped_and_counted(
    orch: Orchestrator, store: Store
) -> None:
    handle = await orch.start(fan_in, 1)
    event = {"type": "activity_completed", "seq": "0.0.0", "name": "echo", "result": {"i": 0}}
    first, second = await store.record([(handle.run_id, "0.0.0", event)] * 2, "w-test")
    assert (first.status, second.status) == ("ok", "dup")
    assert (await handle.info()).duplicates_dropped == 1
    assert len(await _steps(store, handle.run_id, "activity_completed")) == 1


# -- helpers ------------------------------------------------------------------------------
async def _status_is(handle: Any, status: str) -> bool:
    return bool((await handle.info()).status == status)


async def _until(check: Any, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


async def test_activity_arguments_that_are_not_json_fail_the_run_clearly(
    orch: Orchestrator, make_worker
) -> None:
    @workflow(name="bad_args")
    async def bad_args(ctx: Context) -> Any:
        return await ctx.run(echo, {1, 2, 3})

    async with running(make_worker(workflows=[bad_args], activities=ALL_ACT)):
        with pytest.raises(RunFailedError) as err:
            await (await orch.start(bad_args)).result(timeout=20)
    assert err.value.error["type"] == "SerializationError"
    assert "arguments of activity 'echo'" in err.value.error["message"]


@pytest.mark.timeout(60)
async def test_a_new_owner_schedules_again_queued_steps_whose_delivery_is_gone(
    orch: Orchestrator, make_worker, store: Store
) -> None:
    """A takeover replays the run and schedules again every step that the log says was
    scheduled and has no outcome, queued ones too: a delivery may be gone (trimmed away
    here) or stuck with a worker that will never start it (issue 12, finding 3)."""
    gate, calls = asyncio.Event(), []

    @activity(name="gated")
    async def gated(i: int) -> int:
        calls.append(i)
        if i == 0:
            await gate.wait()
        return i

    @workflow(name="gated_fan_out")
    async def gated_fan_out(ctx: Context, n: int) -> list[int]:
        return await ctx.gather(*(ctx.run(gated, i) for i in range(n)))

    async with running(make_worker(workflows=[gated_fan_out], activities=[gated], concurrency=1)):
        handle = await orch.start(gated_fan_out, 5)

        async def step_0_runs() -> bool:  # on the owner's one slot; 1-4 are on the queue
            return calls == [0]

        await _until(step_0_runs)
        queue = store.keys.queue("default")
        assert await store.raw.xlen(queue) == 4
        await store.raw.xtrim(queue, maxlen=0)  # their deliveries are lost
        gate.set()
    # The first worker stopped and handed the run over; the next owner replays it.
    async with running(make_worker(workflows=[gated_fan_out], activities=[gated], concurrency=2)):
        assert await handle.result(timeout=20) == list(range(5))
    assert sorted(calls) == list(range(5)), "each step ran once"
