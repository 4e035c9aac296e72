"""Retries on durable timers, and the dead-letter queue, against a real Redis, with a
clock the tests move (no test sleeps through a real backoff)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest

from taskloom import (
    ActivityError,
    ConfigurationError,
    Context,
    DeadLetterNotFoundError,
    ManualClock,
    NonRetryableError,
    Orchestrator,
    RetryableError,
    RetryPolicy,
    UserError,
    Worker,
    activity,
    activity_info,
    workflow,
)
from taskloom.engine.store import Event
from tests.helpers import at_least, running, wait_until

pytestmark = pytest.mark.anyio

# key -> how many attempts fail before one succeeds; what each attempt saw.
FAILS: dict[str, int] = {}
SEEN: dict[str, list[int]] = defaultdict(list)
HARD: set[str] = set()  # keys whose attempts raise NonRetryableError


@pytest.fixture(autouse=True)
def _reset() -> None:
    FAILS.clear()
    SEEN.clear()
    HARD.clear()


def _attempt(key: str) -> str:
    n = activity_info().attempt
    SEEN[key].append(n)
    if key in HARD:
        raise NonRetryableError(f"{key}: the request is malformed")
    if n <= FAILS.get(key, 0):
        raise ConnectionError(f"{key}: attempt {n} failed")
    return f"{key} ok on attempt {n}"


EXACT = RetryPolicy(max_attempts=3, initial_interval=2.0, backoff=3.0, jitter=0.0)
PAUSE = RetryPolicy(max_attempts=2, initial_interval=1.0, jitter=0.0, on_exhausted="pause")


@activity(name="r.flaky", retry=EXACT)
async def flaky(key: str) -> str:
    return _attempt(key)


@activity(name="r.paused", retry=PAUSE)
async def pausing(key: str) -> str:
    return _attempt(key)


@activity(name="r.asks")
async def asks_for_later(key: str) -> str:
    if activity_info().attempt == 1:
        raise RetryableError("rate limited", retry_after=5.0)
    return _attempt(key)


@workflow(name="r.one")
async def one(ctx: Context, name: str, key: str) -> Any:
    act = {"flaky": flaky, "paused": pausing, "asks": asks_for_later}[name]
    try:
        return await ctx.run(act, key)
    except ActivityError as exc:
        return {"caught": exc.error_type, "attempts": exc.attempts, "history": exc.history}


DEFS: dict[str, Any] = {"workflows": [one], "activities": [flaky, pausing, asks_for_later]}


async def events_of(orch: Orchestrator, run_id: str, kind: str) -> list[Event]:
    return [e for e in await orch.store.read_log(run_id) if e.type == kind]


async def settle(worker: Worker) -> None:
    """Give the worker's loops a moment of real time (nothing is due on the clock)."""
    worker._retry_due.set()
    await asyncio.sleep(0.05)


async def test_backoff_waits_as_configured_on_the_clock(orch: Orchestrator, make_worker) -> None:
    clock = ManualClock()
    FAILS["a"] = 2
    worker = make_worker(clock=clock, **DEFS)
    async with running(worker):
        handle = await orch.start(one, "flaky", "a")
        (first,) = await wait_until(
            lambda: events_of(orch, handle.run_id, "activity_retrying"), "a first retry"
        )
        assert first.data["due_ms"] - first.data["ended_ms"] == 2000  # initial_interval
        clock.advance(1.99)
        await settle(worker)
        assert SEEN["a"] == [1], "the retry waits for its due time"
        clock.advance(0.01)
        retries = await wait_until(
            lambda: at_least(events_of(orch, handle.run_id, "activity_retrying"), 2), "2nd"
        )
        assert retries[1].data["due_ms"] - retries[1].data["ended_ms"] == 6000  # x backoff
        clock.advance(6)
        assert await handle.result(timeout=10) == "a ok on attempt 3"
    assert SEEN["a"] == [1, 2, 3]
    assert [e.data["attempt"] for e in retries] == [1, 2]
    assert [e.data["error"]["type"] for e in retries] == ["ConnectionError"] * 2


async def test_retry_after_from_the_error_wins_over_backoff(orch: Orchestrator, make_worker):
    clock = ManualClock()
    async with running(make_worker(clock=clock, **DEFS)):
        handle = await orch.start(one, "asks", "b")
        (retry,) = await wait_until(
            lambda: events_of(orch, handle.run_id, "activity_retrying"), "retry"
        )
        assert retry.data["due_ms"] - retry.data["ended_ms"] == 5000
        assert retry.data["error"]["retry_after"] == 5.0
        clock.advance(5)
        assert await handle.result(timeout=10) == "b ok on attempt 2"


