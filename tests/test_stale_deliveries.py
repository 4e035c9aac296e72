"""A worker paused past its lease does not run what waited in it meanwhile (issue 12,
finding 6): deliveries it had prefetched were taken over, run and recorded by another
worker; on waking it ran them again. Real worker processes, SIGSTOP as the pause."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import pytest

from taskloom import Orchestrator
from taskloom.engine.keys import Keys
from tests import durable_workflows
from tests.test_durability import (
    Spawn,
    assert_recorded_once,
    executions,
    start_worker,
    stop_worker,
    wait_for,
)

pytestmark = pytest.mark.anyio


async def test_a_worker_paused_past_its_lease_runs_none_of_its_prefetched_steps_on_waking(
    orch: Orchestrator, spawn_worker: Spawn, tmp_path: Path
) -> None:
    path, slots, n = tmp_path / "executions", 4, 40
    a = await start_worker(spawn_worker, concurrency=slots, lease_ttl=1.0)
    handle = await orch.start(durable_workflows.fan_out, n, str(path), 0.4, run_id="paused")
    queue = orch.store.keys.queue("default")
    await orch.store.ensure_groups("default")  # idempotent: A may not have made them yet

    async def prefetched() -> bool:
        """A runs queued steps (its first ``slots`` ran in the owner's slots) and holds
        as many deliveries again, prefetched, waiting for those slots."""
        if len(executions(path)) <= slots:
            return False
        return (await orch.store.raw.xpending(queue, Keys.GROUP))["pending"] >= slots + 2

    await wait_for(prefetched, "worker A running queued steps, with more prefetched")
    a.send_signal(signal.SIGSTOP)  # frozen with work waiting for its slots
    ran_before = len(executions(path))
    a_id = re.search(r"worker (\S+): ", "".join(a.output)).group(1)  # type: ignore[attr-defined, union-attr]
    b = await start_worker(spawn_worker, concurrency=slots, lease_ttl=1.0)
    try:
        assert len(await handle.result(timeout=60)) == n  # B took over and finished it all
        a.send_signal(signal.SIGCONT)
        # A's first heartbeat after waking finds its run gone: by then it has started
        # whatever it was going to start on waking.
        await wait_for(lambda: "lease lost" in "".join(a.output), "A to wake")  # type: ignore[attr-defined]
        await asyncio.sleep(0)
        assert await stop_worker(a, signal.SIGTERM) == 0  # graceful: waits for what runs
    finally:
        await stop_worker(b)
    await assert_recorded_once(orch.store, handle.run_id)
    after_waking = [i for i, worker in executions(path)[ran_before:] if worker == a_id]
    assert after_waking == [], f"A ran recorded steps again on waking: {sorted(after_waking)}"
