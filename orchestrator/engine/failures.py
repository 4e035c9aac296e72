"""What happens when an activity attempt fails: a durable retry, or the dead-letter queue.

The worker that ran the attempt decides, with the activity's :class:`RetryPolicy`:

- another attempt: the failed attempt is recorded once on the run's log
  (``activity_retrying``, with its error and timing) and the next attempt's task waits
  in the queue's retry set until due; the workflow is not woken;
- no more attempts (or a non-retryable error): a dead-letter entry with the input and
  every attempt, then either the step's outcome (``activity_failed``, which the
  workflow gets as an :class:`~taskloom.ActivityError`) or, with
  ``on_exhausted="pause"``, an ``activity_paused`` event and a run that waits.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from taskloom.engine import serde
from taskloom.engine.bounds import HISTORY_TEXT_LIMIT, bound_text
from taskloom.engine.dlq import DeadLetter, DeadLetters
from taskloom.engine.events import ActivityFailed, ActivityPaused, ActivityRetrying
from taskloom.engine.partitions import partition_of
from taskloom.engine.retries import RetryPolicy
from taskloom.engine.store import Store
from taskloom.engine.tasks import Task, field_list

__all__ = ["Failure", "handle_failure"]


@dataclass(frozen=True)
class Failure:
    """How a failed attempt was handled."""

    outcome: ActivityFailed | None = None
    """The ``activity_failed`` event to record as the step's outcome, if it is final."""
    retry_due_ms: int | None = None
    """When the next attempt is due, if one was scheduled by this call."""
    paused: bool = False


async def handle_failure(
    store: Store,
    dead_letters: DeadLetters,
    task: Task,
    event: ActivityFailed,
    *,
    policy: RetryPolicy,
    queue: str,
    worker_id: str,
    now_ms: int,
    details: Any = None,
) -> Failure:
    """Retry, pause or fail the step after failed attempt ``task.attempt`` (``event``
    is its ``activity_failed`` event, with the error and timing; ``details`` its last
    heartbeat details, handed to the next attempt)."""
    error = event["error"]
    in_generation = task.attempt - task.gen + 1
    history = [
        *task.history,
        {
            "attempt": task.attempt,
            "error": {"type": error.get("type", ""), "message": _short(error)},
            "started_ms": event["started_ms"],
            "ended_ms": event["ended_ms"],
            "worker": worker_id,
        },
    ]
    # The delivery's partition: its ack, and the retry set the next attempt waits in.
    ack = partition_of(queue, task.msg_id) if task.msg_id is not None else None
    if policy.retries(error, in_generation):
        asked = error.get("retry_after")
        delay = (
            float(asked) if asked is not None else policy.delay(in_generation, rand=random.random())
        )
        due = now_ms + int(delay * 1000)
        retrying: ActivityRetrying = {
            "type": "activity_retrying",
            "seq": task.seq,
            "name": task.name,
            "attempt": task.attempt,
            "error": error,
            "started_ms": event["started_ms"],
            "ended_ms": event["ended_ms"],
            "worker": worker_id,
            "due_ms": due,
            "ts": now_ms,
        }
        member = field_list(task.fields(attempt=task.attempt + 1, history=history, details=details))
        routing = await store.fail_attempt(
            task.run_id,
            task.seq,
            attempt=task.attempt,
            event=serde.dumps(retrying),
            worker=worker_id,
            retry=(ack[0] if ack else queue, due, member),
            ack=ack,
        )
        return Failure(retry_due_ms=due if routing.status == "ok" else None)

    pause = policy.on_exhausted == "pause"
    entry = DeadLetter(
        id=f"{task.run_id}/{task.seq}",
        run_id=task.run_id,
        seq=task.seq,
        activity=task.name,
        queue=queue,
        args=task.args,
        kwargs=task.kwargs,
        attempts=history,
        error=error,
        status="paused" if pause else "failed",
        ts_ms=now_ms,
    )
    await dead_letters.put(entry)
    if not pause:
        outcome: ActivityFailed = {
            **event,
            "attempts": in_generation,
            "history": history,
            "dead_letter": entry.id,
        }
        return Failure(outcome=outcome)
    paused: ActivityPaused = {
        "type": "activity_paused",
        "seq": task.seq,
        "name": task.name,
        "attempt": task.attempt,
        "error": error,
        "dead_letter": entry.id,
        "ts": now_ms,
    }
    routing = await store.fail_attempt(
        task.run_id,
        task.seq,
        attempt=task.attempt,
        event=serde.dumps(paused),
        worker=worker_id,
        ack=ack,
    )
    if routing.status == "ok":  # the owner may let the run leave memory while it waits
        await store.wake(task.run_id, routing)
    elif routing.status in ("done", "late", "missing"):  # settled elsewhere: not a dead letter
        await dead_letters.remove(entry)
    return Failure(paused=True)


def _short(error: dict[str, Any]) -> str:
    """An attempt's message as its history keeps it: short, as the last error is kept
    beside the history at full (bounded) length; the history does not repeat it."""
    return bound_text(str(error.get("message", "")), HISTORY_TEXT_LIMIT, slack=0)
