"""A worker's ownership of runs: taking a run's lease and resuming it from its log,
renewing the leases it holds (the heartbeat), reading wake-ups, replaying a run whose
writes Redis lost, and evicting idle runs from memory."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from taskloom.engine.execution import Execution
from taskloom.engine.keys import Keys, lane
from taskloom.engine.partitions import by_partition
from taskloom.engine.store import now_ms
from taskloom.errors import StoreRolledBackError, TaskloomError

if TYPE_CHECKING:
    from taskloom.engine.worker import Worker

__all__ = ["CLAIM_RENEW_AGE", "Ownership"]

CLAIM_RENEW_AGE = 0.25
"""The heartbeat renews an activity's claim once it is this part of the lease old (one
heartbeat interval), so a claim renewed at most every half lease keeps half its TTL."""

log = logging.getLogger("taskloom.engine.worker")


class Ownership:
    """The runs a worker holds under leases (the table is the worker's ``runs``)."""

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self.evicting: set[str] = set()

    async def runq_loop(self) -> None:
        w = self.w
        client, key = w.store.raw, w.store.keys.runq
        while not w._stopping.is_set():
            res = await client.xreadgroup(Keys.GROUP, w.worker_id, {key: ">"}, count=50, block=1000)
            for _, messages in res or []:
                await self.handle_run_messages(messages)

    async def handle_run_messages(self, messages: list[tuple[str, dict[str, str]]]) -> None:
        """Take the runs named on the run queue, then acknowledge the messages."""
        key = self.w.store.keys.runq
        for run_id in dict.fromkeys(f["run"] for _, f in messages if f):
            await self.take_run(run_id)
        ids = [m for m, _ in messages]
        if ids:
            pipe = self.w.store.raw.pipeline(transaction=False)
            pipe.xack(key, Keys.GROUP, *ids)
            pipe.xdel(key, *ids)
            await pipe.execute()

    async def take_run(self, run_id: str) -> None:
        """Look at ``run_id``: refresh it if held here, else try to own and resume it."""
        w = self.w
        ex = w.runs.get(run_id)
        if ex is not None:
            await self._refresh(ex)
            return
        if w._stopping.is_set():
            await w.store.enqueue_run(run_id, "handoff")
            return
        state, value = await w.store.acquire(run_id, w.worker_id, ttl_ms=w.claim_ttl_ms)
        if state == "held":
            await w.store.raw.xadd(
                w.store.keys.wake(value), {"run": run_id}, maxlen=10_000, approximate=True
            )
            return
        if state != "acquired":  # ended or gone: no lease left to watch
            await w.store.raw.zrem(w.store.keys.leases, run_id)
            return
        try:
            meta = await w.store.get_meta(run_id)
            events = await w.store.read_log(run_id)
        except (RedisError, TaskloomError):
            log.exception("run %s: could not load its log", run_id)
            return
        ex = Execution(host=w, run_id=run_id, epoch=value, meta=meta, events=events)
        w.runs[run_id] = ex
        ex.start()

    async def _refresh(self, ex: Execution) -> None:
        known = ex.known()
        try:
            events = await self.w.store.read_log(ex.run_id, after=ex.last_id, known=known)
        except StoreRolledBackError as exc:
            log.warning("%s", exc)
            self.rolled_back(ex)
            return
        ex.verified(known)
        ex.apply_all(events)

    def rolled_back(self, execution: Execution) -> None:
        """Redis lost writes that ``execution`` saw: forget what memory holds and replay
        the run from Redis now (a new epoch fences whatever the old one still sends)."""
        if self.w.runs.get(execution.run_id) is not execution:
            return
        self.finished(execution)
        if execution.task is not None:
            execution.task.cancel()
        self.w.activities.track(self._replay(execution.run_id))

    async def _replay(self, run_id: str) -> None:
        try:
            await self.take_run(run_id)
        except (RedisError, TaskloomError) as exc:  # its lease lapses: _recover retries
            log.warning("run %s: could not replay it yet: %s", run_id, exc)

    def finished(self, execution: Execution, status: str | None = None) -> None:
        """The run ended with ``status`` (``None``: it was dropped here): forget it."""
        w = self.w
        if status in ("completed", "failed", "cancelled") and w.metrics is not None:
            w.metrics.run_finished(status)  # type: ignore[arg-type]
        if w.runs.get(execution.run_id) is execution:
            del w.runs[execution.run_id]

    def evict_soon(self, execution: Execution) -> None:
        """Drop a run that waits only on timers or signals from memory, shortly."""
        if execution.run_id in self.evicting:
            return
        self.evicting.add(execution.run_id)
        asyncio.get_running_loop().call_later(
            0.05, lambda: asyncio.get_running_loop().create_task(self._evict(execution))
        )

    async def _evict(self, ex: Execution) -> None:
        w = self.w
        self.evicting.discard(ex.run_id)
        if w.runs.get(ex.run_id) is not ex or not ex.evictable():
            return
        store = w.store
        due = ex.next_due_ms()
        if due is not None:
            await store.add_timer(ex.run_id, due, partitions=w.timer_partitions.count)
            loop = asyncio.get_running_loop()
            loop.call_at(
                loop.time() + max(0.0, (due - now_ms()) / 1000), w.maintenance.timer_due.set
            )
        self.finished(ex)  # out of the table first: the run may be taken the moment it's free
        res = await store.release(
            ex.run_id, w.worker_id, ex.epoch, last_seen=ex.last_id, status="waiting"
        )
        if res == -1 and ex.run_id not in w.runs:  # something arrived meanwhile: read it
            w.runs[ex.run_id] = ex
            await self._refresh(ex)
            return
        if ex.task is not None:
            ex.task.cancel()

    async def wake_loop(self) -> None:
        w = self.w
        client, key, last = w.store.raw, w.store.keys.wake(w.worker_id), "0"
        # (Re)started, after a Redis outage too: wake-ups sent meanwhile may be lost (a
        # server that crashed loses the wake stream's tail), so every run held here reads
        # its log once.
        for run_id in list(w.runs):
            await self.take_run(run_id)
        while not w._stopping.is_set():
            res = await client.xread({key: last}, count=500, block=1000)
            for _, messages in res or []:
                last = messages[-1][0]
                for run_id in dict.fromkeys(f["run"] for _, f in messages):
                    await self.take_run(run_id)
                await client.xtrim(key, minid=last)

    async def heartbeat(self) -> None:
        """Renew the leases of the runs held here (dropping those lost), the claims of
        the steps run or waiting here, and the deliveries held here."""
        w = self.w
        store = w.store
        held = [(rid, ex.epoch) for rid, ex in w.runs.items()]
        known = {rid: ex.known() for rid, ex in w.runs.items()}
        renewed = await store.renew(held, w.worker_id, ttl_ms=w.claim_ttl_ms, known=known)
        for (run_id, _), ok in zip(held, renewed, strict=True):
            ex = w.runs.get(run_id)
            if ok and ex is not None:
                ex.verified(known[run_id])
            if not ok and ex is not None:
                log.warning(
                    "run %s: lease lost (taken over, or Redis lost writes this worker saw); "
                    "dropping it: whoever takes it next replays it",
                    run_id,
                )
                self.finished(ex)
                if ex.task is not None:
                    ex.task.cancel()
        # A claim is renewed once it is a heartbeat interval old, not at every heartbeat:
        # between two renewals at most two intervals pass (half the TTL; heartbeats come
        # at least every interval), so half the TTL is left as the margin for a late
        # heartbeat and the trip to Redis.
        sent = time.monotonic()
        due = w.activities.claims_due(sent, w.lease_ttl * CLAIM_RENEW_AGE)
        if due:
            await store.renew_claims(due, ttl_ms=w.claim_ttl_ms)
            w.activities.claims_sent(due, sent)
            w.intake.claims_renewed(sent, due)
        if w.intake.held_msgs:
            pipe = store.raw.pipeline(transaction=False)
            for part, ids in by_partition(w.intake.held_msgs).items():
                qkey = store.keys.queue(lane(w.queue, part))
                pipe.xclaim(qkey, Keys.GROUP, w.worker_id, 0, ids, justid=True)
            await pipe.execute()
