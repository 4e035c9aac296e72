"""The kinds of event a run's log holds, each with the fields it carries.

A run's log (a Redis stream, its source of truth) holds one JSON object per entry, with
``type`` naming its kind. This module is the catalogue: :data:`EventType` names every
kind, and one ``TypedDict`` per kind says what its fields are. Producers build their
events as these types and mypy checks every field; readers compare ``Event.type``
against :data:`EventType`, so a misspelt kind is a type error, not a branch that never
runs. :meth:`taskloom.engine.store.Event.parse` is the one place a stored entry becomes
an :class:`~taskloom.engine.store.Event`.

Why typed dicts and not a dataclass per kind: the events are stored, and replayed on
every takeover, as JSON objects; a typed dict costs nothing at run time on the replay
path (W3's per-step overhead is ~0.5 ms) and is exactly what is stored, while mypy
checks the same things a dataclass would give.

A kind this version does not know (written by a newer one) keeps its name; every
reader ignores kinds it does not handle.
"""

# No ``from __future__ import annotations``: the classes keep their annotations as
# objects, so ``__required_keys__`` tells ``NotRequired`` fields apart at run time.
from typing import Any, Final, Literal, NotRequired, TypedDict, get_args

__all__ = [
    "EVENT_TYPES",
    "KINDS",
    "ActivityCompleted",
    "ActivityFailed",
    "ActivityPaused",
    "ActivityRedriven",
    "ActivityRetrying",
    "ActivityScheduled",
    "CancelRequested",
    "ChildCompleted",
    "ChildFailed",
    "ChildStarted",
    "EventType",
    "External",
    "HumanDecided",
    "HumanExpired",
    "HumanTaskCreated",
    "LogEvent",
    "NowRecorded",
    "Outcome",
    "RunCancelled",
    "RunCompleted",
    "RunCreated",
    "RunEnded",
    "RunFailed",
    "SignalReceived",
    "SignalTaken",
    "TimerFired",
    "TimerStarted",
    "ValueRecorded",
]

EventType = Literal[
    "run_created",
    "run_completed",
    "run_failed",
    "run_cancelled",
    "cancel_requested",
    "activity_scheduled",
    "activity_completed",
    "activity_failed",
    "activity_retrying",
    "activity_paused",
    "activity_redriven",
    "timer_started",
    "timer_fired",
    "signal_received",
    "signal_taken",
    "human_task_created",
    "human_decided",
    "human_expired",
    "child_started",
    "child_completed",
    "child_failed",
    "now_recorded",
    "value_recorded",
]
"""Every kind of event a run's log holds."""

EVENT_TYPES: Final[frozenset[str]] = frozenset(get_args(EventType))

Error = dict[str, Any]
"""An error as recorded: ``type`` (the exception's class), ``message``, and what else
:func:`~taskloom.engine.failures.error_dict` keeps (``retryable``, ``retry_after``, ...)."""


# -- the run --------------------------------------------------------------------------
class RunCreated(TypedDict):
    """The run's first entry, written by the script that creates it."""

    type: Literal["run_created"]
    workflow: str
    ts: int


class RunCompleted(TypedDict):
    """The workflow returned ``result``; the run's last entry."""

    type: Literal["run_completed"]
    result: Any
    ts: NotRequired[int]
    compensations: NotRequired[list[dict[str, Any]]]


class RunFailed(TypedDict):
    """The workflow raised (or timed out); the run's last entry."""

    type: Literal["run_failed"]
    error: Error
    ts: NotRequired[int]
    compensations: NotRequired[list[dict[str, Any]]]


class RunCancelled(TypedDict):
    """The run stopped on a cancel request; the run's last entry."""

    type: Literal["run_cancelled"]
    ts: NotRequired[int]
    compensations: NotRequired[list[dict[str, Any]]]


RunEnded = RunCompleted | RunFailed | RunCancelled
"""The run's last entry; with ``compensations`` (what was undone, and how it went)
when the run failed or was cancelled after activities that have compensations."""


class CancelRequested(TypedDict):
    """Sent from outside (``handle.cancel()``, a parent's cancellation)."""

    type: Literal["cancel_requested"]
    ts: int


# -- activities -----------------------------------------------------------------------
class ActivityScheduled(TypedDict):
    """Step ``seq`` runs activity ``name``: ``dispatch`` says whether on the owner
    (``local``) or through the queue; a first scheduling carries the arguments, and the
    compensating activity when the activity has one."""

    type: Literal["activity_scheduled"]
    seq: str
    name: str
    dispatch: str
    ts: int
    args: NotRequired[list[Any]]
    kwargs: NotRequired[dict[str, Any]]
    compensate: NotRequired[str]


class _Attempt(TypedDict):
    """What an attempt's outcome records about the attempt."""

    seq: str
    name: str
    started_ms: NotRequired[int]
    ended_ms: NotRequired[int]
    worker: NotRequired[str]
    ts: NotRequired[int]


class ActivityCompleted(_Attempt):
    """Step ``seq``'s activity returned ``result`` (inline, or a blob reference)."""

    type: Literal["activity_completed"]
    result: Any


