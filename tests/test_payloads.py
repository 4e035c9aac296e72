"""Big payloads go to the blob store and the log keeps references; retention deletes
finished runs and then the blobs nothing references."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from taskloom import (
    ActivityError,
    Context,
    ManualClock,
    Orchestrator,
    RunNotFoundError,
    activity,
    workflow,
)
from taskloom.engine.blobs import LocalBlobStore, is_ref
from taskloom.engine.payloads import GC_GRACE_MS, Payloads
from tests.helpers import running

pytestmark = pytest.mark.anyio


@activity(name="p.big")
async def big(n: int) -> str:
    return "x" * n


@activity(name="p.measure")
async def measure(text: str) -> int:
    return len(text)


@workflow(name="p.flow")
async def flow(ctx: Context, n: int) -> dict[str, Any]:
    first = await ctx.run(big, n)
    again = await ctx.run(big, n)  # the same bytes: stored once
    size = await ctx.run(measure, first + "y")
    await ctx.wait_for_signal("go")  # the run leaves memory; a new worker replays it
    return {"len": len(first), "same": first == again, "measured": size, "head": first[:3]}


@workflow(name="p.huge")
async def huge(ctx: Context, n: int) -> str:
    try:
        await ctx.run(big, n)
    except ActivityError as exc:
        return f"{exc.error_type}: {exc}"
    return "stored"


@workflow(name="p.short")
async def short(ctx: Context, n: int) -> int:
    return len(await ctx.run(big, n))


DEFS: dict[str, Any] = {"workflows": [flow, huge, short], "activities": [big, measure]}


def payloads(orch: Orchestrator, root: Path, *, hard_limit: int = 10**6) -> Payloads:
    return Payloads(orch.store, LocalBlobStore(root), threshold=1024, hard_limit=hard_limit)


async def blob_count(root: Path) -> int:
    return len([r async for r in LocalBlobStore(root).iter_refs()])


async def test_big_values_are_stored_once_referenced_and_read_back_on_replay(
    orch: Orchestrator, make_worker: Any, tmp_path: Path
) -> None:
    pay = payloads(orch, tmp_path)
    async with running(make_worker(payloads=pay, **DEFS)):
        handle = await orch.start(flow, 5000)

        async def evicted() -> bool:
            info = await handle.info()
            return (info.status, info.owner) == ("waiting", "")

        while not await evicted():
            await asyncio.sleep(0.01)
    events = await orch.store.read_log(handle.run_id)
    results = [e.data["result"] for e in events if e.type == "activity_completed"]
    assert is_ref(results[0]) and results[0] == results[1], "the log holds one reference"
    assert results[0]["size"] == 5002  # the JSON string, quotes included
    scheduled = [e.data for e in events if e.type == "activity_scheduled"]
    assert is_ref(scheduled[2]["args"]), "big arguments are referenced too"
    assert await blob_count(tmp_path) == 2  # the result once, the arguments once
    assert max(len(e.id) + len(str(e.data)) for e in events) < 1024, "no big value in the log"

    await handle.signal("go")
    async with running(make_worker(payloads=payloads(orch, tmp_path), **DEFS)):
        result = await handle.result(timeout=10)
    assert result == {"len": 5000, "same": True, "measured": 5001, "head": "xxx"}


async def test_a_value_past_the_hard_limit_is_refused_with_the_setting_to_raise(
    orch: Orchestrator, make_worker: Any, tmp_path: Path
) -> None:
    async with running(make_worker(payloads=payloads(orch, tmp_path, hard_limit=4096), **DEFS)):
        out = await (await orch.start(huge, 10_000)).result(timeout=10)
    assert out.startswith("PayloadTooLargeError: ")
    assert "10002 bytes, over the hard limit of 4096 bytes" in out
    assert "TASKLOOM_PAYLOAD_HARD_LIMIT" in out
    assert "after" not in out.split(":")[1], "not retried: a bigger try cannot succeed"
    assert await orch.dead_letters.list() != [], "and it is on record in the dead letters"


async def test_retention_deletes_finished_runs_then_the_blobs_only_they_referenced(
    orch: Orchestrator, make_worker: Any, tmp_path: Path
) -> None:
    clock = ManualClock()
    worker = make_worker(payloads=payloads(orch, tmp_path), clock=clock, retention=7200, **DEFS)
    async with running(worker):
        old = await orch.start(short, 3000)
        shared = await orch.start(short, 4000)
        assert await old.result(timeout=10) == 3000
        assert await shared.result(timeout=10) == 4000
        assert await blob_count(tmp_path) == 2
        assert await worker.sweep() == (0, 0), "nothing has expired yet"

        clock.advance(7201)
        keep = await orch.start(short, 4000)  # started later: references the 4000 blob
        assert await keep.result(timeout=10) == 4000
        runs, blobs = await worker.sweep()
        assert runs == 2 and blobs == 0, "unreferenced blobs wait out a grace period"
        for gone in (old, shared):
            with pytest.raises(RunNotFoundError):
                await gone.info()
        assert [r.run_id for r in await orch.list_runs("completed")] == [keep.run_id]

        clock.advance(GC_GRACE_MS / 1000)
        assert await worker.sweep() == (0, 1), "the 3000 blob goes; the shared one stays"
    assert await blob_count(tmp_path) == 1
    async with running(make_worker(payloads=payloads(orch, tmp_path), **DEFS)):
        again = await orch.start(flow, 4000)
        await again.signal("go")
        assert (await again.result(timeout=10))["len"] == 4000
