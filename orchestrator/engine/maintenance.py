"""A worker's periodic duties: moving due retries onto the queue, and every
``lease_ttl / 4`` the heartbeat, the watch over running attempts, the takeover of runs
and deliveries dead workers left, due timers and human-task SLAs, the retention sweep
and the gauges."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from taskloom.engine.keys import Keys

if TYPE_CHECKING:
    from taskloom.engine.metrics import Metrics
    from taskloom.engine.worker import Worker

__all__ = ["GAUGE_INTERVAL_S", "SWEEP_INTERVAL_MS", "SWEEP_INTERVAL_S", "Maintenance"]

log = logging.getLogger("taskloom.engine.worker")

SWEEP_INTERVAL_S = 60.0
"""How often one of the workers deletes expired runs and unreferenced blobs."""
SWEEP_INTERVAL_MS = int(SWEEP_INTERVAL_S * 1000)

GAUGE_INTERVAL_S = 5.0
"""How often a worker with metrics refreshes its gauges (in flight, dead letters)."""


class Maintenance:
    """The worker's retry and maintenance loops, and the events that wake them early."""

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self.retry_due = asyncio.Event()
        """Set when a retry this worker scheduled is due (the retry loop moves it)."""
        self.timer_due = asyncio.Event()
        """Set when a timer this worker set is due (the maintenance loop fires it)."""

    async def retry_loop(self) -> None:
        """Move due retries onto the queue: at once when this worker set them, and
        every ``lease_ttl`` for those a dead worker left behind."""
        w = self.w
        store, cancel = w.store, None
        while not w._stopping.is_set():
            self.retry_due.clear()
            await store.move_due_retries(w.queue, now_ms=w.clock.now_ms())
            due = await store.next_retry_ms(w.queue)
            if cancel is not None:
                cancel()
            cancel = None if due is None else w.clock.call_at(due, self.retry_due.set)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.retry_due.wait(), w.lease_ttl)

    async def maintenance_loop(self) -> None:
        w = self.w
        interval = w.lease_ttl / 4
        next_gauges, next_sweep = 0.0, time.monotonic() + SWEEP_INTERVAL_S
        while not w._stopping.is_set():
            await w.ownership.heartbeat()
            await w.activities.watch_attempts()
            await self.recover()
            if w.retention is not None and time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + SWEEP_INTERVAL_S
                if await w.store.raw.set(
                    w.store.keys.sweep_lock, w.worker_id, nx=True, px=SWEEP_INTERVAL_MS
                ):  # one worker sweeps per interval
                    await w.sweep()
            if w.metrics is not None and time.monotonic() >= next_gauges:
                next_gauges = time.monotonic() + GAUGE_INTERVAL_S
                await self.update_gauges(w.metrics)
            self.timer_due.clear()
            with contextlib.suppress(TimeoutError):  # a timer this worker set wakes it early
                await asyncio.wait_for(self.timer_due.wait(), interval)

    async def sweep(self) -> tuple[int, int]:
        """Delete runs that ended more than ``retention`` seconds ago, then the blobs no
        run references any more; returns ``(runs, blobs)`` deleted."""
        w = self.w
        if w.retention is None:
            return 0, 0
        now = w.clock.now_ms()
        runs = await w.payloads.expire_runs(older_than_ms=now - int(w.retention * 1000))
        blobs = await w.payloads.collect(now_ms=now)
        if runs or blobs:
            log.info("retention: deleted %d runs and %d blobs", len(runs), blobs)
        return len(runs), blobs

    async def update_gauges(self, metrics: Metrics) -> None:
        """Refresh the gauges: activities in flight, dead letters, the inbox."""
        w = self.w
        metrics.set_in_flight(len(w.activities.inflight) - len(w._waiting))
        metrics.set_dead_letters(await w.dead_letters.count())
        metrics.set_inbox(await w.human_tasks.stats())  # the open count included

    async def recover(self) -> None:
        """Resume runs of dead owners, reclaim stuck deliveries, fire due timers."""
        w = self.w
        store, idle = w.store, w.claim_ttl_ms
        for run_id in await store.expired_leases():
            if run_id not in w.runs:
                await w.take_run(run_id)
        # A dead worker's deliveries come back even while this one is busy: they queue
        # for a slot here, kept alive by this worker's heartbeat.
        res = await store.raw.xautoclaim(
            store.keys.queue(w.queue),
            Keys.GROUP,
            w.worker_id,
            idle,
            "0-0",
            count=max(1, w._free + w._prefetch_room()),
        )
        if res[1]:
            await w.intake.intake(res[1])
        res = await store.raw.xautoclaim(
            store.keys.runq, Keys.GROUP, w.worker_id, idle, "0-0", count=50
        )
        if res[1]:
            await w.ownership.handle_run_messages(res[1])
        await store.pop_timers(now=w.clock.now_ms())
        for step in await w.human_tasks.apply_due_slas(now=w.clock.now_ms()):
            log.info("human task %s: %s %s", step.task_id, step.kind, step.detail)
            if step.kind == "sla_breached" and w.metrics is not None:
                w.metrics.sla_breach()
