"""One run held in a worker's memory: its replayed history and its live workflow task.

The worker that owns a run (holds its lease) keeps an :class:`Execution`: the steps
recorded in the run's log, the futures that workflow code awaits, and a buffer of
writes flushed to Redis once per event-loop tick, so a ``gather`` of a thousand
activities is one fenced script call, not a thousand.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from taskloom import tracing
from taskloom.engine import serde
from taskloom.engine.blobs import is_ref
from taskloom.engine.compensation import Compensation
from taskloom.engine.context import Context, _Scope, _scope
from taskloom.engine.dispatch import Dispatcher
from taskloom.engine.ending import Ending
from taskloom.engine.ending import child_outcome as child_outcome
from taskloom.engine.ending import deliver as deliver
from taskloom.engine.events import NowRecorded, ValueRecorded
from taskloom.engine.history import TERMINAL_EVENTS as TERMINAL_EVENTS
from taskloom.engine.history import History, _Step
from taskloom.engine.human import Decision, HumanTask, HumanTasks, new_task
from taskloom.engine.store import Event, Op, Store, now_ms
from taskloom.engine.writes import Writes
from taskloom.errors import (
    ActivityError,
    ChildWorkflowError,
    HumanTaskExpiredError,
    NondeterminismError,
    UserError,
)

if TYPE_CHECKING:
    from taskloom.engine.clock import Clock
    from taskloom.engine.definitions import Registry
    from taskloom.engine.extensions import ExtensionT
    from taskloom.engine.partitions import QueuePartitions
    from taskloom.engine.payloads import Payloads

__all__ = ["Execution", "Host"]

KEEP_SHORT_TIMERS_MS = 1000


class Host(Protocol):
    """What an execution needs from the worker that holds it."""

    store: Store
    registry: Registry
    clock: Clock
    payloads: Payloads
    human_tasks: HumanTasks
    resources: dict[str, Any]
    worker_id: str
    queue: str
    partitions: QueuePartitions
    claim_ttl_ms: int
    context_type: type[Context]

    def extension(self, kind: type[ExtensionT]) -> ExtensionT | None: ...
    def take_slot(self) -> bool: ...
    def give_slot(self) -> None: ...
    def run_local(
        self,
        run_id: str,
        seq: str,
        name: str,
        args: list[Any],
        kwargs: dict[str, Any],
        *,
        claimed: float,
    ) -> None: ...
    def finished(self, execution: Execution, status: str | None = None) -> None: ...
    def evict_soon(self, execution: Execution) -> None: ...
    def rolled_back(self, execution: Execution) -> None: ...


class Execution:
    """A run owned by this worker: replayed from its log, then continued for real."""

    def __init__(
        self, *, host: Host, run_id: str, epoch: str, meta: dict[str, str], events: list[Event]
    ) -> None:
        self.host = host
        self.run_id = run_id
        self.epoch = epoch
        self.workflow_name = meta["workflow"]
        self.input = serde.loads(meta["input"])
        parent = meta.get("parent") or ""
        self.parent: dict[str, Any] | None = serde.loads(parent) if parent else None
        self.steps: dict[str, _Step] = {}
        self.signals: dict[str, deque[tuple[str, Any]]] = {}
        self.taken_signals: set[str] = set()
        self.waiters: dict[str, asyncio.Future[_Step]] = {}
        self.waiting_kind: dict[str, str] = {}
        self.signal_waiters: dict[str, deque[str]] = {}
        self.timer_handles: dict[str, Callable[[], None]] = {}  # seq -> cancel
        self.last_id = ""
        self.cancel_requested = False
        self.terminal = False
        self.deadline_ms = int(meta.get("deadline_ms") or 0)
        self.created_ms = int(meta.get("created_ms") or 0)
        self.trace = tracing.RunTrace.from_meta(meta) or tracing.RunTrace.of_run(run_id)
        """The run's trace context, from its record (see :mod:`taskloom.tracing`)."""
        self.timed_out = False
        self.compensating = False
        self.completed: list[str] = []  # activity steps in the order they succeeded
        self.replaying = True
        self.task: asyncio.Task[Any] | None = None
        self.writes = Writes(self)
        """The write buffer, its flush task and the entries this owner built on."""
        self.dispatcher = Dispatcher(self)
        self.compensation = Compensation(self)
        self.ending = Ending(self)
        self.history = History(self)
        """The log's events folded into this execution's steps and state."""
        self._root = _Scope("")
        for event in events:
            self.apply(event)
        if events:
            self.last_id = events[-1].id
            self.writes.saw(self.last_id)

    # -- applying recorded events -------------------------------------------------------
    def apply_all(self, events: list[Event], *, read: bool = True) -> None:
        """Apply log events (idempotent) and wake whatever waits on them.

        ``read`` says the events were read in order from the log, so ``last_id`` may move
        past them; outcomes this worker recorded itself are applied with ``read=False``.
        """
        for event in events:
            self.apply(event)
        if read and events:
            self.last_id = events[-1].id
            self.writes.saw(self.last_id)
        elif events:  # recorded after the last check: maybe past a hole Redis left
            # ID=SEQ: recorded with the steps hash's SEQ, which checks it (Writes.known)
            self.writes.unverified.extend(
                e.id if e.seq is None else f"{e.id}={e.seq}" for e in events
            )
        self._check_evictable()

    def known(self) -> list[str]:
        """The log entries to check before building on this owner's view (see
        :meth:`Writes.known <taskloom.engine.writes.Writes.known>`)."""
        return self.writes.known()

    def verified(self, checked: list[str]) -> None:
        """The entries of :meth:`known` were there: they need no checking again."""
        self.writes.verified(checked)

    def apply(self, event: Event) -> None:
        """Fold one log event into the history."""
        self.history.apply(event)

    def _resolve(
        self, seq: str, step: _Step, *, ok: bool, value: Any, error: dict[str, Any] | None
    ) -> None:
        if step.done:
            return
        step.done, step.ok, step.value, step.error = True, ok, value, error
        fut = self.waiters.pop(seq, None)
        self.waiting_kind.pop(seq, None)
        if fut is not None and not fut.done():
            fut.set_result(step)

    # -- step helpers -------------------------------------------------------------------
    def _step(self, seq: str, kind: str, name: str) -> _Step | None:
        step = self.steps.get(seq)
        if step is not None and (step.kind != kind or step.name != name):
            raise NondeterminismError(
                f"run {self.run_id}, step {seq}: the workflow now calls {kind} {name!r}, but "
                f"the log recorded {step.kind} {step.name!r} at this position. Workflow code "
                f"changed while this run was in flight, or it branches on something not "
                f"recorded (time, randomness, I/O): use ctx.now()/ctx.random() and keep "
                f"running runs on the code that started them"
            )
        if step is None:
            self.replaying = False
        return step

    def _wait(self, seq: str, kind: str) -> asyncio.Future[_Step]:
        fut = self.waiters.get(seq)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self.waiters[seq] = fut
            self.waiting_kind[seq] = kind
            if kind in ("timer", "signal"):
                self._check_evictable()
        return fut

    # -- the workflow-facing operations (called by Context) -----------------------------
    async def activity(self, seq: str, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Run activity ``name`` as step ``seq``, or return its recorded outcome."""
        step = self._step(seq, "activity", name)
        if step is None:
            step = self.steps[seq] = _Step("activity", name, scheduled=True)
            args, kwargs, json = await self.dispatcher.task_args(name, args, kwargs)
            self.dispatcher.dispatch(seq, step, args, kwargs, new=True, json=json)
        elif not step.done and not step.dispatched_here and not step.retried:
            # Replayed after a takeover, scheduled and without an outcome: schedule it
            # again. A local step's runner may have died with the old owner; a queued
            # step's delivery may be gone, or stuck with a worker that will not start it.
            # A second delivery of a step that runs or ran elsewhere finds it claimed or
            # recorded, and is dropped. (Not after a failed attempt: the next one waits,
            # durably, as a retry or a dead letter; a new first attempt would skip the
            # backoff only to have its outcome dropped as stale.)
            step.dispatched_here = True
            args, kwargs, json = await self.dispatcher.task_args(name, args, kwargs)
            self.dispatcher.dispatch(seq, step, args, kwargs, new=False, json=json)
        if not step.done:
            step = await self._wait(seq, "activity")
        if step.ok:
            if is_ref(step.value):  # a big result, kept in the blob store
                step.value = await self.host.payloads.unpack(step.value)
            return step.value
        err = step.error or {}
        attempts = int(err.get("attempts", 1))
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        raise ActivityError(
            f"activity {name!r} (step {seq}) failed{tries}: {err.get('type', 'Error')}: "
            f"{err.get('message', '')}",
            activity=name,
            error_type=str(err.get("type", "")),
            attempts=attempts,
            history=list(err.get("history", [])),
        )

    async def sleep(self, seq: str, seconds: float) -> None:
        """A durable timer as step ``seq``."""
        step = self._step(seq, "timer", "sleep")
        if step is None:
            step = self.steps[seq] = _Step(
                "timer",
                "sleep",
                scheduled=True,
                due_ms=self.host.clock.now_ms() + int(seconds * 1000),
            )
            self.writes.batch.ops.append(
                Op(
                    event={
                        "type": "timer_started",
                        "seq": seq,
                        "due_ms": step.due_ms,
                        "ts": now_ms(),
                    }
                )
            )
            self.writes.queue_flush()
        if not step.done:
            fut = self._wait(seq, "timer")
            self._arm_timer(seq, step)
            await fut

    def _arm_timer(self, seq: str, step: _Step) -> None:
        if seq in self.timer_handles:
            return
        self.timer_handles[seq] = self.host.clock.call_at(
            step.due_ms, lambda: self._fire_timer(seq)
        )

    def _fire_timer(self, seq: str) -> None:
        self.timer_handles.pop(seq, None)
        step = self.steps[seq]
        if step.done:
            return
        self.writes.batch.ops.append(
            Op(event={"type": "timer_fired", "seq": seq, "ts": now_ms()}, mode="step", seq=seq)
        )
        self.writes.queue_flush()
        self._resolve(seq, step, ok=True, value=None, error=None)

    async def escalate(self, seq: str, spec: dict[str, Any]) -> Decision:
        """Open a human task as step ``seq`` and wait for its decision."""
        step = self._step(seq, "human", "escalate")
        if step is None:
            task = new_task(self.run_id, seq, spec, created_ms=self.host.clock.now_ms())
            step = self.steps[seq] = _Step("human", "escalate", scheduled=True, args=[task])
            self.writes.batch.ops.append(
                Op(
                    event={
                        "type": "human_task_created",
                        "seq": seq,
                        "task": task.to_dict(),
                        "ts": now_ms(),
                    }
                )
            )
            self.writes.batch.after.append(("human", task))
            self.writes.queue_flush()
        elif not step.done:  # after a takeover: make sure the inbox has it
            task = step.args[0]
            task = task if isinstance(task, HumanTask) else HumanTask(**task)
            self.writes.batch.after.append(("human", task))
            self.writes.queue_flush()
        if not step.done:
            step = await self._wait(seq, "human")
        if step.ok:
            return Decision(**step.value)
        err = step.error or {}
        raise HumanTaskExpiredError(str(err.get("message", "the human task expired")))

    async def wait_for_signal(self, seq: str, name: str) -> Any:
        """Take the next signal ``name`` as step ``seq``."""
        step = self._step(seq, "signal", name)
        if step is None:
            step = self.steps[seq] = _Step("signal", name)
            fut = self._wait(seq, "signal")
            self.signal_waiters.setdefault(name, deque()).append(seq)
            self._feed_signal_waiters(name)
        elif not step.done:
            fut = self._wait(seq, "signal")
        if not step.done:
            step = await fut
        return step.value

    def _feed_signal_waiters(self, name: str) -> None:
        waiting, pending = self.signal_waiters.get(name), self.signals.get(name)
        while waiting and pending:
            seq = waiting.popleft()
            signal_id, payload = pending.popleft()
            self.taken_signals.add(signal_id)
            self.writes.batch.ops.append(
                Op(
                    event={
                        "type": "signal_taken",
                        "seq": seq,
                        "name": name,
                        "signal_id": signal_id,
                        "payload": payload,
                        "ts": now_ms(),
                    },
                    mode="step",
                    seq=seq,
                )
            )
            self.writes.queue_flush()
            self._resolve(seq, self.steps[seq], ok=True, value=payload, error=None)

    async def child(self, seq: str, workflow: str, args: list[Any]) -> Any:
        """Run ``workflow`` as a child run, step ``seq``."""
        step = self._step(seq, "child", workflow)
        if step is None:
            child_id = f"{self.run_id}.{seq}"
            step = self.steps[seq] = _Step("child", workflow, scheduled=True, child_id=child_id)
            input_json = await self.dispatcher.child_input(child_id, workflow, args)
            self.writes.batch.ops.append(
                Op(
                    event={
                        "type": "child_started",
                        "seq": seq,
                        "workflow": workflow,
                        "child_id": child_id,
                        "ts": now_ms(),
                    }
                )
            )
            self.writes.batch.after.append(("child", seq, child_id, workflow, input_json))
            self.writes.queue_flush()
        elif not step.done:  # after a takeover: make sure the child exists, or collect it
            input_json = await self.dispatcher.child_input(step.child_id, workflow, args)
            self.writes.batch.after.append(("child", seq, step.child_id, workflow, input_json))
            self.writes.queue_flush()
        if not step.done:
            step = await self._wait(seq, "child")
        if step.ok:
            return step.value
        err = step.error or {}
        raise ChildWorkflowError(
            f"child run {step.child_id} ({workflow}) failed: "
            f"{err.get('type', 'Error')}: {err.get('message', '')}"
        )

    def now(self, seq: str) -> int:
        """The time in ms for step ``seq``, recorded on first use."""
        step = self._step(seq, "now", "now")
        if step is None:
            value = now_ms()
            event: NowRecorded = {"type": "now_recorded", "seq": seq, "value": value}
            step = self._record_step(seq, "now", "now", event)
        return int(step.value)

    def record(self, seq: str, name: str, value: Any) -> Any:
        """Record ``value`` as step ``seq`` on first execution; a replay returns the
        recorded value instead (whatever ``value`` is then)."""
        step = self._step(seq, "record", name)
        if step is None:  # a replay returns what was checked and recorded then
            event: ValueRecorded = {
                "type": "value_recorded",
                "seq": seq,
                "name": name,
                "value": value,
            }
            step = self._record_step(seq, "record", name, event)
        return step.value

    def _record_step(
        self, seq: str, kind: str, name: str, event: NowRecorded | ValueRecorded
    ) -> _Step:
        text = serde.dumps(event, what=f"recorded value {name!r}")  # checked, written as is
        step = self.steps[seq] = _Step(kind, name, done=True, value=event["value"])
        self.writes.batch.ops.append(Op(event=event, mode="step", seq=seq, text=text))
        self.writes.queue_flush()
        return step

    # -- running the workflow function --------------------------------------------------
    def start(self) -> None:
        """Start (or replay) the workflow function in its own task."""
        if self.cancel_requested:
            self.task = asyncio.get_running_loop().create_task(self._cancelled_main())
        else:
            self.task = asyncio.get_running_loop().create_task(self._main())
        self.task.add_done_callback(self.ending.on_done)
        if self.deadline_ms:
            self.timer_handles["deadline"] = self.host.clock.call_at(
                self.deadline_ms, self._time_out
            )

    def _time_out(self) -> None:
        self.timer_handles.pop("deadline", None)
        if self.terminal or self.timed_out or self.compensating:
            return
        self.timed_out = True
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def _cancelled_main(self) -> Any:
        raise asyncio.CancelledError

    async def _main(self) -> Any:
        _scope.set(self._root)
        if is_ref(self.input):  # a big input, kept in the blob store
            if self.host.payloads.blobs is None:
                raise UserError(
                    f"run {self.run_id}: its input is in the blob store and this worker has "
                    f"none; make workers with orch.worker() or give Worker(payloads=...) the "
                    f"blob store the client uses (TASKLOOM_BLOB_URL)"
                )
            self.input = await self.host.payloads.unpack(self.input)
        await self.host.registry.settle(self.workflow_name)  # a layer still loading
        wf = self.host.registry.workflow(self.workflow_name)
        return await wf.fn(
            self.host.context_type(self),
            *self.input.get("args", []),
            **self.input.get("kwargs", {}),
        )

    # -- flushing buffered writes -------------------------------------------------------
    async def _drain(self) -> None:
        await self.writes.drain()

    # -- eviction -----------------------------------------------------------------------
    def _check_evictable(self) -> None:
        if self.evictable():
            self.host.evict_soon(self)

    def evictable(self) -> bool:
        """Waiting only on timers, signals or paused activities: the run can leave memory
        until they fire."""
        if self.terminal or self.task is None or self.task.done() or not self.waiters:
            return False
        if self.writes.flushing is not None and not self.writes.flushing.done():
            return False  # (a queued flush is a running task already)
        if not all(
            k in ("timer", "signal", "human") or (k == "activity" and self.steps[s].paused)
            for s, k in self.waiting_kind.items()
        ):
            return False
        due = self.next_due_ms()  # a timer about to fire is cheaper to keep than to replay
        return due is None or due - self.host.clock.now_ms() > KEEP_SHORT_TIMERS_MS

    def next_due_ms(self) -> int | None:
        """The earliest pending timer, for the scheduler's timer set."""
        dues = [self.steps[s].due_ms for s, k in self.waiting_kind.items() if k == "timer"]
        if self.deadline_ms and not self.terminal:
            dues.append(self.deadline_ms)
        return min(dues) if dues else None
