"""Worker processes: graceful shutdown hands runs over at once, nothing runs twice."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import pytest

from taskloom import Orchestrator

pytestmark = pytest.mark.anyio


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def test_sigterm_finishes_in_flight_work_and_hands_the_run_over(
    orch: Orchestrator, spawn_worker, tmp_path: Path
) -> None:
    log_path = tmp_path / "executions.log"
    # A long lease: if the handover relied on the lease expiring, the run would sit idle.
    first: subprocess.Popen[str] = spawn_worker("tests.worker_workflows", lease_ttl=60)
    handle = await orch.start("slow_chain", 30, str(log_path))
    async with asyncio.timeout(30):
        while len(_lines(log_path)) < 5:
            await asyncio.sleep(0.02)
    first.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(first.wait, 30) == 0
    info = await handle.info()
    assert (info.owner, info.status) == ("", "waiting"), "the run was released on shutdown"
    done_by_first = len(_lines(log_path))
    completed = [
        e for e in await orch.store.read_log(handle.run_id) if e.type == "activity_completed"
    ]
    assert len(completed) == done_by_first, "the in-flight activity finished and was recorded"

    spawn_worker("tests.worker_workflows", lease_ttl=60)
    assert await handle.result(timeout=30) == list(range(30))
    steps = [line.split()[0] for line in _lines(log_path)]
    assert sorted(steps, key=int) == [str(i) for i in range(30)], "each step ran exactly once"
    pids = {line.split()[1] for line in _lines(log_path)}
    assert len(pids) == 2, "the second worker took over"
