"""A worker's activity runner: runs attempts in the worker's slots, enforces their
timeouts (start-to-close, heartbeat, schedule-to-start), and records each outcome
exactly once, riding out Redis outages with the result in hand."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, cast

from redis.exceptions import RedisError

from taskloom import tracing
from taskloom.engine import serde
from taskloom.engine.attempt import ActivityInfo, Attempt, enter, leave
from taskloom.engine.batch import Batcher
from taskloom.engine.blobs import is_ref
from taskloom.engine.events import ActivityFailed
from taskloom.engine.failures import Failure, handle_failure
from taskloom.engine.partitions import partition_of
from taskloom.engine.store import Event, Routing, now_ms, ride_out
from taskloom.engine.tasks import Task
from taskloom.errors import ActivityTimeoutError, TaskloomError, error_dict

if TYPE_CHECKING:
    from taskloom.engine.worker import Worker

__all__ = ["ActivityRunner"]

log = logging.getLogger("taskloom.engine.worker")


class ActivityRunner:
    """The activities a worker runs: their claims, attempts and asyncio tasks."""

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self.inflight: dict[tuple[str, str], str | None] = {}
        self.claimed: dict[tuple[str, str], float] = {}
        """When the claims of steps in :attr:`inflight` were last sent (made or renewed;
        ``time.monotonic()``); one missing is taken as old."""
        self.attempts: dict[tuple[str, str], Attempt] = {}  # running now
        self.traces: dict[str, tracing.RunTrace] = {}  # run id -> its trace context
        self.tasks: set[asyncio.Task[None]] = set()
        self.executor = ThreadPoolExecutor(
            max_workers=worker.concurrency, thread_name_prefix="taskloom-activity"
        )
        self.recorder = Batcher(self._record_batch)

    def track(self, coro: Coroutine[Any, Any, None], *, name: str | None = None) -> None:
        """Run ``coro`` as a task the worker waits for (within its grace) when stopping."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._activity_done)

    def _activity_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A bug, not an outage (those are retried inside): say so loudly. The step's
            # claim and delivery lapse, so another worker runs it again.
            log.error(
                "worker %s: activity task crashed", self.w.worker_id, exc_info=task.exception()
            )

    def claims_due(self, now: float, age: float) -> list[tuple[str, str]]:
        """The claims in flight sent ``age`` seconds or more before ``now``: those a
        heartbeat renews (forgetting the times of claims no longer in flight)."""
        claimed = self.claimed
        self.claimed = {k: claimed[k] for k in self.inflight if k in claimed}
        return [k for k in self.inflight if now - self.claimed.get(k, -math.inf) >= age]

    def claims_sent(self, keys: list[tuple[str, str]], sent: float) -> None:
        """The claims of ``keys`` were sent (made or renewed) at ``sent``."""
        self.claimed.update(dict.fromkeys(keys, sent))

    def spawn(self, task: Task) -> None:
        """Start ``task`` in the slot taken for it."""
        self.inflight[(task.run_id, task.seq)] = task.msg_id
        if self.w.metrics is not None and task.msg_id is not None:
            self.w.metrics.queue_wait(self.w.queue, self.queued_for(task))
        # Named: a loop-lag warning names the activity that blocked the loop.
        name = f"activity {task.name} {task.run_id}/{task.seq}"
        self.tasks.add(asyncio.get_running_loop().create_task(self._start(task), name=name))

    async def _start(self, task: Task) -> None:
        """Run ``task`` in its slot, unless it waited here so long (a paused process, a
        blocked loop) that its claim may have lapsed and it is no longer ours. (What
        :meth:`track`'s done-callback does, done here: one callback less per attempt.)"""
        try:
            if task.msg_id is None or await self.w.intake.still_ours(task):
                await self._execute(task)
        except Exception:
            # A bug, not an outage (those are retried inside): say so loudly. The step's
            # claim and delivery lapse, so another worker runs it again.
            log.error("worker %s: activity task crashed", self.w.worker_id, exc_info=True)
        finally:
            self.tasks.discard(asyncio.current_task())

    async def _execute(self, task: Task) -> None:
        """Run one attempt (its slot is held) and record its outcome exactly once."""
        w = self.w
        run_id, seq, name = task.run_id, task.seq, task.name
        started = w.clock.now_ms()
        info = ActivityInfo(
            run_id, seq, name, w.worker_id, task.attempt, heartbeat_details=task.details
        )
        attempt = Attempt(task, info, now_ms=started, host=w, clock=w.clock.now_ms)
        self.attempts[(run_id, seq)] = attempt
        token = enter(attempt)
        try:
            if tracing.enabled():
                event = await self._traced_call(attempt)
            else:
                event = await self._call_activity(attempt)
        finally:
            leave(token)
            self.attempts.pop((run_id, seq), None)
            took = (w.clock.now_ms() - started) / 1000
            w._mean_s = took if w._mean_s is None else 0.8 * w._mean_s + 0.2 * took
            if w.metrics is not None:
                w.metrics.activity_finished(name, took)
            w.give_slot()  # recording needs no slot: the next activity may start now
        event["seq"], event["name"], event["started_ms"] = seq, name, started
        event["ended_ms"], event["worker"] = w.clock.now_ms(), w.worker_id
        try:
            text = serde.dumps(event, what=f"result of activity {name!r}")
            if len(text) > w.payloads.threshold and event["type"] == "activity_completed":
                event["result"] = await w.payloads.pack(
                    run_id, event["result"], what=f"the result of activity {name!r}"
                )
                text = serde.dumps(event)
        except TaskloomError as exc:
            event = {k: v for k, v in event.items() if k != "result"}
            event |= {"type": "activity_failed", "error": error_dict(exc)}
            text = serde.dumps(event)
        try:
            if event["type"] == "activity_failed" and attempt.stop_reason != "cancelled":
                failed = cast("ActivityFailed", event)  # built above with every field
                failure = await self._until_stored(
                    task, lambda: self._fail(task, failed, attempt.details)
                )
                if failure.outcome is None:  # a retry is due, or the step is paused
                    return
                event, text = dict(failure.outcome), serde.dumps(failure.outcome)
            item = (run_id, seq, text, task.msg_id, task.attempt, event)
            try:  # the common case first: no retry loop to set up
                routing, applied = await self.recorder.submit(item)
            except RedisError:
                routing, applied = await self._until_stored(
                    task, lambda: self.recorder.submit(item)
                )
        finally:
            self.inflight.pop((run_id, seq), None)
            if task.msg_id is not None:
                w.intake.held_msgs.discard(task.msg_id)
            w.intake.attempt_over(run_id, seq)  # its next attempt may be here already
        if routing.status == "dup" and w.metrics is not None:
            w.metrics.duplicate()
        if applied:  # the owner is here and has it (_record_batch)
            return
        if routing.status in ("ok", "dup"):
            # "dup" may be this very outcome: recorded by a first try whose reply a Redis
            # outage lost, then sent again by _until_stored. Nobody told the owner then;
            # tell it now (where another worker recorded it, the owner reads its log twice).
            what = f"run {run_id} step {seq}: cannot wake its owner yet"
            await ride_out(lambda: self._wake_owner(run_id, routing), what=what, log=log)

    async def _wake_owner(self, run_id: str, routing: Routing) -> None:
        """Make the owner of ``run_id`` read an outcome recorded on it."""
        if routing.status == "ok":
            await self.w.store.wake(run_id, routing)
        elif run_id in self.w.runs:
            await self.w.take_run(run_id)  # held here: read its log now
        else:
            await self.w.store.enqueue_run(run_id, "event")  # whoever reads it finds the owner

    async def _fail(self, task: Task, event: ActivityFailed, details: Any) -> Failure:
        w = self.w
        definition = w.registry.find_activity(task.name)
        policy = (definition.retry if definition else None) or w.retry
        failure = await handle_failure(
            w.store,
            w.dead_letters,
            task,
            event,
            policy=policy,
            queue=w.queue,
            worker_id=w.worker_id,
            now_ms=w.clock.now_ms(),
            details=details,
        )
        if failure.retry_due_ms is not None:
            w.clock.call_at(failure.retry_due_ms, w.maintenance.retry_due.set)
            if w.metrics is not None:
                w.metrics.retry(task.name)
        return failure

    async def _until_stored(self, task: Task, write: Callable[[], Awaitable[Any]]) -> Any:
        """Write an outcome, riding out a Redis outage: the result is in hand, keep it."""
        what = f"run {task.run_id} step {task.seq}: cannot record yet"
        return await ride_out(write, what=what, log=log)

    async def _call_activity(self, attempt: Attempt) -> dict[str, Any]:
        w = self.w
        task = attempt.task
        registry = w.registry
        try:
            if registry.loading is not None:
                await registry.settle(task.name)  # a layer still loading
            adef = registry.activity(task.name)
            if adef.schedule_to_start is not None:
                waited = self.queued_for(task)
                if waited > adef.schedule_to_start:
                    raise ActivityTimeoutError(
                        f"activity {task.name!r} waited {waited:.1f}s in queue {w.queue!r}, "
                        f"past its schedule-to-start timeout of {adef.schedule_to_start:g}s: "
                        f"are enough workers serving the queue?",
                        kind="schedule_to_start",
                    )
            # The attempt runs on the values; the task (a retry, a dead letter) keeps the
            # references to big ones.
            if is_ref(task.args) or is_ref(task.kwargs):
                attempt.task = dataclasses.replace(
                    task,
                    args=await w.payloads.unpack(task.args),
                    kwargs=await w.payloads.unpack(task.kwargs),
                )
            result = await attempt.call(adef, executor=self.executor)
            return {"type": "activity_completed", "result": result}
        except Exception as exc:  # its message bounded, the whole of it in the blob store
            return {"type": "activity_failed", "error": await w.payloads.error(task.run_id, exc)}
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
            worker=self.w.worker_id,
        ) as span:
            event = await self._call_activity(attempt)
            tracing.outcome(span, event, attempt.stop_reason)
        return event

    async def _run_trace(self, run_id: str) -> tracing.RunTrace | None:
        """The trace context in ``run_id``'s record (read once per run, then kept)."""
        ex = self.w.runs.get(run_id)
        if ex is not None:
            return ex.trace
        if run_id in self.traces:
            return self.traces[run_id]
        try:
            found = await self.w.store.raw.hmget(
                self.w.store.keys.meta(run_id), "traceparent", "trace_parent"
            )
        except RedisError:
            return None  # a trace is not worth waiting for; the attempt goes on
        run = tracing.RunTrace.from_meta({"traceparent": found[0], "trace_parent": found[1]})
        if run is None:  # created by a client with traces off
            run = tracing.RunTrace.of_run(run_id)
        if len(self.traces) >= 10_000:
            self.traces.clear()
        self.traces[run_id] = run
        return run

    def queued_for(self, task: Task) -> float:
        """Seconds a queued task has waited."""
        return 0.0 if task.queued_ms is None else max(0.0, (now_ms() - task.queued_ms) / 1000)

    async def _record_batch(
        self, items: list[tuple[str, str, str, str | None, int, dict[str, Any]]]
    ) -> list[tuple[Routing, bool]]:
        """Record the outcomes of one tick in one round trip; those recorded on runs
        owned here are applied to them at once, one call per run: ``(routing, applied)``
        for each."""
        w = self.w
        routings = await w.store.record(
            [(r, s, e) for r, s, e, *_ in items],
            w.worker_id,
            acks=[partition_of(w.queue, it[3]) for it in items if it[3] is not None],
            attempts=[it[4] for it in items],
        )
        mine: dict[str, list[Event]] = {}
        out: list[tuple[Routing, bool]] = []
        for (run_id, *_, event), routing in zip(items, routings, strict=True):
            here = routing.status == "ok" and routing.owner == w.worker_id and run_id in w.runs
            if here:
                ev = Event(id=routing.entry_id, type=event["type"], data=event)
                mine.setdefault(run_id, []).append(ev)
            out.append((routing, here))
        for run_id, events in mine.items():
            w.runs[run_id].apply_all(events, read=False)
        return out

    async def watch_attempts(self) -> None:
        """Stop attempts that stopped heartbeating (hung) or whose run was cancelled, and
        save heartbeat details so a replacing attempt can resume from them."""
        attempts = list(self.attempts.values())
        if not attempts:
            return
        now = self.w.clock.now_ms()
        for attempt in attempts:
            adef = self.w.registry.find_activity(attempt.task.name)
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
        for run_id in await self.w.store.stopped_runs({a.task.run_id for a in live}):
            for attempt in live:
                if attempt.task.run_id == run_id:
                    attempt.stop("cancelled")
        dirty = [a for a in attempts if a.dirty]
        for attempt in dirty:
            attempt.dirty = False
        if dirty:
            await self.w.store.save_heartbeats(
                (a.task.run_id, a.task.seq, a.details) for a in dirty
            )
