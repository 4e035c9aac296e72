"""A worker's periodic duties: moving due retries onto the queue; every ``lease_ttl / 4``
the watch over running attempts, the takeover of runs and deliveries dead workers left,
due timers and human-task SLAs, and the gauges; and, beside them, each on its own, the
heartbeat (every ``lease_ttl / 4`` too) and the retention sweep, which deletes finished
runs as they fall due (one worker at a time)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from taskloom.engine.keys import Keys
from taskloom.engine.partitions import delivery_id
from taskloom.engine.retention import RunDeleter

if TYPE_CHECKING:
    from taskloom.engine.metrics import Metrics
    from taskloom.engine.worker import Worker

__all__ = [
    "GAUGE_INTERVAL_S",
    "SWEEP_IDLE_S",
    "SWEEP_INTERVAL_MS",
    "SWEEP_INTERVAL_S",
    "SWEEP_LOCK_MS",
    "SWEEP_MIN_GAP_S",
    "Maintenance",
]

log = logging.getLogger("taskloom.engine.worker")

SWEEP_INTERVAL_S = 60.0
"""How often the sweeping worker collects unreferenced blobs (runs go as they fall due)."""
SWEEP_INTERVAL_MS = int(SWEEP_INTERVAL_S * 1000)
SWEEP_MIN_GAP_S = 1.0
"""The least time between two passes of the sweep, so runs ending at a high rate are
deleted in batches; a run is deleted at most this long after it falls due."""
SWEEP_MIN_GAP_MS = int(SWEEP_MIN_GAP_S * 1000)
SWEEP_IDLE_S = 5.0
"""The most time between two passes (real seconds): every worker tries the sweep lock
this often, so a dead holder's sweeping is taken over within ``SWEEP_LOCK_MS``."""
SWEEP_LOCK_MS = 30_000
"""How long the sweep lock outlives its holder's last renewal."""

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
        self.sweep_due = asyncio.Event()
        """Set when the next finished run falls due for deletion (the retention loop)."""
        self.deleter = RunDeleter(worker.store)
        """Deletes runs and everything they own (the sweep's, and ``orch.delete``'s)."""

    async def retry_loop(self) -> None:
        """Move due retries onto the queue (each partition's onto its own stream): at
        once when this worker set them, and every ``lease_ttl`` for those a dead worker
        left behind. As often, look whether the queue gained partitions to read."""
        w = self.w
        store, cancel = w.store, None
        while not w._stopping.is_set():
            self.retry_due.clear()
            await w.partitions.sync()
            dues = []
            for name in w.partitions.lanes():
                await store.move_due_retries(name, now_ms=w.clock.now_ms())
                dues.append(await store.next_retry_ms(name))
            due = min((d for d in dues if d is not None), default=None)
            if cancel is not None:
                cancel()
            cancel = None if due is None else w.clock.call_at(due, self.retry_due.set)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.retry_due.wait(), w.lease_ttl)

    async def maintenance_loop(self) -> None:
        w = self.w
        interval = w.lease_ttl / 4
        next_gauges = 0.0
        # Beside this loop, each its own: the heartbeat, so that the round trips of a
        # recovery pass never delay a renewal (on a busy machine, a cold worker saw the
        # eight of a pass, each waiting for the GIL behind its SDK's import, hold its
        # heartbeat past a 1 s lease without the loop ever stalling half of one); and the
        # retention sweep, however long it takes.
        beside = [asyncio.ensure_future(w._guard(self.heartbeat_loop))]
        if w.retention is not None:
            beside.append(asyncio.ensure_future(w._guard(self.retention_loop)))
        try:
            while not w._stopping.is_set():
                await w.activities.watch_attempts()
                await self.recover()
                if w.metrics is not None and time.monotonic() >= next_gauges:
                    next_gauges = time.monotonic() + GAUGE_INTERVAL_S
                    await self.update_gauges(w.metrics)
                self.timer_due.clear()
                with contextlib.suppress(TimeoutError):  # a timer this worker set wakes it early
                    await asyncio.wait_for(self.timer_due.wait(), interval)
        finally:
            for task in beside:
                task.cancel()
            await asyncio.gather(*beside, return_exceptions=True)

    async def heartbeat_loop(self) -> None:
        """Renew what this worker holds every ``lease_ttl / 4`` (:meth:`Ownership.heartbeat
        <taskloom.engine.ownership.Ownership.heartbeat>`), counted from the start of the
        last renewal: a slow one is followed by the next at once."""
        w = self.w
        interval = w.lease_ttl / 4
        while not w._stopping.is_set():
            started = time.monotonic()
            await w.ownership.heartbeat()
            await asyncio.sleep(max(0.0, started + interval - time.monotonic()))

    async def retention_loop(self) -> None:
        """Delete runs as they fall due, while this worker holds the sweep lock: every
        due run in batches, then sleep until the next one falls due (at least
        ``SWEEP_MIN_GAP_S``, so they go in batches; at most ``SWEEP_IDLE_S``, to see runs
        ended meanwhile and to take the lock over from a dead holder). Unreferenced blobs
        are collected every ``SWEEP_INTERVAL_S``."""
        w = self.w
        assert w.retention is not None
        retention_ms = int(w.retention * 1000)
        next_collect = time.monotonic() + SWEEP_INTERVAL_S
        cancel = None
        while not w._stopping.is_set():
            self.sweep_due.clear()
            if cancel is not None:
                cancel()
                cancel = None
            if await self._hold_sweep_lock():
                await self.expire(retention_ms)
                if time.monotonic() >= next_collect:
                    next_collect = time.monotonic() + SWEEP_INTERVAL_S
                    await self.collect()
                oldest = await self.deleter.oldest_end_ms()
                if oldest is not None:
                    at = max(oldest + retention_ms, w.clock.now_ms() + SWEEP_MIN_GAP_MS)
                    cancel = w.clock.call_at(at, self.sweep_due.set)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.sweep_due.wait(), SWEEP_IDLE_S)

    async def _hold_sweep_lock(self) -> bool:
        """Take or renew the sweep lock; whether this worker holds it."""
        w = self.w
        keys = [w.store.keys.sweep_lock]
        return bool(await w.store.scripts.call("sweep_lock", keys, [w.worker_id, SWEEP_LOCK_MS]))

    async def expire(self, retention_ms: int) -> int:
        """Delete every run that ended more than ``retention_ms`` ago; how many."""
        w = self.w
        runs = await self.deleter.expire(
            ended_before_ms=w.clock.now_ms() - retention_ms, keep_going=self._hold_sweep_lock
        )
        if runs:
            log.info("retention: deleted %d runs", runs)
        return runs

    async def collect(self) -> int:
        """Delete the blobs no run has referenced for a grace period; how many."""
        blobs = await self.w.payloads.collect(now_ms=self.w.clock.now_ms())
        if blobs:
            log.info("retention: deleted %d unreferenced blobs", blobs)
        return blobs

    async def sweep(self) -> tuple[int, int]:
        """Delete runs that ended more than ``retention`` seconds ago (all of them, in
        batches), then the blobs no run references any more; returns ``(runs, blobs)``
        deleted."""
        w = self.w
        if w.retention is None:
            return 0, 0
        runs = await self.expire(int(w.retention * 1000))
        return runs, await self.collect()

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
        pipe = store.raw.pipeline(transaction=False)
        count = max(1, w._free + w._prefetch_room())
        for name in w.partitions.lanes():
            qkey = store.keys.queue(name)
            pipe.xautoclaim(qkey, Keys.GROUP, w.worker_id, idle, "0-0", count=count)
        found = [
            (delivery_id(part, m), f)
            for part, res in enumerate(await pipe.execute())
            for m, f in res[1]
        ]
        if found:
            await w.intake.intake(found)
        res = await store.raw.xautoclaim(
            store.keys.runq, Keys.GROUP, w.worker_id, idle, "0-0", count=50
        )
        if res[1]:
            await w.ownership.handle_run_messages(res[1])
        await w.timer_partitions.sync()  # every partition any worker has written to
        await store.pop_timers(now=w.clock.now_ms(), partitions=w.timer_partitions.readable)
        for step in await w.human_tasks.apply_due_slas(now=w.clock.now_ms()):
            log.info("human task %s: %s %s", step.task_id, step.kind, step.detail)
            if step.kind == "sla_breached" and w.metrics is not None:
                w.metrics.sla_breach()
