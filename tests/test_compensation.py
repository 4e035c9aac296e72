"""Compensation (sagas), run timeouts and durable sleeps on the clock."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from taskloom import (
    Context,
    ManualClock,
    Orchestrator,
    RunCancelledError,
    RunFailedError,
    workflow,
)
from tests import compensation_workflows as saga
from tests.helpers import running
from tests.test_durability import start_worker, stop_worker, wait_for, wait_for_events

pytestmark = pytest.mark.anyio

SAGA = "tests.compensation_workflows"


def lines(path: Path) -> list[tuple[str, str, str]]:
    if not path.exists():
        return []
    return [tuple(line.split()) for line in path.read_text().splitlines()]  # type: ignore[misc]


async def undo_events(orch: Orchestrator, run_id: str) -> list[Any]:
    return [
        e
        for e in await orch.store.read_log(run_id)
        if e.type == "activity_completed" and str(e.seq).startswith("undo.")
    ]


async def test_a_failed_run_undoes_what_succeeded_newest_first(
    orch: Orchestrator, make_worker: Any, tmp_path: Path
) -> None:
    path = tmp_path / "effects"
    async with running(make_worker(modules=[saga])):
        handle = await orch.start(saga.trip, str(path))
        with pytest.raises(RunFailedError, match="card declined"):
            await handle.result(timeout=10)
    assert [(k, w) for k, w, _ in lines(path)] == [
        ("do", "flight"),
        ("do", "hotel"),
        ("do", "car"),
        ("do", "payment"),
        ("undo", "car"),
        ("undo", "hotel"),
        ("undo", "flight"),
    ]
    events = await orch.store.read_log(handle.run_id)
    (failed,) = [e for e in events if e.type == "run_failed"]
    assert [(c["activity"], c["ok"]) for c in failed.data["compensations"]] == [
        ("saga.book", True)
    ] * 3


async def test_a_cancelled_run_is_compensated_too(
    orch: Orchestrator, make_worker: Any, tmp_path: Path
) -> None:
    path = tmp_path / "effects"
    async with running(make_worker(modules=[saga])):
        handle = await orch.start(saga.trip, str(path), 0.0, "sleep")
        await wait_for_events(orch.store, handle.run_id, "timer_started", 1)
        await handle.cancel()
        with pytest.raises(RunCancelledError):
            await handle.result(timeout=10)
    assert [w for k, w, _ in lines(path) if k == "undo"] == ["car", "hotel", "flight"]


async def test_compensations_survive_a_sigkill_and_run_once_each(
    orch: Orchestrator, spawn_worker: Any, tmp_path: Path
) -> None:
    path = tmp_path / "effects"
    first = await start_worker(spawn_worker, module=SAGA, concurrency=2, lease_ttl=1.0)
    handle = await orch.start(saga.trip, str(path), 0.3)
    await wait_for(lambda: _undone(orch, handle.run_id, 1), "the first compensation recorded")
    assert await stop_worker(first) == -signal.SIGKILL  # in the middle of compensating

    await start_worker(spawn_worker, module=SAGA, concurrency=2, lease_ttl=1.0)
    with pytest.raises(RunFailedError, match="card declined"):
        await handle.result(timeout=30)
    undone = await undo_events(orch, handle.run_id)
    assert [e.seq for e in undone] == ["undo.2", "undo.1", "undo.0"], "newest first, once each"
    effects = {(w, key) for k, w, key in lines(path) if k == "undo"}
    assert sorted(w for w, _ in effects) == ["car", "flight", "hotel"], "one effect per key"
    runs = [w for k, w, _ in lines(path) if k == "undo"]
    assert len(runs) <= 4, f"only the compensation in flight may run again: {runs}"


async def test_a_run_past_its_timeout_fails_and_is_compensated(
    orch: Orchestrator, make_worker: Any, tmp_path: Path
) -> None:
    path, clock = tmp_path / "effects", ManualClock()
    async with running(make_worker(modules=[saga], clock=clock)):
        handle = await orch.start(saga.trip, str(path), 0.0, "sleep", timeout=60)
        await wait_for_events(orch.store, handle.run_id, "timer_started", 1)
        clock.advance(61)
        with pytest.raises(RunFailedError, match="ran past its timeout") as caught:
            await handle.result(timeout=10)
    assert caught.value.error["type"] == "RunTimeoutError"
    assert [w for k, w, _ in lines(path) if k == "undo"] == ["car", "hotel", "flight"]


@workflow(name="c.nap")
async def nap(ctx: Context) -> str:
    await ctx.sleep(24 * 3600)
    return "rested"


async def test_a_day_long_durable_sleep_takes_no_real_time(
    orch: Orchestrator, make_worker: Any
) -> None:
    clock = ManualClock()
    async with running(make_worker(workflows=[nap], clock=clock)):
        handle = await orch.start(nap)
        await wait_for_events(orch.store, handle.run_id, "timer_started", 1)
        clock.advance(24 * 3600 - 1)
        await asyncio.sleep(0.1)
        assert (await handle.info()).status != "completed"
        clock.advance(1)
        assert await handle.result(timeout=10) == "rested"


async def _undone(orch: Orchestrator, run_id: str, n: int) -> bool:
    return len(await undo_events(orch, run_id)) >= n
