"""The log's event catalogue (taskloom.engine.events) holds what runs really write.

A workflow that schedules, completes, fails and retries activities, sleeps, waits for a
signal, runs a child, reads the time, records a value and asks a person writes its log
on a real Redis; every stored event must be a kind the catalogue names, with every field
its typed dict requires and none it does not know. A producer that adds a field without
saying so in the catalogue, or a kind nobody catalogued, fails here.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from taskloom import (
    ChildWorkflowError,
    Context,
    Expire,
    HumanTaskExpiredError,
    ManualClock,
    Orchestrator,
    RetryPolicy,
    RunCancelledError,
    RunFailedError,
    activity,
    workflow,
)
from taskloom.engine.events import EVENT_TYPES, KINDS
from taskloom.engine.store import Event
from tests.helpers import running, wait_until

pytestmark = pytest.mark.anyio

_tries: dict[str, int] = {}


@activity
async def ev_echo(x: int) -> int:
    return x


@activity(retry=RetryPolicy(max_attempts=2, initial_interval=0.01, jitter=0.0))
async def ev_flaky(key: str) -> str:
    _tries[key] = _tries.get(key, 0) + 1
    if _tries[key] == 1:
        raise ConnectionError("first try fails")
    return "ok"


@activity(retry=RetryPolicy(max_attempts=1))
async def ev_broken() -> None:
    raise ValueError("never works")


@activity(retry=RetryPolicy(max_attempts=1, on_exhausted="pause"))
async def ev_paused(key: str) -> str:
    _tries[key] = _tries.get(key, 0) + 1
    if _tries[key] == 1:
        raise ValueError("fails until redriven")
    return "redriven"


@workflow
async def ev_failing_child(ctx: Context) -> None:
    raise ValueError("the child fails")


@workflow
async def ev_failing(ctx: Context, key: str) -> None:
    await ctx.run(ev_paused, key)
    with contextlib.suppress(ChildWorkflowError):
        await ctx.child(ev_failing_child)
    with contextlib.suppress(HumanTaskExpiredError):
        await ctx.escalate("Anyone?", sla=60, fallback=[Expire("nobody answered")])
    raise RuntimeError("the run fails")


@workflow
async def ev_waits(ctx: Context) -> None:
    await ctx.wait_for_signal("never")


@workflow
async def ev_child(ctx: Context, x: int) -> int:
    return int(await ctx.run(ev_echo, x)) + 1


@workflow
async def ev_everything(ctx: Context, key: str) -> dict[str, Any]:
    first = await ctx.gather(ctx.run(ev_echo, 1), ctx.run(ev_flaky, key))
    try:
        await ctx.run(ev_broken)
    except Exception as exc:  # an ActivityError: the run goes on
        first.append(type(exc).__name__)
    await ctx.sleep(0.01)
    ctx.now()
    ctx.record("note", {"seen": first})
    signal = await ctx.wait_for_signal("go")
    child = await ctx.child(ev_child, 41)
    decision = await ctx.escalate("Ship it?", context={"child": child})
    return {"first": first, "signal": signal, "child": child, "decision": decision.decision}


def check(event: Event) -> list[str]:
    """What is wrong with ``event`` against its kind's typed dict ([] if nothing)."""
    if event.type not in EVENT_TYPES:
        return [f"{event.type!r} is not a catalogued kind"]
    kind = KINDS[event.type]
    keys = set(event.data)
    missing = kind.__required_keys__ - keys
    unknown = keys - kind.__required_keys__ - kind.__optional_keys__
    return [f"{event.type} lacks {sorted(missing)}"] * bool(missing) + [
        f"{event.type} carries uncatalogued {sorted(unknown)}"
    ] * bool(unknown)


async def test_every_event_a_run_writes_is_catalogued_with_its_fields(
    orch: Orchestrator,
) -> None:
    worker = orch.worker(workflows=[ev_everything, ev_child])
    async with running(worker):
        handle = await orch.start(ev_everything, "k1")

        async def asked() -> Any:
            return [t for t in await orch.human_tasks.list() if t.run_id == handle.run_id]

        await handle.signal("go", {"by": "ana"})
        (task,) = await wait_until(asked, "the escalation")
        await orch.human_tasks.decide(task.id, "approve", by="ana")
        result = await handle.result(timeout=60)
    assert result == {
        "first": [1, "ok", "ActivityError"],
        "signal": {"by": "ana"},
        "child": 42,
        "decision": "approve",
    }
    events = [e async for e in handle.events(follow=False)]
    (child_id,) = [e.data["child_id"] for e in events if e.type == "child_started"]
    child_events = [e async for e in orch.handle(child_id).events(follow=False)]
    assert [p for e in events + child_events for p in check(e)] == []
    failures = {"activity_paused", "activity_redriven", "child_failed", "human_expired"}
    seen = {e.type for e in events + child_events}
    assert seen >= EVENT_TYPES - failures - {"run_failed", "run_cancelled", "cancel_requested"}


async def test_the_events_of_failures_and_cancellation_are_catalogued_too(
    orch: Orchestrator,
) -> None:
    clock = ManualClock()
    worker = orch.worker(workflows=[ev_failing, ev_failing_child, ev_waits], clock=clock)
    async with running(worker):
        failing, waiting = await orch.start(ev_failing, "k2"), await orch.start(ev_waits)
        entry_id = f"{failing.run_id}/0"
        await wait_until(lambda: orch.dead_letters.list(run_id=failing.run_id), "the pause")
        await orch.dead_letters.redrive(entry_id)
        await wait_until(orch.human_tasks.list, "the escalation")
        clock.advance(61)
        with pytest.raises(RunFailedError, match="the run fails"):
            await failing.result(timeout=60)
        await waiting.cancel()
        with pytest.raises(RunCancelledError):
            await waiting.result(timeout=60)
    events = [e async for e in failing.events(follow=False)]
    events += [e async for e in waiting.events(follow=False)]
    assert [p for e in events for p in check(e)] == []
    assert {e.type for e in events} >= {
        "activity_paused",
        "activity_redriven",
        "child_failed",
        "human_expired",
        "run_failed",
        "cancel_requested",
        "run_cancelled",
    }
