"""A worker's intake: reading deliveries off its queue, claiming their steps, holding
them until a slot frees, and checking, before a long-held one starts, that it is still
this worker's (the claim may have lapsed while it waited)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from taskloom.engine.batch import Batcher
from taskloom.engine.clustering import is_cluster
from taskloom.engine.keys import Keys, lane
from taskloom.engine.partitions import by_partition, delivery_id, split_delivery
from taskloom.engine.store import ride_out
from taskloom.engine.tasks import Task

if TYPE_CHECKING:
    from taskloom.engine.worker import Worker

__all__ = ["CLAIM_TRUST", "Intake"]

log = logging.getLogger("taskloom.engine.worker")

CLAIM_TRUST = 0.75
"""A claim on a delivery is trusted, without asking Redis, for this part of the lease
after it was made or renewed; the rest of the lease is margin for the trip there."""


class Intake:
    """The deliveries a worker has read from its queue and holds (claimed, waiting for
    a slot or running), and the claims it trusts without asking Redis."""

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self.held_msgs: set[str] = set()
        """Message ids of the deliveries held here (the heartbeat re-claims them)."""
        self.claimed_at: dict[tuple[str, str], float] = {}  # delivery -> claim sent/renewed
        self.rechecker = Batcher(self.recheck_batch)
        self.after_attempt: dict[tuple[str, str], list[tuple[str, dict[str, str]]]] = {}
        """Deliveries of steps running here, by step: taken when the attempt ends."""
        self._retaking: set[asyncio.Task[None]] = set()
        self.taking: set[tuple[str, str]] = set()
        """Steps whose deliveries are being claimed here right now."""

    async def queue_loop(self) -> None:
        """Read deliveries while the worker runs: on one Redis with one XREADGROUP over
        every partition of the queue; on a cluster (where one command names keys of one
        slot) with a reader per partition, one more as the queue's partitions grow."""
        w = self.w
        if not is_cluster(w.store.client):
            await self.read_loop(None)
            return
        parts = w.partitions
        readers: dict[str, asyncio.Task[None]] = {}
        try:
            while not w._stopping.is_set():
                parts.grew.clear()
                for name in parts.lanes():
                    if name not in readers:
                        read = functools.partial(self.read_loop, name)
                        readers[name] = asyncio.ensure_future(w._guard(read))
                await parts.grew.wait()
        finally:
            for reader in readers.values():
                reader.cancel()
            await asyncio.gather(*readers.values(), return_exceptions=True)

    async def read_loop(self, only: str | None) -> None:
        """Read deliveries off lane ``only``, or off every lane of the queue (``None``),
        as many as this worker has room for (shared out between the partitions)."""
        w = self.w
        client, parts = w.store.raw, w.partitions
        while not w._stopping.is_set():
            want = max(w._free, 0) + w._prefetch_room()
            if want <= 0:
                w._slot_freed.clear()
                await w._slot_freed.wait()
                continue
            lanes = parts.lanes() if only is None else [only]
            streams = {w.store.keys.queue(name): ">" for name in lanes}
            count = -(-want // parts.readable)  # COUNT is per stream
            res = await client.xreadgroup(Keys.GROUP, w.worker_id, streams, count=count, block=1000)
            messages = parts.parse_read(res)
            if messages:
                await self.intake(messages)

    async def intake(self, messages: list[tuple[str, dict[str, str]]]) -> None:
        """Take deliveries (:meth:`_take_tasks`). Those not started when that fails (Redis
        went away between reading them and claiming their steps, say) are released at
        once: the heartbeat stops re-claiming them, so once idle for the visibility
        timeout any worker's reclaim takes them. (Not sooner: the claims the failed call
        may have taken in Redis lapse after that same time.)

        A delivery of a step this worker is running already waits here, held, until
        that attempt ends (:meth:`attempt_over`), and is taken then: the step's next
        attempt, which the retry loop moved to the queue while this attempt's failure
        was still being recorded, or a re-dispatch after a takeover (then found done).
        Left pending instead, it waited for the visibility timeout (a lease, 1 s in the
        benchmarks) before its retry ran."""
        inflight = self.w.activities.inflight
        running: list[tuple[str, dict[str, str]]] = []
        fresh: list[tuple[str, dict[str, str]]] = []
        seen: set[tuple[str, str]] = set()
        for m, f in messages:
            key = (f["run"], f["seq"]) if f and m not in self.held_msgs else None
            # Another delivery of a step running here, being taken here right now (by
            # the queue read, a reclaim or a retake, each awaiting its claim), or earlier
            # in this batch: the claim script says 'ok' to its holder every time, so
            # taking both would run the step twice side by side.
            if key is not None and (key in inflight or key in self.taking or key in seen):
                running.append((m, f))
                continue
            if key is not None:
                seen.add(key)
            fresh.append((m, f))
        if running:
            for m, f in running:
                self.after_attempt.setdefault((f["run"], f["seq"]), []).append((m, f))
            self.held_msgs.update(m for m, _ in running)  # kept alive by the heartbeat
            messages = fresh
        try:
            await self._take_tasks(messages)
        except Exception:
            started = set(inflight.values())
            self.held_msgs.difference_update(m for m, _ in messages if m not in started)
            raise

    def attempt_over(self, run_id: str, seq: str) -> None:
        """The attempt of step ``seq`` of ``run_id`` held here is over: take the
        deliveries of that step that came in meanwhile (:meth:`intake`) now."""
        waiting = self.after_attempt.pop((run_id, seq), None)
        if not waiting:
            return
        self.held_msgs.difference_update(m for m, _ in waiting)
        task = asyncio.get_running_loop().create_task(self._retake(waiting))
        self._retaking.add(task)  # kept until done: the loop holds tasks weakly
        task.add_done_callback(self._retaking.discard)

    async def _retake(self, messages: list[tuple[str, dict[str, str]]]) -> None:
        try:
            await self.intake(messages)
        except RedisError as exc:  # left pending: the visibility timeout brings them back
            log.warning("could not take deliveries of a step that ended here: %s", exc)

    async def _take_tasks(self, messages: list[tuple[str, dict[str, str]]]) -> None:
        """Claim delivered tasks; start them while slots are free, queue the rest here
        (claimed, renewed by the heartbeat) to start the moment a slot frees."""
        w = self.w
        stale = [m for m, f in messages if not f]  # deleted while pending
        if stale:
            await self.ack(stale)
        tasks = self.not_held_here([(m, f) for m, f in messages if f])
        # A read that was blocked may bring more than fits now (a local step took the
        # slot meanwhile): hand the rest back at once, for whichever worker is free.
        fits = max(w._free, 0) + w._prefetch_room()
        if len(tasks) > fits:
            await self.hand_back(tasks[fits:])
            tasks = tasks[:fits]
        if not tasks:
            return
        self.held_msgs.update(m for m, _ in tasks)
        keys = [(f["run"], f["seq"]) for _, f in tasks]
        self.taking.update(keys)
        try:
            await self._claim_and_start(tasks)
        finally:
            self.taking.difference_update(keys)
            for key in keys:  # not started here: what waited on it is taken now
                if key not in w.activities.inflight:
                    self.attempt_over(*key)

    async def _claim_and_start(self, tasks: list[tuple[str, dict[str, str]]]) -> None:
        w = self.w
        sent = time.monotonic()
        states = await w.store.start_activities(
            [(f["run"], f["seq"]) for _, f in tasks], w.worker_id, ttl_ms=w.claim_ttl_ms
        )
        done: list[str] = []
        ready = [
            Task.from_fields(m, f) for (m, f), s in zip(tasks, states, strict=True) if s == "ok"
        ]
        self.claimed_at.update(((t.run_id, t.seq), sent) for t in ready)
        w.activities.claims_sent([(t.run_id, t.seq) for t in ready], sent)
        await self._load_details(ready)
        by_msg = {t.msg_id: t for t in ready}
        for (msg_id, _), state in zip(tasks, states, strict=True):
            if state == "ok":
                task = by_msg[msg_id]
                if w._free > 0 and not w._stopping.is_set():
                    w._free -= 1
                    w.activities.spawn(task)
                else:  # renew its claim meanwhile
                    w.activities.inflight[(task.run_id, task.seq)] = msg_id
                    w._waiting.append(task)
            elif state == "done":
                done.append(msg_id)
            else:  # another worker runs it: look again after the visibility timeout
                self.held_msgs.discard(msg_id)
        if done:
            await self.ack(done)

    async def _load_details(self, tasks: list[Task]) -> None:
        """Heartbeating activities resume from the last saved details of the attempt
        they replace (a dead worker's, say)."""
        wanted = []
        for t in tasks:
            adef = self.w.registry.find_activity(t.name)
            # A name not known yet may be a layer's still loading: its details too.
            loading = self.w.registry.loading is not None
            beats = adef.heartbeat_timeout is not None if adef else loading
            if t.details is None and beats:
                wanted.append(t)
        if wanted:
            loaded = await self.w.store.load_heartbeats([(t.run_id, t.seq) for t in wanted])
            for t, details in zip(wanted, loaded, strict=True):
                t.details = details

    async def ack(self, msg_ids: list[str]) -> None:
        """Acknowledge and delete deliveries, and stop holding them."""
        self.held_msgs.difference_update(msg_ids)
        store = self.w.store
        pipe = store.raw.pipeline(transaction=False)
        for part, ids in by_partition(msg_ids).items():
            qkey = store.keys.queue(lane(self.w.queue, part))
            pipe.xack(qkey, Keys.GROUP, *ids)
            pipe.xdel(qkey, *ids)
        await pipe.execute()

    async def requeue(self, msg_ids: list[str]) -> None:
        """Hand deliveries this worker holds back to the queue (it is stopping)."""
        store = self.w.store
        taken: list[tuple[str, dict[str, str]]] = []
        for part, ids in by_partition(msg_ids).items():
            qkey = store.keys.queue(lane(self.w.queue, part))
            claimed = await store.raw.xclaim(qkey, Keys.GROUP, self.w.worker_id, 0, ids)
            taken += [(delivery_id(part, m), f) for m, f in claimed]
        await self.hand_back(taken)

    async def hand_back(self, deliveries: list[tuple[str, dict[str, str]]]) -> None:
        """Put deliveries back at the end of their partition as new messages, for any
        worker."""
        self.held_msgs.difference_update(m for m, _ in deliveries)
        store = self.w.store
        pipe = store.raw.pipeline(transaction=False)
        for delivery, fields in deliveries:
            part, msg_id = split_delivery(delivery)
            qkey = store.keys.queue(lane(self.w.queue, part))
            if fields:  # keep when it was first queued: schedule-to-start counts from there
                pipe.xadd(qkey, {"queued": msg_id.split("-", 1)[0]} | fields)
            pipe.xack(qkey, Keys.GROUP, msg_id)
            pipe.xdel(qkey, msg_id)
        await pipe.execute()

    # -- deliveries that waited ---------------------------------------------------------
    def not_held_here(
        self, tasks: list[tuple[str, dict[str, str]]]
    ) -> list[tuple[str, dict[str, str]]]:
        """Deliveries minus those this worker already holds or runs: a late heartbeat
        (a blocked loop) lets its own XAUTOCLAIM bring them back, and the claim script
        says 'ok' to its holder, so the step would run here twice, back to back."""
        inflight = self.w.activities.inflight
        return [
            (m, f)
            for m, f in tasks
            if m not in self.held_msgs and (f["run"], f["seq"]) not in inflight
        ]

    async def still_ours(self, task: Task) -> bool:
        """Whether this worker still holds ``task``'s claim: trusted while recent, else
        claimed again (one round trip for all the tasks of a tick). A step recorded
        meanwhile is acknowledged, one another worker runs is left to it; either way
        the slot is given back."""
        w = self.w
        inflight = w.activities.inflight
        key = (task.run_id, task.seq)
        claimed = self.claimed_at.pop(key, None)
        if claimed is None or time.monotonic() - claimed < w.lease_ttl * CLAIM_TRUST:
            return True
        try:
            sent = time.monotonic()  # the claim made again goes out after this
            state = await ride_out(
                lambda: self.rechecker.submit(key),
                what=f"run {task.run_id} step {task.seq}: cannot check its claim yet",
                log=log,
            )
            if state == "ok":
                w.activities.claims_sent([key], sent)
                return True
            log.info(
                "run %s step %s: waited here past its claim and is %s; not running it",
                task.run_id,
                task.seq,
                "recorded already" if state == "done" else "run by another worker",
            )
            inflight.pop(key, None)
            self.attempt_over(*key)
            assert task.msg_id is not None
            if state == "done":
                with contextlib.suppress(RedisError):  # else found done when reclaimed
                    await self.ack([task.msg_id])
            self.held_msgs.discard(task.msg_id)
            return False
        except BaseException:
            inflight.pop(key, None)
            self.attempt_over(*key)
            raise
        finally:
            if key not in inflight:
                w.give_slot()

    async def recheck_batch(self, keys: list[tuple[str, str]]) -> list[str]:
        """Claim again, in one round trip, the steps of deliveries that waited here."""
        return await self.w.store.start_activities(
            keys, self.w.worker_id, ttl_ms=self.w.claim_ttl_ms
        )

    def claims_renewed(self, sent: float, keys: list[tuple[str, str]]) -> None:
        """The heartbeat sent at ``sent`` renewed the claims of ``keys``: those of waiting
        deliveries still trusted then stay trusted (a lapsed one may have been taken
        meanwhile)."""
        trust = self.w.lease_ttl * CLAIM_TRUST
        claimed_at = self.claimed_at
        for key in keys:
            claimed = claimed_at.get(key)
            if claimed is not None and sent - claimed < trust:
                claimed_at[key] = sent