class ActivityFailed(_Attempt):
    """Step ``seq``'s activity failed for good: out of attempts (``attempts``, the
    ``history`` of each, the ``dead_letter`` entry), a failure no retry helps, or a
    purged dead letter (``purged``)."""

    type: Literal["activity_failed"]
    error: Error
    attempts: NotRequired[int]
    history: NotRequired[list[dict[str, Any]]]
    dead_letter: NotRequired[str]
    purged: NotRequired[bool]


class ActivityRetrying(_Attempt):
    """Attempt ``attempt`` failed; the next is due at ``due_ms``."""

    type: Literal["activity_retrying"]
    attempt: int
    error: Error
    due_ms: int


class ActivityPaused(_Attempt):
    """Out of attempts with ``on_exhausted='pause'``: the step waits on its dead-letter
    entry until an operator redrives or purges it."""

    type: Literal["activity_paused"]
    attempt: int
    error: Error
    dead_letter: str


class ActivityRedriven(TypedDict):
    """An operator redrove the paused step: attempt ``attempt`` is on the queue."""

    type: Literal["activity_redriven"]
    seq: str
    attempt: int
    ts: int


# -- timers and signals ---------------------------------------------------------------
class TimerStarted(TypedDict):
    """Step ``seq`` sleeps until ``due_ms`` (``ctx.sleep``)."""

    type: Literal["timer_started"]
    seq: str
    due_ms: int
    ts: int


class TimerFired(TypedDict):
    """Step ``seq``'s timer is due."""

    type: Literal["timer_fired"]
    seq: str
    ts: int


class SignalReceived(TypedDict):
    """Signal ``name`` sent from outside (``handle.signal``)."""

    type: Literal["signal_received"]
    name: str
    payload: Any
    ts: int


class SignalTaken(TypedDict):
    """Step ``seq`` (``ctx.wait_for_signal``) took the signal recorded as entry
    ``signal_id``."""

    type: Literal["signal_taken"]
    seq: str
    name: str
    signal_id: str
    payload: Any
    ts: int


# -- people ---------------------------------------------------------------------------
class HumanTaskCreated(TypedDict):
    """Step ``seq`` escalated: ``task`` is the inbox item (``HumanTask.to_dict()``)."""

    type: Literal["human_task_created"]
    seq: str
    task: dict[str, Any]
    ts: int


class HumanDecided(TypedDict):
    """Inbox item ``task_id`` was decided: ``result`` is the ``Decision``."""

    type: Literal["human_decided"]
    seq: str
    task_id: str
    result: dict[str, Any]
    ts: int


class HumanExpired(TypedDict):
    """Step ``seq``'s inbox item closed without a decision (its SLA's fallback, or a
    withdrawal)."""

    type: Literal["human_expired"]
    seq: str
    error: Error
    ts: int


# -- child runs -----------------------------------------------------------------------
class ChildStarted(TypedDict):
    """Step ``seq`` runs ``workflow`` as the child run ``child_id``."""

    type: Literal["child_started"]
    seq: str
    workflow: str
    child_id: str
    ts: int


class ChildCompleted(TypedDict):
    """Step ``seq``'s child run of ``name`` completed with ``result``."""

    type: Literal["child_completed"]
    seq: str
    name: str
    result: Any
    ts: int


class ChildFailed(TypedDict):
    """Step ``seq``'s child run of ``name`` failed or was cancelled."""

    type: Literal["child_failed"]
    seq: str
    name: str
    error: Error
    ts: int


# -- recorded values ------------------------------------------------------------------
class NowRecorded(TypedDict):
    """Step ``seq``'s ``ctx.now()``: the time, replayed as recorded."""

    type: Literal["now_recorded"]
    seq: str
    value: int


class ValueRecorded(TypedDict):
    """Step ``seq``'s ``ctx.record(name, value)`` (the pipeline records its decisions
    this way): replayed as recorded."""

    type: Literal["value_recorded"]
    seq: str
    name: str
    value: Any


Outcome = (
    ActivityCompleted | ActivityFailed | ChildCompleted | ChildFailed | HumanDecided | HumanExpired
)
"""An outcome others than the run's owner record on one of its steps, exactly once."""

External = SignalReceived | CancelRequested | ActivityRedriven
"""An event sent to a run from outside (``external.lua``)."""

LogEvent = (
    RunCreated
    | RunCompleted
    | RunFailed
    | RunCancelled
    | CancelRequested
    | ActivityScheduled
    | ActivityCompleted
    | ActivityFailed
    | ActivityRetrying
    | ActivityPaused
    | ActivityRedriven
    | TimerStarted
    | TimerFired
    | SignalReceived
    | SignalTaken
    | HumanTaskCreated
    | HumanDecided
    | HumanExpired
    | ChildStarted
    | ChildCompleted
    | ChildFailed
    | NowRecorded
    | ValueRecorded
)
"""Any event of a run's log, as written."""

KINDS: Final[dict[str, type]] = {
    kind.__annotations__["type"].__args__[0]: kind for kind in get_args(LogEvent)
}
"""Each kind's name -> its typed dict (for tools and tests that check stored events)."""
