"""Deleting runs: retention keeps up with any number of ended runs, and a deleted run
(by the sweep or by ``orch.delete`` / ``taskloom runs delete``) leaves no key behind:
not its budget, not its human task, not its live token stream; blobs another run still
references stay."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from taskloom import (
    ActivityError,
    Context,
    ManualClock,
    Orchestrator,
    RetryPolicy,
    RunActiveError,
    RunCancelledError,
    RunNotFoundError,
    Settings,
    activity,
    workflow,
)
from taskloom.agents import Agent
from taskloom.agents.budget import BudgetKeys
from taskloom.agents.fake_llm import FakeLLM, reply
from taskloom.engine.keys import Keys
from taskloom.engine.payloads import Payloads
from tests.conftest import worker_env
from tests.helpers import running, taskloom, wait_until

pytestmark = pytest.mark.anyio

MODEL = "openai:gpt-4.1-mini"
streamer = Agent(name="ret.streamer", role="a storyteller", model=MODEL, stream=True)


@activity(name="ret.big")
async def big(text: str, n: int) -> str:
    return text * n


@activity(name="ret.fails", retry=RetryPolicy(max_attempts=1))
async def fails() -> None:
    raise ValueError("no luck")


@workflow(name="ret.nothing")
async def nothing(ctx: Context, i: int) -> int:
    return i


@workflow(name="ret.big_result")
async def big_result(ctx: Context, text: str) -> int:
    return len(await ctx.run(big, text, 5000))


@workflow(name="ret.waits")
async def waits(ctx: Context) -> Any:
    return await ctx.wait_for_signal("go")


@workflow(name="ret.everything")
async def everything(ctx: Context) -> dict[str, Any]:
    """A run that owns one of each kind of key: a subagent (budget, live tokens,
    messages as blobs), a big result (a blob), an escalation decided (an inbox item), an
    activity that failed for good (a dead-letter entry)."""
    with contextlib.suppress(ActivityError):
        await ctx.run(fails)
    story = await ctx.agent(streamer, "a story")
    size = len(await ctx.run(big, "x", 5000))
    decision = await ctx.escalate("Publish?", decisions=["yes", "no"])
    return {"story": story.text, "size": size, "decision": decision.decision}


@pytest.fixture
async def orch_blobs(
    client: Redis, prefix: str, redis_url: str, tmp_path: Path
) -> AsyncIterator[Orchestrator]:
    """An orchestrator (and its workers) with a blob store under ``tmp_path``."""
    settings = Settings(
        redis_url=redis_url,
        key_prefix=prefix,
        blob_url=str(tmp_path / "blobs"),
        payload_threshold=1024,
    )
    o = Orchestrator(client=client, settings=settings)
    await o.connect()
    yield o
    await o.close()


async def keys_of(client: Redis, prefix: str, run_id: str) -> list[str]:
    """Every key under ``prefix`` whose name holds ``run_id`` (its keys, its task)."""
    return sorted(
        [
            k
            async for k in client.scan_iter(match=f"{Keys(prefix).everything}", count=1000)
            if run_id in k
        ]
    )


def blob_files(root: Path) -> set[str]:
    return {p.name for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")}


def test_the_engine_deletes_the_budget_keys_the_llm_layer_writes() -> None:
    assert set(BudgetKeys("tl").all("r")) <= set(Keys("tl").owned("r"))


async def test_every_ended_run_past_retention_goes_in_one_sweep_beyond_the_old_cap(
    orch: Orchestrator, make_worker: Any
) -> None:
    """The old sweep deleted at most 500 runs per status per minute."""
    clock = ManualClock()
    worker = make_worker(workflows=[nothing], clock=clock, retention=60, concurrency=50)
    n = 700
    async with running(worker):
        handles = [await orch.start(nothing, i) for i in range(n)]
        for h in handles:
            await h.result(timeout=30)
    keep = await orch.start(nothing, -1)
    later = ManualClock(clock.now_ms() + 30_000)  # it ends 30 s later: not due yet
    async with running(make_worker(workflows=[nothing], clock=later)):
        await keep.result(timeout=10)
    clock.advance(61)
    assert (await worker.sweep())[0] == n
    assert [r.run_id for r in await orch.list_runs("completed")] == [keep.run_id]
    left = [k async for k in orch.store.raw.scan_iter(match=f"{orch.store.keys.prefix}:run:*")]
    assert sorted({k.split("{")[1].split("}")[0] for k in left}) == [keep.run_id]


async def test_a_running_worker_deletes_runs_as_they_fall_due(
    orch: Orchestrator, make_worker: Any
) -> None:
    clock = ManualClock()
    async with running(make_worker(workflows=[nothing], clock=clock, retention=30)):
        handles = [await orch.start(nothing, i) for i in range(3)]
        for h in handles:
            await h.result(timeout=10)
        clock.advance(10)
        assert len(await orch.list_runs("completed")) == 3, "not due yet"
        clock.advance(21)

        async def gone() -> bool:
            return await orch.list_runs("completed") == []

        await wait_until(gone, "the due runs deleted by the worker's own sweep", timeout=30)
    for h in handles:
        with pytest.raises(RunNotFoundError):
            await h.info()


@pytest.mark.parametrize("how", ["sweep", "delete"])
async def test_a_deleted_run_leaves_no_key_behind(
    how: str, fake: FakeLLM, orch_blobs: Orchestrator, client: Redis, prefix: str, tmp_path: Path
) -> None:
    fake.answer_with(lambda request: reply("once upon a time"))
    orch = orch_blobs
    clock = ManualClock()
    worker = orch.worker(
        workflows=[everything],
        activities=[big, fails],
        agents=[streamer],
        clock=clock,
        retention=60,
    )
    async with running(worker):
        handle = await orch.start(everything, budget_usd="1.00")
        (task,) = await wait_until(orch.human_tasks.list, "the escalation in the inbox")
        await orch.human_tasks.decide(task.id, "yes", by="ana")
        result = await handle.result(timeout=20)
    assert result == {"story": "once upon a time", "size": 5000, "decision": "yes"}
    owned = await keys_of(client, prefix, handle.run_id)
    keys = orch.store.keys
    for key in (
        keys.budgets.budget(handle.run_id),
        keys.budgets.expiry(handle.run_id),
        keys.inbox_task(task.id),
        keys.blobs(handle.run_id),
    ):
        assert key in owned, f"the run has {key} to delete"
    assert any(":live:" in k for k in owned), "and a live token stream"
    assert [e.run_id for e in await orch.dead_letters.list()] == [handle.run_id], "a dead letter"
    assert blob_files(tmp_path / "blobs"), "and blobs"

    if how == "sweep":
        clock.advance(61)
        assert await worker.sweep() == (1, 0)
    else:
        await orch.delete(handle.run_id)
        assert blob_files(tmp_path / "blobs") == set(), "no other run references its blobs"
    assert await keys_of(client, prefix, handle.run_id) == []
    with pytest.raises(RunNotFoundError):
        await handle.info()
    assert await client.exists(keys.inbox_task(task.id)) == 0
    assert await orch.dead_letters.count() == 0


async def test_delete_refuses_a_run_that_has_not_ended_and_says_to_cancel_it(
    orch: Orchestrator, make_worker: Any
) -> None:
    async with running(make_worker(workflows=[waits])):
        handle = await orch.start(waits)

        async def waiting() -> bool:
            return (await handle.info()).status == "waiting"

        await wait_until(waiting, "the run waiting on its signal")
        with pytest.raises(RunActiveError, match=r"is waiting: .*Cancel it first"):
            await orch.delete(handle.run_id)
        assert (await handle.info()).status == "waiting", "untouched"
        await handle.cancel()

        async def cancelled() -> bool:
            return (await handle.info()).status == "cancelled"

        await wait_until(cancelled, "the cancel")
    await orch.delete(handle.run_id)
    with pytest.raises(RunNotFoundError):
        await orch.delete(handle.run_id)


async def test_delete_keeps_a_blob_another_run_references(
    orch_blobs: Orchestrator, tmp_path: Path
) -> None:
    orch = orch_blobs
    async with running(orch.worker(workflows=[big_result], activities=[big])):
        shared, other, alone = (
            await orch.start(big_result, "s"),
            await orch.start(big_result, "s"),
            await orch.start(big_result, "a"),
        )
        for h in (shared, other, alone):
            assert await h.result(timeout=10) == 5000
    files = blob_files(tmp_path / "blobs")
    assert len(files) == 2
    await orch.delete(shared.run_id)
    assert blob_files(tmp_path / "blobs") == files, "the other run still references it"
    await orch.delete(alone.run_id)
    assert len(blob_files(tmp_path / "blobs")) == 1
    payloads: Payloads = orch.payloads()
    log = await orch.store.read_log(other.run_id)
    [done] = [e for e in log if e.type == "activity_completed"]
    assert await payloads.unpack(done.data["result"]) == "s" * 5000


async def test_taskloom_runs_delete_from_the_command_line(
    orch: Orchestrator, make_worker: Any, redis_url: str, prefix: str
) -> None:
    async with running(make_worker(workflows=[nothing, waits])):
        ended = await orch.start(nothing, 1)
        await ended.result(timeout=10)
        busy = await orch.start(waits)
        env = worker_env(redis_url, prefix)

        done = taskloom("runs", "delete", ended.run_id, env=env)
        assert (done.returncode, done.stdout.strip()) == (0, f"deleted run {ended.run_id}")
        with pytest.raises(RunNotFoundError):
            await ended.info()

        again = taskloom("runs", "delete", ended.run_id, env=env)
        assert again.returncode == 2
        assert f"no run {ended.run_id!r}" in again.stderr

        refused = taskloom("runs", "delete", busy.run_id, env=env)
        assert refused.returncode == 2
        assert "Cancel it first" in refused.stderr and f"taskloom cancel {busy.run_id}" in (
            refused.stderr
        )
        assert (await busy.info()).status in ("pending", "running", "waiting")


@workflow(name="ret.nap")
async def nap(ctx: Context) -> None:
    await ctx.sleep(3600)


@pytest.mark.parametrize("partitions", [1, 4])
async def test_a_deleted_run_leaves_no_timer_behind(
    orch: Orchestrator, client: Redis, partitions: int
) -> None:
    """A run cancelled in a durable sleep kept its timer until it fell due (an hour on,
    here; days for an SLA) after the run was deleted: a member of a sorted set no run
    owned. Deleting the run forgets it, in whichever timer partition it was set."""
    keys = orch.store.keys
    sets = [keys.timer_set(i) for i in range(partitions)]
    async with running(orch.worker(workflows=[nap], partitions=partitions)):
        handle = await orch.start(nap)

        async def timer_set() -> bool:
            scores = [await client.zscore(key, handle.run_id) for key in sets]
            return any(score is not None for score in scores)

        await wait_until(timer_set, "the run's timer")
        await handle.cancel()
        with pytest.raises(RunCancelledError):
            await handle.result(timeout=10)
    assert await timer_set(), "the timer outlives the cancelled run"
    await orch.delete(handle.run_id)
    assert not await timer_set()
