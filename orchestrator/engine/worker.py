"""The worker: owns runs (under leases), runs activities, and resumes what others dropped.

One worker process serves any number of runs and up to ``concurrency`` activities at a
time. It takes activities from its queue's consumer group, and runs an activity of a
run it owns itself when it has a free slot (recorded exactly as if it had come off the
queue). Every ``lease_ttl / 4`` seconds it renews its leases and activity claims,
resumes runs whose owner's lease expired, reclaims a dead worker's deliveries
(XAUTOCLAIM) and moves due timers to the run queue.

When its slots are busy with short activities it prefetches: it claims up to
``prefetch`` more deliveries and starts each the moment a slot frees, with no round
trip. It prefetches only as many as it expects to start within ``PREFETCH_HORIZON_S``
(from the mean duration of its recent activities), so long activities, such as LLM
calls, stay in the queue for whichever worker frees a slot first.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

from redis.exceptions import RedisError

from taskloom import tracing
from taskloom.agents.agent import Agent
from taskloom.engine import serde
from taskloom.engine.attempt import ActivityInfo, Attempt, enter
from taskloom.engine.batch import Batcher
from taskloom.engine.clock import Clock, SystemClock
from taskloom.engine.definitions import ActivityDef, Registry, WorkflowDef
from taskloom.engine.dlq import DeadLetters
from taskloom.engine.execution import Execution
from taskloom.engine.failures import Failure, handle_failure
from taskloom.engine.human import HumanTasks
from taskloom.engine.keys import Keys, consumer_name
from taskloom.engine.looplag import LoopLagMonitor
from taskloom.engine.metrics import Metrics
from taskloom.engine.payloads import Payloads
from taskloom.engine.retries import DEFAULT_RETRY, RetryPolicy
from taskloom.engine.store import Event, Routing, Store, now_ms, ride_out
from taskloom.engine.tasks import Task
from taskloom.errors import ActivityTimeoutError, StoreRolledBackError, TaskloomError, error_dict

__all__ = ["Worker"]

log = logging.getLogger("taskloom.engine.worker")


SWEEP_INTERVAL_S = 60.0
"""How often one of the workers deletes expired runs and unreferenced blobs."""
SWEEP_INTERVAL_MS = int(SWEEP_INTERVAL_S * 1000)

GAUGE_INTERVAL_S = 5.0
"""How often a worker with metrics refreshes its gauges (in flight, dead letters)."""

PREFETCH_HORIZON_S = 0.5
"""A worker prefetches the deliveries it expects to start within this many seconds."""

CLAIM_TRUST = 0.75
"""A claim on a delivery is trusted, without asking Redis, for this part of the lease
after it was made or renewed; the rest of the lease is margin for the trip there."""


class Worker:
    """Runs workflows and activities against one store until stopped.

    Example::

        worker = Worker(store, workflows=[report], activities=[fetch], concurrency=8)
        await worker.run()          # until SIGTERM / worker.stop()
    """

    def __init__(
        self,
        store: Store,
        *,
        workflows: Iterable[WorkflowDef] = (),
        activities: Iterable[ActivityDef] = (),
        modules: Iterable[ModuleType | str] = (),
        agents: Iterable[Agent] = (),
        concurrency: int = 16,
        queue: str = "default",
        lease_ttl: float = 1.0,
        worker_id: str | None = None,
        shutdown_grace: float = 30.0,
        prefetch: int | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        payloads: Payloads | None = None,
        retention: float | None = None,
    ) -> None:
        self.store = store
        self.registry = Registry(workflows=workflows, activities=activities, agents=agents)
        for module in modules:
            self.registry.add_module(module)
        self.concurrency = concurrency
        self.queue = queue
        self.lease_ttl = lease_ttl
        self.claim_ttl_ms = int(lease_ttl * 1000)
        self.worker_id = worker_id or consumer_name()
        self.shutdown_grace = shutdown_grace
        self.runs: dict[str, Execution] = {}
        self._free = concurrency
        self._slot_freed = asyncio.Event()
        self.prefetch = concurrency if prefetch is None else prefetch
        self.retry = retry
        self.clock = clock or SystemClock()
        self.dead_letters = DeadLetters(store)
        self.human_tasks = HumanTasks(store)
        self.payloads = payloads or Payloads(
            store, None, threshold=32 * 1024 * 1024, hard_limit=32 * 1024 * 1024
        )
        self.retention = retention
        self.resources: dict[str, Any] = {}
        """Per-worker objects the layers above the engine put here (the subagents'
        model clients, say); each one's ``aclose()`` runs when the worker stops."""
        self.metrics = metrics
        self._retry_due = asyncio.Event()
        self._inflight: dict[tuple[str, str], str | None] = {}
        self._waiting: deque[Task] = deque()  # claimed, waiting for a slot
        self._attempts: dict[tuple[str, str], Attempt] = {}  # running now
        self._traces: dict[str, tracing.RunTrace] = {}  # run id -> its trace context
        self._mean_s: float | None = None  # recent activity duration (EWMA)
        self._held_msgs: set[str] = set()
        self._activity_tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._timer_due = asyncio.Event()
        self._evicting: set[str] = set()
        self._executor = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="taskloom-activity"
        )
        self._recorder = Batcher(self._record_batch)
        self._claimed_at: dict[tuple[str, str], float] = {}  # delivery -> claim sent/renewed
        self._rechecker = Batcher(self._recheck_batch)
        self.lag = LoopLagMonitor(
            warn_after=lease_ttl / 2,
            observe=metrics.loop_lag if metrics is not None else None,
            what=f"worker {self.worker_id}",
        )
        """Watches this worker's event loop: a loop blocked for the lease loses it."""
        self.started = asyncio.Event()

    # -- slots (Host protocol) ----------------------------------------------------------
    def take_slot(self) -> bool:
        """Take a slot if one is free right now (used to run an owned activity here)."""
        if self._free > 0 and not self._stopping.is_set():
            self._free -= 1
            return True
        return False

    def give_slot(self) -> None:
        """Return a slot, or hand it straight to a prefetched activity."""
        if self._waiting and not self._stopping.is_set():
            self._spawn(self._waiting.popleft())
            self._slot_freed.set()  # room to prefetch another
            return
        self._free += 1
        self._slot_freed.set()

    @property
    def prefetched(self) -> int:
        """Activities claimed by this worker and waiting for one of its slots."""
        return len(self._waiting)

    def _prefetch_room(self) -> int:
        """How many more deliveries to claim beyond the free slots."""
        if not self.prefetch or self._mean_s is None:
            return 0
        expected = int(self.concurrency * PREFETCH_HORIZON_S / max(self._mean_s, 1e-4))
        return max(0, min(self.prefetch, expected) - len(self._waiting))

    async def _wait_slot(self) -> None:
        while self._free <= 0:
            self._slot_freed.clear()
            await self._slot_freed.wait()
        self._free -= 1

    # -- lifecycle ----------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the worker to shut down gracefully (as SIGTERM does)."""
        self._stopping.set()

    async def run(self, *, install_signal_handlers: bool = False) -> None:
        """Serve until :meth:`stop` (or SIGTERM/SIGINT with ``install_signal_handlers``)."""
        await self.store.ensure_groups(self.queue)
        loop = asyncio.get_running_loop()
        if install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        loops = [
            loop.create_task(self._guard(self._runq_loop), name="runq"),
            loop.create_task(self._guard(self._queue_loop), name="queue"),
            loop.create_task(self._guard(self._wake_loop), name="wake"),
            loop.create_task(self._guard(self._maintenance_loop), name="maintenance"),
            loop.create_task(self._guard(self._retry_loop), name="retries"),
            loop.create_task(self.lag.run(), name="loop-lag"),
        ]
        for resource in self.resources.values():  # e.g. a notifier: runs beside the loops
            start = getattr(resource, "start", None)
            if callable(start):
                start()
        self.started.set()
        log.info(
            "worker %s serving queue %r, %d slots", self.worker_id, self.queue, self.concurrency
        )
        try:
            await self._stopping.wait()
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await self._shutdown()

    async def _guard(self, body: Callable[[], Awaitable[None]]) -> None:
        """Run a loop forever, riding out Redis outages with capped backoff."""
        while not self._stopping.is_set():
            await ride_out(body, what=f"worker {self.worker_id}: Redis error", log=log)

    async def _shutdown(self) -> None:
        store = self.store
        with contextlib.suppress(RedisError):  # hand back deliveries not started yet
            prefetched, self._waiting = list(self._waiting), deque()
            for t in prefetched:
                self._inflight.pop((t.run_id, t.seq), None)
            waiting = [m for m in self._held_msgs if m not in self._inflight.values()]
            if waiting:
                await self._requeue(waiting)
            await self.store.unclaim([(t.run_id, t.seq) for t in prefetched], self.worker_id)
        if self._activity_tasks:
            _, pending = await asyncio.wait(self._activity_tasks, timeout=self.shutdown_grace)
            for task in pending:
                task.cancel()
        for ex in list(self.runs.values()):
            await ex._drain()
            if ex.task is not None:
                ex.task.cancel()
            with contextlib.suppress(RedisError):
                if (
                    await store.release(
                        ex.run_id, self.worker_id, ex.epoch, last_seen="", status="waiting"
                    )
                    == 1
                ):
                    await store.enqueue_run(ex.run_id, "released")
        self.runs.clear()
        with contextlib.suppress(RedisError):
            await store.raw.delete(store.keys.wake(self.worker_id))
        self._executor.shutdown(wait=False, cancel_futures=True)
        for resource in self.resources.values():
            close = getattr(resource, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
        self.resources.clear()
        log.info("worker %s stopped", self.worker_id)

    async def _requeue(self, msg_ids: list[str]) -> None:
        qkey = self.store.keys.queue(self.queue)
        await self._hand_back(
            await self.store.raw.xclaim(qkey, Keys.GROUP, self.worker_id, 0, msg_ids)
        )

    async def _hand_back(self, deliveries: list[tuple[str, dict[str, str]]]) -> None:
        """Put deliveries back at the end of the queue as new messages, for any worker."""
        qkey = self.store.keys.queue(self.queue)
        self._held_msgs.difference_update(m for m, _ in deliveries)
        pipe = self.store.raw.pipeline(transaction=False)
        for msg_id, fields in deliveries:
            if fields:  # keep when it was first queued: schedule-to-start counts from there
                pipe.xadd(qkey, {"queued": msg_id.split("-", 1)[0]} | fields)
            pipe.xack(qkey, Keys.GROUP, msg_id)
            pipe.xdel(qkey, msg_id)
        await pipe.execute()

    # -- runs ---------------------------------------------------------------------------
    async def _runq_loop(self) -> None:
        client, key = self.store.raw, self.store.keys.runq
        while not self._stopping.is_set():
            res = await client.xreadgroup(
                Keys.GROUP, self.worker_id, {key: ">"}, count=50, block=1000
            )
            for _, messages in res or []:
                await self._handle_run_messages(messages)

    async def _handle_run_messages(self, messages: list[tuple[str, dict[str, str]]]) -> None:
        key = self.store.keys.runq
        for run_id in dict.fromkeys(f["run"] for _, f in messages if f):
            await self.take_run(run_id)
        ids = [m for m, _ in messages]
        if ids:
            pipe = self.store.raw.pipeline(transaction=False)
            pipe.xack(key, Keys.GROUP, *ids)
            pipe.xdel(key, *ids)
            await pipe.execute()

    async def take_run(self, run_id: str) -> None:
        """Look at ``run_id``: refresh it if held here, else try to own and resume it."""
        ex = self.runs.get(run_id)
        if ex is not None:
            await self._refresh(ex)
            return
        if self._stopping.is_set():
            await self.store.enqueue_run(run_id, "handoff")
            return
        state, value = await self.store.acquire(run_id, self.worker_id, ttl_ms=self.claim_ttl_ms)
        if state == "held":
            await self.store.raw.xadd(
                self.store.keys.wake(value), {"run": run_id}, maxlen=10_000, approximate=True
            )
            return
        if state != "acquired":  # ended or gone: no lease left to watch
            await self.store.raw.zrem(self.store.keys.leases, run_id)
            return
        try:
            meta = await self.store.get_meta(run_id)
            events = await self.store.read_log(run_id)
        except (RedisError, TaskloomError):
            log.exception("run %s: could not load its log", run_id)
            return
        ex = Execution(host=self, run_id=run_id, epoch=value, meta=meta, events=events)
        self.runs[run_id] = ex
        ex.start()

    async def _refresh(self, ex: Execution) -> None:
        known = ex.known()
        try:
            events = await self.store.read_log(ex.run_id, after=ex.last_id, known=known)
        except StoreRolledBackError as exc:
            log.warning("%s", exc)
            self.rolled_back(ex)
            return
        ex.verified(known)
        ex.apply_all(events)

    def rolled_back(self, execution: Execution) -> None:
        """Redis lost writes that ``execution`` saw: forget what memory holds and replay
        the run from Redis now (a new epoch fences whatever the old one still sends)."""
        if self.runs.get(execution.run_id) is not execution:
            return
        self.finished(execution)
        if execution.task is not None:
            execution.task.cancel()
        self._track(self._replay(execution.run_id))

    async def _replay(self, run_id: str) -> None:
        try:
            await self.take_run(run_id)
        except (RedisError, TaskloomError) as exc:  # its lease lapses: _recover retries
            log.warning("run %s: could not replay it yet: %s", run_id, exc)

    def finished(self, execution: Execution, status: str | None = None) -> None:
        """The run ended with ``status`` (``None``: it was dropped here): forget it."""
        if status in ("completed", "failed", "cancelled") and self.metrics is not None:
            self.metrics.run_finished(status)  # type: ignore[arg-type]
        if self.runs.get(execution.run_id) is execution:
            del self.runs[execution.run_id]

    def evict_soon(self, execution: Execution) -> None:
        """Drop a run that waits only on timers or signals from memory, shortly."""
        if execution.run_id in self._evicting:
            return
        self._evicting.add(execution.run_id)
        asyncio.get_running_loop().call_later(
            0.05, lambda: asyncio.get_running_loop().create_task(self._evict(execution))
        )

    async def _evict(self, ex: Execution) -> None:
        self._evicting.discard(ex.run_id)
        if self.runs.get(ex.run_id) is not ex or not ex.evictable():
            return
        store = self.store
        due = ex.next_due_ms()
        if due is not None:
            await store.add_timer(ex.run_id, due)
            loop = asyncio.get_running_loop()
            loop.call_at(loop.time() + max(0.0, (due - now_ms()) / 1000), self._timer_due.set)
        self.finished(ex)  # out of the table first: the run may be taken the moment it's free
        res = await store.release(
            ex.run_id, self.worker_id, ex.epoch, last_seen=ex.last_id, status="waiting"
        )
        if res == -1 and ex.run_id not in self.runs:  # something arrived meanwhile: read it
            self.runs[ex.run_id] = ex
            await self._refresh(ex)
            return
        if ex.task is not None:
            ex.task.cancel()

    # -- activities ---------------------------------------------------------------------
    async def _queue_loop(self) -> None:
        client, key = self.store.raw, self.store.keys.queue(self.queue)
        while not self._stopping.is_set():
            want = max(self._free, 0) + self._prefetch_room()
            if want <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            res = await client.xreadgroup(
                Keys.GROUP, self.worker_id, {key: ">"}, count=want, block=1000
            )
            for _, messages in res or []:
                await self._intake(messages)

    async def _intake(self, messages: list[tuple[str, dict[str, str]]]) -> None:
        """Take deliveries (:meth:`_take_tasks`). Those not started when that fails (Redis
        went away between reading them and claiming their steps, say) are released at
        once: the heartbeat stops re-claiming them, so once idle for the visibility
        timeout any worker's reclaim takes them. (Not sooner: the claims the failed call
        may have taken in Redis lapse after that same time.)

        A delivery of a step this worker is running already (a re-dispatch after a
        takeover) is left pending, not held: it is looked at again after the visibility
        timeout, when the running attempt has likely recorded its outcome."""
        running = [m for m, f in messages if f and (f["run"], f["seq"]) in self._inflight]
        if running:
            messages = [(m, f) for m, f in messages if m not in running]
        try:
            await self._take_tasks(messages)
        except Exception:
            started = set(self._inflight.values())
            self._held_msgs.difference_update(m for m, _ in messages if m not in started)
            raise

    async def _take_tasks(self, messages: list[tuple[str, dict[str, str]]]) -> None:
        """Claim delivered tasks; start them while slots are free, queue the rest here
        (claimed, renewed by the heartbeat) to start the moment a slot frees."""
        stale = [m for m, f in messages if not f]  # deleted while pending
        if stale:
            await self._ack(stale)
        tasks = self._not_held_here([(m, f) for m, f in messages if f])
        # A read that was blocked may bring more than fits now (a local step took the
        # slot meanwhile): hand the rest back at once, for whichever worker is free.
        fits = max(self._free, 0) + self._prefetch_room()
        if len(tasks) > fits:
            await self._hand_back(tasks[fits:])
            tasks = tasks[:fits]
        if not tasks:
            return
        self._held_msgs.update(m for m, _ in tasks)
        sent = time.monotonic()
        states = await self.store.start_activities(
            [(f["run"], f["seq"]) for _, f in tasks], self.worker_id, ttl_ms=self.claim_ttl_ms
        )
        done: list[str] = []
        ready = [
            Task.from_fields(m, f) for (m, f), s in zip(tasks, states, strict=True) if s == "ok"
        ]
        self._claimed_at.update(((t.run_id, t.seq), sent) for t in ready)
        await self._load_details(ready)
        by_msg = {t.msg_id: t for t in ready}
        for (msg_id, _), state in zip(tasks, states, strict=True):
            if state == "ok":
                task = by_msg[msg_id]
                if self._free > 0 and not self._stopping.is_set():
                    self._free -= 1
                    self._spawn(task)
                else:
                    self._inflight[(task.run_id, task.seq)] = msg_id  # renew its claim meanwhile
                    self._waiting.append(task)
            elif state == "done":
                done.append(msg_id)
            else:  # another worker runs it: look again after the visibility timeout
                self._held_msgs.discard(msg_id)
        if done:
            await self._ack(done)

    async def _load_details(self, tasks: list[Task]) -> None:
        """Heartbeating activities resume from the last saved details of the attempt
        they replace (a dead worker's, say)."""
        wanted = []
        for t in tasks:
            adef = self.registry.find_activity(t.name)
            if t.details is None and adef is not None and adef.heartbeat_timeout is not None:
                wanted.append(t)
        if wanted:
            loaded = await self.store.load_heartbeats([(t.run_id, t.seq) for t in wanted])
            for t, details in zip(wanted, loaded, strict=True):
                t.details = details

    async def _ack(self, msg_ids: list[str]) -> None:
        self._held_msgs.difference_update(msg_ids)
        qkey = self.store.keys.queue(self.queue)
        pipe = self.store.raw.pipeline(transaction=False)
        pipe.xack(qkey, Keys.GROUP, *msg_ids)
        pipe.xdel(qkey, *msg_ids)
        await pipe.execute()

    def run_local(
        self, run_id: str, seq: str, name: str, args: list[Any], kwargs: dict[str, Any]
    ) -> None:
        """Run an activity of an owned run here (its slot is already taken)."""
        self._spawn(Task(run_id, seq, name, args, kwargs))

    def _track(self, coro: Coroutine[Any, Any, None], *, name: str | None = None) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._activity_tasks.add(task)
        task.add_done_callback(self._activity_done)

    def _activity_done(self, task: asyncio.Task[None]) -> None:
        self._activity_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A bug, not an outage (those are retried inside): say so loudly. The step's
            # claim and delivery lapse, so another worker runs it again.
            log.error("worker %s: activity task crashed", self.worker_id, exc_info=task.exception())

    def _spawn(self, task: Task) -> None:
        self._inflight[(task.run_id, task.seq)] = task.msg_id
        if self.metrics is not None and task.msg_id is not None:
            self.metrics.queue_wait(self.queue, self._queued_for(task))
        # Named: a loop-lag warning names the activity that blocked the loop.
        self._track(self._start(task), name=f"activity {task.name} {task.run_id}/{task.seq}")

    # -- deliveries that waited ---------------------------------------------------------
    def _not_held_here(
        self, tasks: list[tuple[str, dict[str, str]]]
    ) -> list[tuple[str, dict[str, str]]]:
        """Deliveries minus those this worker already holds or runs: a late heartbeat
        (a blocked loop) lets its own XAUTOCLAIM bring them back, and the claim script
        says 'ok' to its holder, so the step would run here twice, back to back."""
        return [
            (m, f)
            for m, f in tasks
            if m not in self._held_msgs and (f["run"], f["seq"]) not in self._inflight
        ]

    async def _start(self, task: Task) -> None:
        """Run ``task`` in its slot, unless it waited here so long (a paused process, a
        blocked loop) that its claim may have lapsed and it is no longer ours."""
        if task.msg_id is None or await self._still_ours(task):
            await self._execute(task)

    async def _still_ours(self, task: Task) -> bool:
        """Whether this worker still holds ``task``'s claim: trusted while recent, else
        claimed again (one round trip for all the tasks of a tick). A step recorded
        meanwhile is acknowledged, one another worker runs is left to it; either way
        the slot is given back."""
        key = (task.run_id, task.seq)
        claimed = self._claimed_at.pop(key, None)
        if claimed is None or time.monotonic() - claimed < self.lease_ttl * CLAIM_TRUST:
            return True
        try:
            state = await ride_out(
                lambda: self._rechecker.submit(key),
                what=f"run {task.run_id} step {task.seq}: cannot check its claim yet",
                log=log,
            )
            if state == "ok":
                return True
            log.info(
                "run %s step %s: waited here past its claim and is %s; not running it",
                task.run_id,
                task.seq,
                "recorded already" if state == "done" else "run by another worker",
            )
            self._inflight.pop(key, None)
            assert task.msg_id is not None
            if state == "done":
                with contextlib.suppress(RedisError):  # else found done when reclaimed
                    await self._ack([task.msg_id])
            self._held_msgs.discard(task.msg_id)
            return False
        except BaseException:
            self._inflight.pop(key, None)
            raise
        finally:
            if key not in self._inflight:
                self.give_slot()

    async def _recheck_batch(self, keys: list[tuple[str, str]]) -> list[str]:
        return await self.store.start_activities(keys, self.worker_id, ttl_ms=self.claim_ttl_ms)

    def _claims_renewed(self, sent: float) -> None:
        """The heartbeat sent at ``sent`` renewed the claims of waiting deliveries: those
        still trusted then stay trusted (a lapsed one may have been taken meanwhile)."""
        trust = self.lease_ttl * CLAIM_TRUST
        for key, claimed in self._claimed_at.items():
            if sent - claimed < trust:
                self._claimed_at[key] = sent

    async def _execute(self, task: Task) -> None:
        """Run one attempt (its slot is held) and record its outcome exactly once."""
        run_id, seq, name = task.run_id, task.seq, task.name
        started = self.clock.now_ms()
        info = ActivityInfo(
            run_id, seq, name, self.worker_id, task.attempt, heartbeat_details=task.details
        )
        attempt = Attempt(task, info, now_ms=started, host=self)
        self._attempts[(run_id, seq)] = attempt
        leave = enter(attempt, self.clock.now_ms)
        try:
            if tracing.enabled():
                event = await self._traced_call(attempt)
            else:
                event = await self._call_activity(attempt)
        finally:
            leave()
            self._attempts.pop((run_id, seq), None)
            took = (self.clock.now_ms() - started) / 1000
            self._mean_s = took if self._mean_s is None else 0.8 * self._mean_s + 0.2 * took
            if self.metrics is not None:
                self.metrics.activity_finished(name, took)
            self.give_slot()  # recording needs no slot: the next activity may start now
        event |= {
            "seq": seq,
            "name": name,
            "started_ms": started,
            "ended_ms": self.clock.now_ms(),
            "worker": self.worker_id,
        }
        try:
            text = serde.dumps(event, what=f"result of activity {name!r}")
            if len(text) > self.payloads.threshold and event["type"] == "activity_completed":
                event["result"] = await self.payloads.pack(
                    run_id, event["result"], what=f"the result of activity {name!r}"
                )
                text = serde.dumps(event)
        except TaskloomError as exc:
            event = {k: v for k, v in event.items() if k != "result"}
            event |= {"type": "activity_failed", "error": error_dict(exc)}
            text = serde.dumps(event)
        try:
            if event["type"] == "activity_failed" and attempt.stop_reason != "cancelled":
                failure = await self._until_stored(
                    task, lambda: self._fail(task, event, attempt.details)
                )
                if failure.outcome is None:  # a retry is due, or the step is paused
                    return
                event, text = failure.outcome, serde.dumps(failure.outcome)
            routing = await self._until_stored(
                task,
                lambda: self._recorder.submit((run_id, seq, text, task.msg_id, task.attempt)),
            )
        finally:
            self._inflight.pop((run_id, seq), None)
            if task.msg_id is not None:
                self._held_msgs.discard(task.msg_id)
        if routing.status == "dup" and self.metrics is not None:
            self.metrics.duplicate()
        ex = self.runs.get(run_id)
        if routing.status == "ok" and ex is not None and routing.owner == self.worker_id:
            ex.apply_all([Event(id=routing.entry_id, type=event["type"], data=event)], read=False)
        elif routing.status in ("ok", "dup"):
            # "dup" may be this very outcome: recorded by a first try whose reply a Redis
            # outage lost, then sent again by _until_stored. Nobody told the owner then;
            # tell it now (where another worker recorded it, the owner reads its log twice).
            what = f"run {run_id} step {seq}: cannot wake its owner yet"
            await ride_out(lambda: self._wake_owner(run_id, routing), what=what, log=log)

    async def _wake_owner(self, run_id: str, routing: Routing) -> None:
        """Make the owner of ``run_id`` read an outcome recorded on it."""
        if routing.status == "ok":
            await self.store.wake(run_id, routing)
        elif run_id in self.runs:
            await self.take_run(run_id)  # held here: read its log now
        else:
            await self.store.enqueue_run(run_id, "event")  # whoever reads it finds the owner

    async def _fail(self, task: Task, event: dict[str, Any], details: Any) -> Failure:
        definition = self.registry.find_activity(task.name)
        policy = (definition.retry if definition else None) or self.retry
        failure = await handle_failure(
            self.store,
            self.dead_letters,
            task,
            event,
            policy=policy,
            queue=self.queue,
            worker_id=self.worker_id,
            now_ms=self.clock.now_ms(),
            details=details,
        )
        if failure.retry_due_ms is not None:
            self.clock.call_at(failure.retry_due_ms, self._retry_due.set)
            if self.metrics is not None:
                self.metrics.retry(task.name)
        return failure

    async def _until_stored(self, task: Task, write: Callable[[], Awaitable[Any]]) -> Any:
        """Write an outcome, riding out a Redis outage: the result is in hand, keep it."""
        what = f"run {task.run_id} step {task.seq}: cannot record yet"
        return await ride_out(write, what=what, log=log)

    async def _call_activity(self, attempt: Attempt) -> dict[str, Any]:
        task = attempt.task
        try:
            adef = self.registry.activity(task.name)
            waited = self._queued_for(task)
            if adef.schedule_to_start is not None and waited > adef.schedule_to_start:
                raise ActivityTimeoutError(
                    f"activity {task.name!r} waited {waited:.1f}s in queue {self.queue!r}, "
                    f"past its schedule-to-start timeout of {adef.schedule_to_start:g}s: are "
                    f"enough workers serving the queue?",
                    kind="schedule_to_start",
                )
            # The attempt runs on the values; the task (a retry, a dead letter) keeps the
            # references to big ones.
            attempt.task = dataclasses.replace(
                task,
                args=await self.payloads.unpack(task.args),
                kwargs=await self.payloads.unpack(task.kwargs),
            )
            result = await attempt.call(adef, executor=self._executor)
            return {"type": "activity_completed", "result": result}
        except Exception as exc:  # its message bounded, the whole of it in the blob store
            return {"type": "activity_failed", "error": await self.payloads.error(task.run_id, exc)}
        except asyncio.CancelledError:
            if not attempt.stop_reason:
                raise  # the worker is shutting down
            error = {"type": "CancelledError", "message": f"stopped: {attempt.stop_reason}"}
            return {"type": "activity_failed", "error": error}

    async def _traced_call(self, attempt: Attempt) -> dict[str, Any]:
        """:meth:`_call_activity` inside the attempt's span, a child of its run's."""
        task = attempt.task
        with tracing.attempt_span(
            await self._run_trace(task.run_id),
            run_id=task.run_id,
            seq=task.seq,
            name=task.name,
            attempt=task.attempt,
            worker=self.worker_id,
        ) as span:
            event = await self._call_activity(attempt)
            tracing.outcome(span, event, attempt.stop_reason)
        return event

    async def _run_trace(self, run_id: str) -> tracing.RunTrace | None:
        """The trace context in ``run_id``'s record (read once per run, then kept)."""
        ex = self.runs.get(run_id)
        if ex is not None:
            return ex.trace
        if run_id in self._traces:
            return self._traces[run_id]
        try:
            found = await self.store.raw.hmget(
                self.store.keys.meta(run_id), "traceparent", "trace_parent"
            )
        except RedisError:
            return None  # a trace is not worth waiting for; the attempt goes on
        run = tracing.RunTrace.from_meta({"traceparent": found[0], "trace_parent": found[1]})
        if run is None:  # created by a client with traces off
            run = tracing.RunTrace.of_run(run_id)
        if len(self._traces) >= 10_000:
            self._traces.clear()
        self._traces[run_id] = run
        return run

    def _queued_for(self, task: Task) -> float:
        """Seconds a queued task has waited."""
        return 0.0 if task.queued_ms is None else max(0.0, (now_ms() - task.queued_ms) / 1000)

    async def _record_batch(
        self, items: list[tuple[str, str, str, str | None, int]]
    ) -> list[Routing]:
        return await self.store.record(
            [(r, s, e) for r, s, e, _, _ in items],
            self.worker_id,
            acks=[(self.queue, m) for _, _, _, m, _ in items if m is not None],
            attempts=[a for *_, a in items],
        )

    # -- wake-ups and maintenance -------------------------------------------------------
    async def _retry_loop(self) -> None:
        """Move due retries onto the queue: at once when this worker set them, and
        every ``lease_ttl`` for those a dead worker left behind."""
        store, cancel = self.store, None
        while not self._stopping.is_set():
            self._retry_due.clear()
            await store.move_due_retries(self.queue, now_ms=self.clock.now_ms())
            due = await store.next_retry_ms(self.queue)
            if cancel is not None:
                cancel()
            cancel = None if due is None else self.clock.call_at(due, self._retry_due.set)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._retry_due.wait(), self.lease_ttl)

    async def _wake_loop(self) -> None:
        client, key, last = self.store.raw, self.store.keys.wake(self.worker_id), "0"
        # (Re)started, after a Redis outage too: wake-ups sent meanwhile may be lost (a
        # server that crashed loses the wake stream's tail), so every run held here reads
        # its log once.
        for run_id in list(self.runs):
            await self.take_run(run_id)
        while not self._stopping.is_set():
            res = await client.xread({key: last}, count=500, block=1000)
            for _, messages in res or []:
                last = messages[-1][0]
                for run_id in dict.fromkeys(f["run"] for _, f in messages):
                    await self.take_run(run_id)
                await client.xtrim(key, minid=last)

    async def _maintenance_loop(self) -> None:
        interval = self.lease_ttl / 4
        next_gauges, next_sweep = 0.0, time.monotonic() + SWEEP_INTERVAL_S
        while not self._stopping.is_set():
            await self._heartbeat()
            await self._watch_attempts()
            await self._recover()
            if self.retention is not None and time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + SWEEP_INTERVAL_S
                if await self.store.raw.set(
                    self.store.keys.sweep_lock, self.worker_id, nx=True, px=SWEEP_INTERVAL_MS
                ):  # one worker sweeps per interval
                    await self.sweep()
            if self.metrics is not None and time.monotonic() >= next_gauges:
                next_gauges = time.monotonic() + GAUGE_INTERVAL_S
                await self._update_gauges(self.metrics)
            self._timer_due.clear()
            with contextlib.suppress(TimeoutError):  # a timer this worker set wakes it early
                await asyncio.wait_for(self._timer_due.wait(), interval)

    async def _watch_attempts(self) -> None:
        """Stop attempts that stopped heartbeating (hung) or whose run was cancelled, and
        save heartbeat details so a replacing attempt can resume from them."""
        attempts = list(self._attempts.values())
        if not attempts:
            return
        now = self.clock.now_ms()
        for attempt in attempts:
            adef = self.registry.find_activity(attempt.task.name)
            if adef is None:
                continue
            silent = (now - attempt.last_beat_ms) / 1000
            if adef.timeout is not None and now - attempt.started_ms > adef.timeout * 1000:
                attempt.stop("timeout")
            elif adef.heartbeat_timeout is not None and silent > adef.heartbeat_timeout:
                log.warning(
                    "run %s step %s: no heartbeat for %.1fs; giving the attempt up as hung",
                    attempt.task.run_id,
                    attempt.task.seq,
                    silent,
                )
                attempt.stop("heartbeat")
        live = [a for a in attempts if not a.stop_reason]
        for run_id in await self.store.stopped_runs({a.task.run_id for a in live}):
            for attempt in live:
                if attempt.task.run_id == run_id:
                    attempt.stop("cancelled")
        dirty = [a for a in attempts if a.dirty]
        for attempt in dirty:
            attempt.dirty = False
        if dirty:
            await self.store.save_heartbeats((a.task.run_id, a.task.seq, a.details) for a in dirty)

    async def sweep(self) -> tuple[int, int]:
        """Delete runs that ended more than ``retention`` seconds ago, then the blobs no
        run references any more; returns ``(runs, blobs)`` deleted."""
        if self.retention is None:
            return 0, 0
        now = self.clock.now_ms()
        runs = await self.payloads.expire_runs(older_than_ms=now - int(self.retention * 1000))
        blobs = await self.payloads.collect(now_ms=now)
        if runs or blobs:
            log.info("retention: deleted %d runs and %d blobs", len(runs), blobs)
        return len(runs), blobs

    async def _update_gauges(self, metrics: Metrics) -> None:
        metrics.set_in_flight(len(self._inflight) - len(self._waiting))
        metrics.set_dead_letters(await self.dead_letters.count())
        metrics.set_inbox(await self.human_tasks.stats())  # the open count included

    async def _heartbeat(self) -> None:
        store = self.store
        held = [(rid, ex.epoch) for rid, ex in self.runs.items()]
        known = {rid: ex.known() for rid, ex in self.runs.items()}
        renewed = await store.renew(held, self.worker_id, ttl_ms=self.claim_ttl_ms, known=known)
        for (run_id, _), ok in zip(held, renewed, strict=True):
            ex = self.runs.get(run_id)
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
        if self._inflight:
            sent = time.monotonic()
            await store.renew_claims(list(self._inflight), ttl_ms=self.claim_ttl_ms)
            self._claims_renewed(sent)
        if self._held_msgs:
            await store.raw.xclaim(
                store.keys.queue(self.queue),
                Keys.GROUP,
                self.worker_id,
                0,
                list(self._held_msgs),
                justid=True,
            )

    async def _recover(self) -> None:
        """Resume runs of dead owners, reclaim stuck deliveries, fire due timers."""
        store, idle = self.store, self.claim_ttl_ms
        for run_id in await store.expired_leases():
            if run_id not in self.runs:
                await self.take_run(run_id)
        # A dead worker's deliveries come back even while this one is busy: they queue
        # for a slot here, kept alive by this worker's heartbeat.
        res = await store.raw.xautoclaim(
            store.keys.queue(self.queue),
            Keys.GROUP,
            self.worker_id,
            idle,
            "0-0",
            count=max(1, self._free + self._prefetch_room()),
        )
        if res[1]:
            await self._intake(res[1])
        res = await store.raw.xautoclaim(
            store.keys.runq, Keys.GROUP, self.worker_id, idle, "0-0", count=50
        )
        if res[1]:
            await self._handle_run_messages(res[1])
        await store.pop_timers(now=self.clock.now_ms())
        for step in await self.human_tasks.apply_due_slas(now=self.clock.now_ms()):
            log.info("human task %s: %s %s", step.task_id, step.kind, step.detail)
            if step.kind == "sla_breached" and self.metrics is not None:
                self.metrics.sla_breach()
