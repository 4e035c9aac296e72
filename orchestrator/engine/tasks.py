"""The activity task: what travels on a queue stream, and what a worker runs.

A task's stream fields are ``run``, ``seq``, ``name``, ``args`` and ``kwargs`` (JSON),
and from the second attempt on ``attempt``, ``gen`` (the attempt a redrive started
from: the retry policy counts from it) and ``hist`` (the earlier attempts' errors and
timing, JSON) and ``beat`` (the last heartbeat details of the attempt before, JSON).
A task handed back to its queue keeps when it was first queued in ``queued`` (ms).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from taskloom.engine import serde

__all__ = ["Task", "field_list", "task_fields"]


def task_fields(
    *,
    run_id: str,
    seq: str,
    name: str,
    args_json: str,
    kwargs_json: str,
    attempt: int = 1,
    gen: int = 1,
    history: Sequence[dict[str, Any]] = (),
    details: Any = None,
) -> dict[str, str]:
    """The stream fields of a task."""
    fields = {"run": run_id, "seq": seq, "name": name, "args": args_json, "kwargs": kwargs_json}
    if attempt > 1:
        fields |= {"attempt": str(attempt), "gen": str(gen), "hist": serde.dumps(list(history))}
    if details is not None:
        fields["beat"] = serde.dumps(details)
    return fields


def field_list(fields: dict[str, str]) -> str:
    """Fields as the JSON list ``[k1, v1, k2, v2, ...]`` that the retry and redrive
    scripts turn back into an XADD."""
    return serde.dumps([x for kv in fields.items() for x in kv])


@dataclass(slots=True)
class Task:
    """One attempt of an activity, ready to run."""

    run_id: str
    seq: str
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    msg_id: str | None = None
    """The queue delivery it came from; ``None``: run locally by the run's owner."""
    attempt: int = 1
    gen: int = 1
    history: list[dict[str, Any]] = field(default_factory=list)
    details: Any = None
    """The previous attempt's last heartbeat details."""
    queued_ms: int | None = None
    """When it was queued (ms); ``None``: it never was (run by the run's owner)."""

    @classmethod
    def from_fields(cls, msg_id: str, f: dict[str, str]) -> Task:
        """A task from its stream fields."""
        kwargs = f.get("kwargs")
        task = cls(
            f["run"],
            f["seq"],
            f["name"],
            serde.loads(f["args"]),
            serde.loads(kwargs) if kwargs and kwargs != "{}" else {},
            msg_id,
            # A stream id starts with the time it was added.
            queued_ms=int(f.get("queued") or msg_id.partition("-")[0]),
        )
        if len(f) > 5:  # a first attempt's task has run, seq, name, args, kwargs only
            task.attempt = int(f.get("attempt") or 1)
            task.gen = int(f.get("gen") or 1)
            task.history = serde.loads(f["hist"]) if f.get("hist") else []
            task.details = serde.loads(f["beat"]) if f.get("beat") else None
        return task

    def fields(
        self, *, attempt: int, history: Sequence[dict[str, Any]], details: Any = None
    ) -> dict[str, str]:
        """The fields of this task's attempt ``attempt``."""
        return task_fields(
            run_id=self.run_id,
            seq=self.seq,
            name=self.name,
            args_json=serde.dumps(self.args),
            kwargs_json=serde.dumps(self.kwargs),
            attempt=attempt,
            gen=self.gen,
            history=history,
            details=details,
        )
