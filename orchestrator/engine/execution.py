"""One run held in a worker's memory: its replayed history and its live workflow task.

The worker that owns a run (holds its lease) keeps an :class:`Execution`: the steps
recorded in the run's log, the futures that workflow code awaits, and a buffer of
writes flushed to Redis once per event-loop tick, so a ``gather`` of a thousand
activities is one fenced script call, not a thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from redis.exceptions import RedisError

from taskloom import tracing
from taskloom.engine import serde
from taskloom.engine.batch import Batch, split_after_last_local
from taskloom.engine.blobs import is_ref
from taskloom.engine.context import Context, _Scope, _scope
from taskloom.engine.human import Decision, HumanTask, HumanTasks, new_task
from taskloom.engine.store import Event, Op, Store, now_ms
from taskloom.engine.tasks import task_fields
from taskloom.errors import (
    ActivityError,
    ChildWorkflowError,
    HumanTaskExpiredError,
    LeaseLostError,
    NondeterminismError,
    RunTimeoutError,
    StoreRolledBackError,
    TaskloomError,
    UserError,
    error_dict,
)

if TYPE_CHECKING:
    from taskloom.engine.clock import Clock
    from taskloom.engine.definitions import Registry
    from taskloom.engine.payloads import Payloads

__all__ = ["Execution", "Host"]

log = logging.getLogger("taskloom.engine.execution")

KEEP_SHORT_TIMERS_MS = 1000

TERMINAL_EVENTS = {"run_completed", "run_failed", "run_cancelled"}

# Events that start a step, or change how it waits.
_STEP_EVENTS = {
    "activity_scheduled",
    "activity_retrying",
    "activity_paused",
    "activity_redriven",
    "timer_started",
    "human_task_created",
    "child_started",
}

# Events that settle a step, and the kind of step they settle.
_OUTCOMES = {
    "activity_completed": "activity",
    "activity_failed": "activity",
    "child_completed": "child",
    "child_failed": "child",
    "timer_fired": "timer",
    "signal_taken": "signal",
    "now_recorded": "now",
    "value_recorded": "record",
    "human_decided": "human",
    "human_expired": "human",
}


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
    claim_ttl_ms: int

    def take_slot(self) -> bool: ...
    def give_slot(self) -> None: ...
    def run_local(
        self, run_id: str, seq: str, name: str, args: list[Any], kwargs: dict[str, Any]
    ) -> None: ...
    def finished(self, execution: Execution, status: str | None = None) -> None: ...
    def evict_soon(self, execution: Execution) -> None: ...
    def rolled_back(self, execution: Execution) -> None: ...


@dataclass
class _Step:
    kind: str
    name: str
    scheduled: bool = False
    dispatch: str = ""
    dispatched_here: bool = False
    done: bool = False
    ok: bool = True
    value: Any = None
    error: dict[str, Any] | None = None
    due_ms: int = 0
    child_id: str = ""
    paused: bool = False  # out of attempts, waiting in the dead-letter queue
    retried: bool = False  # an attempt failed: the next waits as a retry or dead letter
    compensate: str = ""  # the activity that undoes this one, with its arguments:
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)


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
        self.known_id = ""  # the newest log entry this owner saw written (see _saw)
        self.unverified: list[str] = []  # entries of outcomes recorded here (see apply_all)
        self.cancel_requested = False
        self.terminal = False
        self.deadline_ms = int(meta.get("deadline_ms") or 0)
        self.created_ms = int(meta.get("created_ms") or 0)
        self.trace = tracing.RunTrace.from_meta(meta) or tracing.RunTrace.of_run(run_id)
        """The run's trace context, from its record (see :mod:`taskloom.tracing`)."""
        self.timed_out = False
        self.compensating = False
        self.completed: list[str] = []  # activity steps in the order they succeeded
        self._finishing: asyncio.Task[None] | None = None
        self.replaying = True
        self.task: asyncio.Task[Any] | None = None
        self._batch = Batch()
        self._flush_queued = False
        self._flushing: asyncio.Task[None] | None = None
        self._root = _Scope("")
        for event in events:
            self.apply(event)
        if events:
            self.last_id = events[-1].id
            self._saw(self.last_id)

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
            self._saw(self.last_id)
        elif events:  # recorded after the last check: maybe past a hole Redis left
            self.unverified.extend(e.id for e in events)
        self._check_evictable()

    def _saw(self, entry_id: str) -> None:
        """Note that the log holds ``entry_id`` and everything before it (read in order,
        or written by a fenced append that checked :meth:`known`)."""
        if _entry_key(entry_id) > _entry_key(self.known_id):
            self.known_id = entry_id

    def known(self) -> list[str]:
        """The log entries to check before building on this owner's view: the newest it
        saw with all before it, and the outcomes recorded here since. Redis loses writes
        only as the tail of its AOF, so while it holds these it holds all the owner
        built on; every write, read and lease renewal of the owner checks them."""
        return [self.known_id, *self.unverified] if self.known_id else list(self.unverified)

    def verified(self, checked: list[str]) -> None:
        """The entries of :meth:`known` were there: they need no checking again."""
        for entry_id in checked:
            self._saw(entry_id)
        done = set(checked)
        self.unverified = [e for e in self.unverified if e not in done]

    def apply(self, event: Event) -> None:
        """Fold one log event into the history."""
        d, seq, t = event.data, event.seq, event.type
        if t in _OUTCOMES and seq is not None:
            self._apply_outcome(t, seq, d)
        elif seq is not None and t in _STEP_EVENTS:
            self._apply_step(t, seq, d)
        elif t == "signal_received":
            if event.id not in self.taken_signals:
                self.signals.setdefault(d["name"], deque()).append((event.id, d.get("payload")))
                self._feed_signal_waiters(d["name"])
        elif t == "cancel_requested" and not self.cancel_requested:
            self.cancel_requested = True
            if self.task is not None and not self.task.done() and not self.compensating:
                self.task.cancel()
        elif t in TERMINAL_EVENTS:
            self.terminal = True

    def _apply_step(self, t: str, seq: str, d: dict[str, Any]) -> None:
        """An event that starts a step or changes how it waits."""
        if t == "activity_scheduled":
            step = self.steps.setdefault(seq, _Step("activity", d["name"]))
            step.scheduled, step.dispatch = True, d.get("dispatch", "queue")
            if d.get("compensate"):
                step.compensate, step.args = d["compensate"], d.get("args", [])
                step.kwargs = d.get("kwargs", {})
        elif t in ("activity_retrying", "activity_paused", "activity_redriven"):
            step = self.steps.setdefault(seq, _Step("activity", d.get("name", "")))
            step.dispatch = "queue"  # its next attempt comes off the queue, not from here
            step.paused, step.retried = t == "activity_paused", True
        elif t == "timer_started":
            step = self.steps.setdefault(seq, _Step("timer", "sleep"))
            step.scheduled, step.due_ms = True, int(d["due_ms"])
        elif t == "human_task_created":
            step = self.steps.setdefault(seq, _Step("human", "escalate"))
            step.scheduled, step.args = True, [d["task"]]
        elif t == "child_started":
            step = self.steps.setdefault(seq, _Step("child", d["workflow"]))
            step.scheduled, step.child_id = True, d["child_id"]

    def _apply_outcome(self, t: str, seq: str, d: dict[str, Any]) -> None:
        name = d.get("name", "now" if t == "now_recorded" else "")
        step = self.steps.setdefault(seq, _Step(_OUTCOMES[t], name))
        if t == "activity_completed" and not step.done:
            self.completed.append(seq)
        if t == "signal_taken":
            self.taken_signals.add(d["signal_id"])
            self._drop_signal(d["name"], d["signal_id"])
        error = d.get("error")
        if t == "activity_failed" and isinstance(error, dict):
            error = error | {"attempts": d.get("attempts", 1), "history": d.get("history", [])}
        self._resolve(
            seq,
            step,
            ok=t not in ("activity_failed", "child_failed", "human_expired"),
            value=d.get("result", d.get("payload", d.get("value"))),
            error=error,
        )

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

    def _drop_signal(self, name: str, signal_id: str) -> None:
        pending = self.signals.get(name)
        if pending:
            self.signals[name] = deque(s for s in pending if s[0] != signal_id)

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
            args, kwargs, json = await self._task_args(name, args, kwargs)
            self._dispatch(seq, step, args, kwargs, new=True, json=json)
        elif not step.done and not step.dispatched_here and not step.retried:
            # Replayed after a takeover, scheduled and without an outcome: schedule it
            # again. A local step's runner may have died with the old owner; a queued
            # step's delivery may be gone, or stuck with a worker that will not start it.
            # A second delivery of a step that runs or ran elsewhere finds it claimed or
            # recorded, and is dropped. (Not after a failed attempt: the next one waits,
            # durably, as a retry or a dead letter; a new first attempt would skip the
            # backoff only to have its outcome dropped as stale.)
            step.dispatched_here = True
            args, kwargs, json = await self._task_args(name, args, kwargs)
            self._dispatch(seq, step, args, kwargs, new=False, json=json)
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

    async def _task_args(
        self, name: str, args: list[Any], kwargs: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any], tuple[str, str]]:
        """An activity's arguments as its task carries them, and their JSON: stored in
        the blob store when they are big."""
        args_json = serde.dumps(args, what=f"arguments of activity {name!r}")
        kwargs_json = serde.dumps(kwargs, what=f"keyword arguments of activity {name!r}")
        if len(args_json) + len(kwargs_json) > self.host.payloads.threshold:
            pack, what = self.host.payloads.pack, f"the arguments of activity {name!r}"
            args = await pack(self.run_id, args, what=what)
            kwargs = await pack(self.run_id, kwargs, what=what)
            args_json, kwargs_json = serde.dumps(args), serde.dumps(kwargs)
        return args, kwargs, (args_json, kwargs_json)

    def _dispatch(
        self,
        seq: str,
        step: _Step,
        args: list[Any],
        kwargs: dict[str, Any],
        *,
        new: bool,
        json: tuple[str, str] | None = None,
    ) -> None:
        if json is None:
            json = (serde.dumps(args), serde.dumps(kwargs))
        args_json, kwargs_json = json
        # A re-dispatch after a takeover goes through the queue: its old runner's claim may
        # still be live, and a queued task is looked at again until that claim lapses.
        local = new and self.host.take_slot()
        step.dispatch, step.dispatched_here = ("local" if local else "queue"), True
        event = {
            "type": "activity_scheduled",
            "seq": seq,
            "name": step.name,
            "dispatch": step.dispatch,
            "ts": now_ms(),
        }
        if new:
            event["args"], event["kwargs"] = args, kwargs
            adef = self.host.registry.find_activity(step.name)
            if adef is not None and adef.compensate is not None:
                event["compensate"] = step.compensate = adef.compensate.name
                step.args, step.kwargs = args, kwargs
        b = self._batch
        b.ops.append(Op(event=event, mode="sched", seq=seq, claim=local))
        if local:
            b.local[seq] = (step.name, args, kwargs)
        else:
            b.tasks.append(
                task_fields(
                    run_id=self.run_id,
                    seq=seq,
                    name=step.name,
                    args_json=args_json,
                    kwargs_json=kwargs_json,
                )
            )
        self._queue_flush()

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
            self._batch.ops.append(
                Op(
                    event={
                        "type": "timer_started",
                        "seq": seq,
                        "due_ms": step.due_ms,
                        "ts": now_ms(),
                    }
                )
            )
            self._queue_flush()
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
        self._batch.ops.append(
            Op(event={"type": "timer_fired", "seq": seq, "ts": now_ms()}, mode="step", seq=seq)
        )
        self._queue_flush()
        self._resolve(seq, step, ok=True, value=None, error=None)

    async def escalate(self, seq: str, spec: dict[str, Any]) -> Decision:
        """Open a human task as step ``seq`` and wait for its decision."""
        step = self._step(seq, "human", "escalate")
        if step is None:
            task = new_task(self.run_id, seq, spec, created_ms=self.host.clock.now_ms())
            step = self.steps[seq] = _Step("human", "escalate", scheduled=True, args=[task])
            self._batch.ops.append(
                Op(
                    event={
                        "type": "human_task_created",
                        "seq": seq,
                        "task": task.to_dict(),
                        "ts": now_ms(),
                    }
                )
            )
            self._batch.after.append(("human", task))
            self._queue_flush()
        elif not step.done:  # after a takeover: make sure the inbox has it
            task = step.args[0]
            task = task if isinstance(task, HumanTask) else HumanTask(**task)
            self._batch.after.append(("human", task))
            self._queue_flush()
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
            self._batch.ops.append(
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
            self._queue_flush()
            self._resolve(seq, self.steps[seq], ok=True, value=payload, error=None)

    async def child(self, seq: str, workflow: str, args: list[Any]) -> Any:
        """Run ``workflow`` as a child run, step ``seq``."""
        step = self._step(seq, "child", workflow)
        if step is None:
            child_id = f"{self.run_id}.{seq}"
            step = self.steps[seq] = _Step("child", workflow, scheduled=True, child_id=child_id)
            input_json = await self._child_input(child_id, workflow, args)
            self._batch.ops.append(
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
            self._batch.after.append(("child", seq, child_id, workflow, input_json))
            self._queue_flush()
        elif not step.done:  # after a takeover: make sure the child exists, or collect it
            input_json = await self._child_input(step.child_id, workflow, args)
            self._batch.after.append(("child", seq, step.child_id, workflow, input_json))
            self._queue_flush()
        if not step.done:
            step = await self._wait(seq, "child")
        if step.ok:
            return step.value
        err = step.error or {}
        raise ChildWorkflowError(
            f"child run {step.child_id} ({workflow}) failed: "
            f"{err.get('type', 'Error')}: {err.get('message', '')}"
        )

    async def _child_input(self, child_id: str, workflow: str, args: list[Any]) -> str:
        """A child run's input as its run keeps it: a big one by reference (the same
        reference every time, so a takeover creates the same run)."""
        value = {"args": args, "kwargs": {}}
        text = serde.dumps(value, what=f"input of child workflow {workflow!r}")
        if len(text) > self.host.payloads.threshold:
            what = f"the input of child workflow {workflow!r}"
            text = serde.dumps(await self.host.payloads.pack(child_id, value, what=what))
        return text

    def now(self, seq: str) -> int:
        """The time in ms for step ``seq``, recorded on first use."""
        step = self._step(seq, "now", "now")
        if step is None:
            value = now_ms()
            step = self._record_step(seq, "now", "now", value, {"type": "now_recorded"})
        return int(step.value)

    def record(self, seq: str, name: str, value: Any) -> Any:
        """Record ``value`` as step ``seq`` on first execution; a replay returns the
        recorded value instead (whatever ``value`` is then)."""
        step = self._step(seq, "record", name)
        if step is None:  # a replay returns what was checked and recorded then
            serde.dumps(value, what=f"recorded value {name!r}")
            event = {"type": "value_recorded", "name": name}
            step = self._record_step(seq, "record", name, value, event)
        return step.value

    def _record_step(
        self, seq: str, kind: str, name: str, value: Any, event: dict[str, Any]
    ) -> _Step:
        step = self.steps[seq] = _Step(kind, name, done=True, value=value)
        self._batch.ops.append(Op(event=event | {"seq": seq, "value": value}, mode="step", seq=seq))
        self._queue_flush()
        return step

    # -- running the workflow function --------------------------------------------------
    def start(self) -> None:
        """Start (or replay) the workflow function in its own task."""
        if self.cancel_requested:
            self.task = asyncio.get_running_loop().create_task(self._cancelled_main())
        else:
            self.task = asyncio.get_running_loop().create_task(self._main())
        self.task.add_done_callback(self._on_done)
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
        wf = self.host.registry.workflow(self.workflow_name)
        return await wf.fn(
            Context(self), *self.input.get("args", []), **self.input.get("kwargs", {})
        )

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        for cancel in self.timer_handles.values():
            cancel()
        self.timer_handles.clear()
        event: dict[str, Any]
        if task.cancelled() and self.timed_out:
            err = error_dict(
                RunTimeoutError(f"run {self.run_id} ran past its timeout; it was stopped")
            )
            status, event, result = "failed", {"type": "run_failed", "error": err}, err
        elif task.cancelled():
            if not self.cancel_requested:
                return  # evicted or lease lost: another incarnation goes on
            status, event, result = "cancelled", {"type": "run_cancelled"}, None
        elif (exc := task.exception()) is not None:
            err = error_dict(exc)
            status, event, result = "failed", {"type": "run_failed", "error": err}, err
        else:
            result = task.result()
            try:
                serde.dumps(result, what=f"result of workflow {self.workflow_name!r}")
                status, event = "completed", {"type": "run_completed", "result": result}
            except TaskloomError as ser:
                err = error_dict(ser)
                status, event, result = "failed", {"type": "run_failed", "error": err}, err
        event["ts"] = now_ms()
        loop = asyncio.get_running_loop()
        if status != "completed" and any(self.steps[s].compensate for s in self.completed):
            self.compensating = True
            self.task = loop.create_task(self._compensate(status, event, result))
            self.task.add_done_callback(self._on_compensated)
            return
        self._finishing = loop.create_task(self._finish(status, event, result))

    async def _compensate(
        self, status: str, event: dict[str, Any], result: Any
    ) -> tuple[str, dict[str, Any], Any]:
        """Undo what succeeded, newest first, each compensation a recorded step of its
        own: after a crash, replay reaches here again and skips the ones already done."""
        _scope.set(self._root)
        report = []
        for seq in reversed(self.completed):
            step = self.steps[seq]
            if not step.compensate:
                continue
            entry: dict[str, Any] = {"seq": seq, "activity": step.name, "by": step.compensate}
            try:
                args = [step.value, *step.args]
                await self.activity(f"undo.{seq}", step.compensate, args, step.kwargs)
                entry["ok"] = True
            except ActivityError as exc:  # it stays on record; the others still run
                entry |= {"ok": False, "error": str(exc)}
            report.append(entry)
        event["compensations"] = report
        return status, event, result

    def _on_compensated(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is not None:
            return  # evicted or lease lost: another incarnation compensates
        self._finishing = asyncio.get_running_loop().create_task(self._finish(*task.result()))

    async def _finish(self, status: str, event: dict[str, Any], result: Any) -> None:
        try:
            await self._drain()
            await self.host.store.append(
                self.run_id,
                self.host.worker_id,
                self.epoch,
                [Op(event=event)],
                claim_ttl_ms=self.host.claim_ttl_ms,
                status=status,
                result=result,
                at_ms=self.host.clock.now_ms(),
                known=self.known(),
            )
            self.terminal = True
            self.host.finished(self, status)
            tracing.end_run(
                self.trace,
                run_id=self.run_id,
                workflow=self.workflow_name,
                created_ms=self.created_ms,
                status=status,
                error=result if status == "failed" and isinstance(result, dict) else None,
            )
            await self._close_questions(status)
            if status == "cancelled" or self.timed_out:
                await self._cancel_children()
            if self.parent is not None:
                await self._deliver_to_parent(status, result)
        except StoreRolledBackError as exc:
            log.warning("run %s: not finishing on a rolled-back log: %s", self.run_id, exc)
            self.host.rolled_back(self)
        except LeaseLostError as exc:
            log.info("run %s: not finishing here: %s", self.run_id, exc)
        except Exception:
            log.exception("run %s: could not record its end; another worker will", self.run_id)
        finally:
            self.host.finished(self)

    async def _close_questions(self, status: str) -> None:
        """An ended run leaves no question open in the inbox (best effort: a decision on
        one left behind by a crash here is refused, and that closes it)."""
        for seq, step in list(self.steps.items()):
            if step.kind == "human" and not step.done:
                with contextlib.suppress(TaskloomError, RedisError):
                    await self.host.human_tasks.withdraw(
                        f"{self.run_id}/{seq}", reason=f"its run is {status}"
                    )

    async def _deliver_to_parent(self, status: str, result: Any) -> None:
        assert self.parent is not None
        pid, pseq = self.parent["run_id"], self.parent["seq"]
        await deliver(
            self.host.store,
            pid,
            pseq,
            child_outcome(pseq, self.workflow_name, status, result),
            self.host.worker_id,
        )

    async def _cancel_children(self) -> None:
        for step in self.steps.values():
            if step.kind == "child" and not step.done and step.child_id:
                routing = await self.host.store.external(
                    step.child_id, {"type": "cancel_requested", "ts": now_ms()}
                )
                if routing.status == "ok":
                    await self.host.store.wake(step.child_id, routing)

    # -- flushing buffered writes -------------------------------------------------------
    def _queue_flush(self) -> None:
        if not self._flush_queued:
            self._flush_queued = True
            task = asyncio.get_running_loop().create_task(self._flush_tick(self._flushing))
            task.add_done_callback(lambda _: self._check_evictable())
            self._flushing = task

    async def _flush_tick(self, previous: asyncio.Task[None] | None) -> None:
        """Write the batch of this tick: the task's first step runs once the tick's
        callbacks have run, so it takes everything they buffered; writes stay in order
        (each waits for the one before)."""
        self._flush_queued = False
        batch, self._batch = self._batch, Batch()
        if previous is not None:
            with contextlib.suppress(BaseException):
                await previous
        for part in split_after_last_local(batch):
            await self._flush(part)

    async def _drain(self) -> None:
        while self._flushing is not None and not self._flushing.done():
            with contextlib.suppress(Exception):
                await self._flushing

    async def _flush(self, batch: Batch) -> None:
        store, host = self.host.store, self.host
        known = self.known()
        try:
            results = (
                await store.append(
                    self.run_id,
                    host.worker_id,
                    self.epoch,
                    batch.ops,
                    claim_ttl_ms=host.claim_ttl_ms,
                    tasks=[(host.queue, task) for task in batch.tasks],
                    known=known,
                )
                if batch.ops
                else []
            )
        except (LeaseLostError, RedisError) as exc:
            for _ in batch.local:
                host.give_slot()
            log.warning("run %s: dropping it from this worker: %s", self.run_id, exc)
            if isinstance(exc, StoreRolledBackError):
                self.host.rolled_back(self)  # it replays what Redis holds at once
                return
            self.host.finished(self)  # its lease lapses; whoever takes it next replays it
            if self.task is not None:
                self.task.cancel()
            return
        if batch.ops:
            self.verified(known)
        for res in results:
            if "-" in res:
                self._saw(res)
        for op, res in zip(batch.ops, results, strict=True):
            if op.seq in batch.local and op.mode == "sched":
                if res in ("busy", "done"):
                    host.give_slot()
                else:
                    name, args, kwargs = batch.local[op.seq]
                    host.run_local(self.run_id, op.seq, name, args, kwargs)
        for item in batch.after:
            await self._after(item)

    async def _after(self, item: tuple[Any, ...]) -> None:
        if item[0] == "human":
            await self.host.human_tasks.open(item[1])  # with the operator's default SLA
            return
        _, seq, child_id, workflow, input_json = item
        store = self.host.store
        created, status = await store.create_run(
            child_id,
            workflow=workflow,
            input_json=input_json,
            parent={"run_id": self.run_id, "seq": seq},
            trace=tracing.new_run(self.trace),
        )
        if created or status == "pending":
            await store.enqueue_run(child_id, "new")
        elif status in ("completed", "failed", "cancelled"):  # it ended while we were away
            info = await store.run_info(child_id)
            await deliver(
                store,
                self.run_id,
                seq,
                child_outcome(seq, workflow, status, info.result),
                self.host.worker_id,
            )

    # -- eviction -----------------------------------------------------------------------
    def _check_evictable(self) -> None:
        if self.evictable():
            self.host.evict_soon(self)

    def evictable(self) -> bool:
        """Waiting only on timers, signals or paused activities: the run can leave memory
        until they fire."""
        if self.terminal or self.task is None or self.task.done() or not self.waiters:
            return False
        if self._flushing is not None and not self._flushing.done():
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


def _entry_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id (``ms-seq``) as a sortable pair; ``""`` sorts first."""
    if not entry_id:
        return (-1, -1)
    ms, _, seq = entry_id.partition("-")
    return (int(ms), int(seq or 0))


async def deliver(
    store: Store, run_id: str, seq: str, event: dict[str, Any], worker_id: str
) -> None:
    """Record an outcome on ``run_id`` step ``seq`` exactly once and wake its owner."""
    await store.deliver(run_id, seq, event, worker_id)


def child_outcome(seq: str, workflow: str, status: str, result: Any) -> dict[str, Any]:
    """The event that records a finished child run on its parent's step ``seq``."""
    if status == "completed":
        return {
            "type": "child_completed",
            "seq": seq,
            "name": workflow,
            "result": result,
            "ts": now_ms(),
        }
    error = (
        result
        if isinstance(result, dict) and result
        else {"type": "RunCancelledError", "message": f"child run {status}"}
    )
    return {"type": "child_failed", "seq": seq, "name": workflow, "error": error, "ts": now_ms()}
