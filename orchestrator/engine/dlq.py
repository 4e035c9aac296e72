"""The dead-letter queue: activities that ran out of attempts or failed for good.

Each entry keeps the activity's input and every attempt's error and timing. An entry
whose run is *paused* on it (``RetryPolicy(on_exhausted="pause")``) can be redriven
(fresh attempts; the run goes on when one succeeds) or purged (the workflow then gets
the :class:`~taskloom.ActivityError`). An entry whose failure was already raised
into its workflow (``on_exhausted="raise"``) is kept for the record and can be purged.

Entries live per queue, in the queue's hash slot, so a redrive puts the task back on
the queue in the same script that takes the entry out: it cannot be lost in between.

    letters = DeadLetters(store)
    for entry in await letters.list():
        print(entry.id, entry.activity, entry.error["message"])
    await letters.redrive("3f2a.../0.1.0")
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from taskloom.engine import serde
from taskloom.engine.events import ActivityFailed
from taskloom.engine.execution import deliver
from taskloom.engine.store import Store, now_ms
from taskloom.engine.tasks import field_list, task_fields
from taskloom.errors import DeadLetterNotFoundError, UserError

__all__ = ["DeadLetter", "DeadLetters"]

_TAKEN_TTL_S = 600
"""How long a taken entry answers the same call sent again (``dlq_take.lua``)."""


@dataclass(frozen=True, kw_only=True)
class DeadLetter:
    """One activity that failed for good."""

    id: str
    """``run_id/seq``: the step it belongs to."""
    run_id: str
    seq: str
    activity: str
    queue: str
    args: list[Any]
    kwargs: dict[str, Any]
    attempts: list[dict[str, Any]]
    """Every attempt: ``{"attempt", "error": {"type", "message"}, "started_ms",
    "ended_ms", "worker"}``."""
    error: dict[str, Any]
    """The last error, with its traceback."""
    status: Literal["paused", "failed"]
    """``paused``: its run waits on it; ``failed``: its workflow got the error."""
    ts_ms: int = field(default_factory=now_ms)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form."""
        return asdict(self)

    @classmethod
    def from_json(cls, text: str) -> DeadLetter:
        """Parse an entry as stored."""
        return cls(**serde.loads(text))


class DeadLetters:
    """List, inspect, redrive and purge dead-letter entries across all queues."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def put(self, entry: DeadLetter) -> None:
        """Add (or replace) ``entry``."""
        keys = self.store.keys
        await self.store.raw.sadd(keys.queues, entry.queue)
        await self.store.scripts.call(
            "dlq_put",
            [keys.dlq(entry.queue), keys.dlq_entry(entry.queue, entry.id)],
            [entry.id, serde.dumps(entry.to_dict()), entry.ts_ms],
        )

    async def _queues(self) -> list[str]:
        return sorted(await self.store.raw.smembers(self.store.keys.queues))

    async def count(self) -> int:
        """How many entries there are."""
        keys = self.store.keys
        return sum([await self.store.raw.zcard(keys.dlq(q)) for q in await self._queues()])

    async def list(
        self, *, run_id: str | None = None, queue: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        """Entries, oldest first; only ``run_id``'s or ``queue``'s if given."""
        keys, out = self.store.keys, []
        for q in [queue] if queue else await self._queues():
            ids = await self.store.raw.zrange(keys.dlq(q), 0, -1)
            if run_id is not None:
                ids = [i for i in ids if i.split("/", 1)[0] == run_id]
            texts = await self.store.raw.mget([keys.dlq_entry(q, i) for i in ids]) if ids else []
            out += [DeadLetter.from_json(t) for t in texts if t]
        out.sort(key=lambda e: e.ts_ms)
        return out[:limit]

    async def get(self, entry_id: str) -> DeadLetter:
        """The entry ``entry_id`` (``run_id/seq``)."""
        _check_id(entry_id)
        keys = self.store.keys
        for q in await self._queues():
            text = await self.store.raw.get(keys.dlq_entry(q, entry_id))
            if text:
                return DeadLetter.from_json(text)
        raise DeadLetterNotFoundError(
            f"no dead-letter entry {entry_id!r}; `taskloom dlq list` shows the entries"
        )

    async def redrive(self, entry_id: str) -> DeadLetter:
        """Give a paused activity fresh attempts; its run goes on when one succeeds."""
        entry = await self.get(entry_id)
        if entry.status != "paused":
            raise DeadLetterNotFoundError(
                f"dead-letter entry {entry_id} cannot be redriven: its workflow already got "
                f"the failure (the activity's RetryPolicy has on_exhausted='raise'); purge "
                f"it, or start a new run"
            )
        attempt = max((a.get("attempt", 0) for a in entry.attempts), default=0) + 1
        fields = task_fields(
            run_id=entry.run_id,
            seq=entry.seq,
            name=entry.activity,
            args_json=serde.dumps(entry.args),
            kwargs_json=serde.dumps(entry.kwargs),
            attempt=attempt,
            gen=attempt,
        )
        if not await self._take(entry, field_list(fields)):
            raise DeadLetterNotFoundError(f"dead-letter entry {entry_id} was just taken")
        routing = await self.store.external(
            entry.run_id,
            {"type": "activity_redriven", "seq": entry.seq, "attempt": attempt, "ts": now_ms()},
        )
        if routing.status == "ok":
            await self.store.wake(entry.run_id, routing)
        return entry

    async def purge(self, entry_id: str) -> DeadLetter:
        """Drop an entry; a run paused on it gets the failure (an ActivityError)."""
        entry = await self.get(entry_id)
        if entry.status == "paused":  # first the run, so a crash in between loses nothing
            event: ActivityFailed = {
                "type": "activity_failed",
                "seq": entry.seq,
                "name": entry.activity,
                "error": entry.error,
                "attempts": len(entry.attempts),
                "history": entry.attempts,
                "purged": True,
                "ts": now_ms(),
            }
            await deliver(self.store, entry.run_id, entry.seq, event, "dlq-purge")
        await self._take(entry, "")
        return entry

    async def remove(self, entry: DeadLetter) -> None:
        """Drop ``entry`` without telling its run (it was settled some other way)."""
        await self._take(entry, "")

    async def _take(self, entry: DeadLetter, fields: str) -> bool:
        keys = self.store.keys
        taken = await self.store.scripts.call(
            "dlq_take",
            [
                keys.dlq(entry.queue),
                keys.dlq_entry(entry.queue, entry.id),
                keys.queue(entry.queue),
                keys.dlq_taken(entry.queue, entry.id),
            ],
            # a re-sent call (its reply lost) gets the entry it took, not "just taken"
            [entry.id, fields, secrets.token_hex(8), _TAKEN_TTL_S],
        )
        return bool(taken)


def _check_id(entry_id: str) -> None:
    if "/" not in entry_id:
        raise UserError(
            f"{entry_id!r} is not a dead-letter entry id: they look like RUN_ID/SEQ "
            f"(`taskloom dlq list` shows them)"
        )