async def test_exhausted_attempts_raise_into_the_workflow_and_leave_a_dead_letter(
    orch: Orchestrator, make_worker
) -> None:
    clock = ManualClock()
    FAILS["c"] = 99
    worker = make_worker(clock=clock, **DEFS)
    async with running(worker):
        handle = await orch.start(one, "flaky", "c")
        for n in (1, 2):
            await wait_until(lambda n=n: len(SEEN["c"]) == n, f"attempt {n}")
            clock.advance(60)
        caught = await handle.result(timeout=10)
    assert caught["caught"] == "ConnectionError"
    assert caught["attempts"] == 3
    assert [h["attempt"] for h in caught["history"]] == [1, 2, 3]
    assert all(h["ended_ms"] >= h["started_ms"] for h in caught["history"])
    (entry,) = await worker.dead_letters.list()
    assert (entry.id, entry.status, entry.args) == (f"{handle.run_id}/0", "failed", ["c"])
    assert len(entry.attempts) == 3 and "Traceback" in entry.error["traceback"]
    with pytest.raises(DeadLetterNotFoundError, match="already got the failure"):
        await worker.dead_letters.redrive(entry.id)
    await worker.dead_letters.purge(entry.id)
    assert await worker.dead_letters.list() == []


async def test_non_retryable_pauses_at_once_and_redrive_completes_the_run(
    orch: Orchestrator, make_worker
) -> None:
    HARD.add("d")
    worker = make_worker(clock=ManualClock(), **DEFS)
    async with running(worker):
        handle = await orch.start(one, "paused", "d")
        (entry,) = await wait_until(worker.dead_letters.list, "a dead letter")
        assert SEEN["d"] == [1], "a non-retryable error is not retried"
        assert (entry.status, entry.error["type"]) == ("paused", "NonRetryableError")
        assert entry.attempts[0]["error"]["message"] == "d: the request is malformed"
        info = await wait_until(lambda: _evicted(handle), "the paused run to leave memory")
        assert info.status == "waiting"

        HARD.discard("d")  # the operator fixed the cause
        await worker.dead_letters.redrive(entry.id)
        assert await handle.result(timeout=10) == "d ok on attempt 2"
    assert await worker.dead_letters.list() == []
    kinds = [e.type for e in await orch.store.read_log(handle.run_id)]
    assert kinds.count("activity_paused") == kinds.count("activity_redriven") == 1
    with pytest.raises(DeadLetterNotFoundError):
        await worker.dead_letters.redrive(entry.id)


async def test_purging_a_paused_entry_hands_the_failure_to_the_workflow(
    orch: Orchestrator, make_worker
) -> None:
    clock = ManualClock()
    FAILS["e"] = 99
    worker = make_worker(clock=clock, **DEFS)
    async with running(worker):
        handle = await orch.start(one, "paused", "e")
        await wait_until(lambda: SEEN["e"] == [1], "attempt 1")
        clock.advance(1)
        (entry,) = await wait_until(worker.dead_letters.list, "a dead letter")
        assert [a["attempt"] for a in entry.attempts] == [1, 2]
        await worker.dead_letters.purge(entry.id)
        caught = await handle.result(timeout=10)
    assert (caught["caught"], caught["attempts"]) == ("ConnectionError", 2)


async def test_bad_retry_policies_and_dead_letter_ids_are_clear_errors(orch: Orchestrator):
    with pytest.raises(ConfigurationError, match=r"max_attempts must be >= 1 \(got 0\)"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigurationError, match="initial_interval must be >= 0"):
        RetryPolicy(initial_interval=-1)
    with pytest.raises(ConfigurationError, match="jitter must be between 0 and 1"):
        RetryPolicy(jitter=2)
    with pytest.raises(UserError, match="takes a RetryPolicy"):
        activity(retry={"max_attempts": 3})  # type: ignore[call-overload]
    letters = Worker(orch.store).dead_letters
    with pytest.raises(DeadLetterNotFoundError, match="no dead-letter entry"):
        await letters.redrive("nope/0")
    with pytest.raises(UserError, match="look like RUN_ID/SEQ"):
        await letters.purge("nope")


def test_backoff_grows_caps_and_jitters() -> None:
    p = RetryPolicy(initial_interval=1, backoff=2, max_interval=5, jitter=0.5)
    assert [p.delay(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]
    assert p.delay(1, rand=0.0) == 0.5 and p.delay(1, rand=1.0) == 1.5
    assert not p.retries({"type": "NonRetryableError"}, 1)
    assert not RetryPolicy(non_retryable=("KeyError",)).retries({"type": "KeyError"}, 1)
    assert p.retries({"type": "KeyError"}, 2) and not p.retries({"type": "KeyError"}, 3)


# -- helpers --------------------------------------------------------------------------
async def _evicted(handle: Any) -> Any:
    info = await handle.info()
    return info if (info.status, info.owner) == ("waiting", "") else None
