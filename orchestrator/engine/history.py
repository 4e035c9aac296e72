"""A run's history: the log's events folded into its steps, signals and state.

An :class:`~taskloom.engine.execution.Execution` owns a :class:`History`; replay and
every event read or recorded later go through :meth:`History.apply`, which is
idempotent and wakes the workflow code that waits on a step it settles.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from taskloom.engine.events import EventType

if TYPE_CHECKING:
    from taskloom.engine.execution import Execution
    from taskloom.engine.store import Event

__all__ = ["TERMINAL_EVENTS", "History"]

TERMINAL_EVENTS: set[EventType] = {"run_completed", "run_failed", "run_cancelled"}

# Events that start a step, or change how it waits.
_STEP_EVENTS: set[EventType] = {
    "activity_scheduled",
    "activity_retrying",
    "activity_paused",
    "activity_redriven",
    "timer_started",
    "human_task_created",
    "child_started",
}

# Events that settle a step, and the kind of step they settle.
_OUTCOMES: dict[EventType, str] = {
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


class History:
    """Folds one execution's log events into its steps (see :meth:`apply`)."""

    def __init__(self, execution: Execution) -> None:
        self._ex = execution

    def apply(self, event: Event) -> None:
        """Fold one log event into the history."""
        ex = self._ex
        d, seq, t = event.data, event.seq, event.type
        if t in _OUTCOMES and seq is not None:
            self._apply_outcome(t, seq, d)
        elif seq is not None and t in _STEP_EVENTS:
            self._apply_step(t, seq, d)
        elif t == "signal_received":
            if event.id not in ex.taken_signals:
                ex.signals.setdefault(d["name"], deque()).append((event.id, d.get("payload")))
                ex._feed_signal_waiters(d["name"])
        elif t == "cancel_requested" and not ex.cancel_requested:
            ex.cancel_requested = True
            if ex.task is not None and not ex.task.done() and not ex.compensating:
                ex.task.cancel()
        elif t in TERMINAL_EVENTS:
            ex.terminal = True

    def _apply_step(self, t: EventType, seq: str, d: dict[str, Any]) -> None:
        """An event that starts a step or changes how it waits."""
        ex = self._ex
        if t == "activity_scheduled":
            step = ex.steps.setdefault(seq, _Step("activity", d["name"]))
            step.scheduled, step.dispatch = True, d.get("dispatch", "queue")
            if d.get("compensate"):
                step.compensate, step.args = d["compensate"], d.get("args", [])
                step.kwargs = d.get("kwargs", {})
        elif t in ("activity_retrying", "activity_paused", "activity_redriven"):
            step = ex.steps.setdefault(seq, _Step("activity", d.get("name", "")))
            step.dispatch = "queue"  # its next attempt comes off the queue, not from here
            step.paused, step.retried = t == "activity_paused", True
        elif t == "timer_started":
            step = ex.steps.setdefault(seq, _Step("timer", "sleep"))
            step.scheduled, step.due_ms = True, int(d["due_ms"])
        elif t == "human_task_created":
            step = ex.steps.setdefault(seq, _Step("human", "escalate"))
            step.scheduled, step.args = True, [d["task"]]
        elif t == "child_started":
            step = ex.steps.setdefault(seq, _Step("child", d["workflow"]))
            step.scheduled, step.child_id = True, d["child_id"]

    def _apply_outcome(self, t: EventType, seq: str, d: dict[str, Any]) -> None:
        ex = self._ex
        name = d.get("name", "now" if t == "now_recorded" else "")
        step = ex.steps.setdefault(seq, _Step(_OUTCOMES[t], name))
        if t == "activity_completed" and not step.done:
            ex.completed.append(seq)
        if t == "signal_taken":
            ex.taken_signals.add(d["signal_id"])
            self._drop_signal(d["name"], d["signal_id"])
        error = d.get("error")
        if t == "activity_failed" and isinstance(error, dict):
            error = error | {"attempts": d.get("attempts", 1), "history": d.get("history", [])}
        ex._resolve(
            seq,
            step,
            ok=t not in ("activity_failed", "child_failed", "human_expired"),
            value=d.get("result", d.get("payload", d.get("value"))),
            error=error,
        )

    def _drop_signal(self, name: str, signal_id: str) -> None:
        ex = self._ex
        pending = ex.signals.get(name)
        if pending:
            ex.signals[name] = deque(s for s in pending if s[0] != signal_id)
