"""The run log: reading a run's events and its owner's fenced appends.

A run's source of truth is its log, a stream per run. Only the run's owner appends to
it, through ``append.lua``, fenced by the epoch of its lease; the activity tasks an
append schedules go out in the same round trip, before the entries that record them.
A reader that names entries it saw before learns when Redis lost acknowledged writes
(:class:`StoreRolledBackError`) and replays instead of writing past the hole.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from redis.exceptions import ResponseError

from taskloom.engine import serde
from taskloom.engine.events import EventType, LogEvent
from taskloom.engine.keys import ENDED_TTL_MS, TERMINAL_STATUSES
from taskloom.engine.store._base import now_ms, raise_first
from taskloom.engine.store._runs import RunRecords
from taskloom.errors import LeaseLostError, StoreRolledBackError

__all__ = ["Event", "Op", "RunLog"]


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a run's log."""

    id: str
    """The stream entry id (``ms-seq``), ordered."""
    type: EventType
    """Its kind (:mod:`taskloom.engine.events` says what each carries)."""
    data: dict[str, Any]

    @property
    def seq(self) -> str | None:
        """The workflow step this event belongs to, if any."""
        value = self.data.get("seq")
        return None if value is None else str(value)

    @classmethod
    def parse(cls, entry_id: str, fields: dict[str, str]) -> Event:
        """Build an event from a raw stream entry."""
        data = serde.loads(fields["e"])
        # A kind this version does not know (a newer writer's) keeps its name: readers
        # ignore what they do not handle.
        return cls(id=entry_id, type=data.get("type", "?"), data=data)


@dataclass(frozen=True, slots=True)
class Op:
    """One event for :meth:`Store.append`, with how it is written."""

    event: LogEvent
    mode: Literal["log", "step", "sched"] = "log"
    seq: str = ""
    claim: bool = False
    text: str | None = None
    """The event as JSON, when its maker encoded it already (to check it could be
    stored): written as it is, not encoded again."""


class RunLog(RunRecords):
    """The store's run logs: read and follow them; the owner's fenced appends (which move
    the run in the status index, hence :class:`RunRecords` beneath)."""

    async def read_log(
        self, run_id: str, *, after: str = "", known: Sequence[str] = ()
    ) -> list[Event]:
        """Events of the run's log after entry id ``after`` (all of them by default).

        ``known``: entries the reader saw before (``ID=SEQ``: an outcome, looked up in the
        steps hash its script wrote with it); if the log no longer holds one, Redis
        lost writes and :class:`StoreRolledBackError` is raised.
        """
        start = f"({after}" if after else "-"
        log = self.keys.log(run_id)
        entries = [e for e in known if "=" not in e]
        outcomes = [e.split("=", 1) for e in known if "=" in e]
        pipe = self.raw.pipeline(transaction=False)
        for entry_id in entries:
            pipe.xrange(log, entry_id, entry_id)
        if outcomes:  # ID=SEQ: an outcome, written with the steps hash's SEQ
            pipe.hmget(self.keys.steps(run_id), [seq for _, seq in outcomes])
        pipe.xrange(log, start, "+")
        *found, rows = await pipe.execute()
        held = found.pop() if outcomes else []
        for entry_id, hit in zip(entries, found, strict=True):
            if not hit:
                raise _rolled_back(run_id, entry_id)
        for (entry_id, _), have in zip(outcomes, held, strict=True):
            if have != entry_id:
                raise _rolled_back(run_id, entry_id)
        return [Event.parse(entry_id, fields) for entry_id, fields in rows]

    async def follow_log(self, run_id: str, *, after: str, block_ms: int) -> list[Event]:
        """Block up to ``block_ms`` for events after ``after``; ``[]`` on time-out."""
        res = await self.raw.xread({self.keys.log(run_id): after or "0"}, block=block_ms)
        if not res:
            return []
        return [Event.parse(entry_id, fields) for entry_id, fields in res[0][1]]

    async def append(
        self,
        run_id: str,
        worker: str,
        epoch: str,
        ops: Sequence[Op],
        *,
        claim_ttl_ms: int,
        status: str = "",
        result: Any = None,
        result_text: str | None = None,
        tasks: Sequence[tuple[str, dict[str, str]]] = (),
        at_ms: int | None = None,
        known: Sequence[str] = (),
    ) -> list[str]:
        """Append ops to the run's log, fenced by ``epoch``; see ``append.lua``.

        ``tasks`` are ``(queue, fields)`` activity tasks sent in the same round trip,
        before the log entries: a crash in between re-schedules them on replay, never
        leaves a scheduled entry with no task behind it. ``at_ms``: the time of a status
        change (the worker's clock; retention counts from a run's end). ``result_text``:
        ``result`` as JSON, when the caller encoded it already. ``known``: log
        entries the owner saw; if Redis lost one, nothing is written and
        :class:`StoreRolledBackError` is raised (the owner replays instead).
        """
        meta, log, steps = self.keys.run_keys(run_id)
        keys = [meta, log, steps, self.keys.last_write(run_id), self.keys.ended(run_id)]
        args: list[Any] = [
            worker,
            epoch,
            now_ms() if at_ms is None else at_ms,
            claim_ttl_ms,
            status,
            (serde.dumps(result) if result_text is None else result_text) if status else "",
            " ".join(known),
            len(ops),
            secrets.token_hex(8),  # a re-sent call returns its first reply (append.lua)
            ENDED_TTL_MS,
        ]
        for op in ops:
            claim_index = 0
            if op.claim:
                keys.append(self.keys.claim(run_id, op.seq))
                claim_index = len(keys)
            text = serde.dumps(op.event) if op.text is None else op.text
            args += [op.seq, op.mode, claim_index, text]

        enqueues = self._enqueue_calls(tasks)

        def build(pipe: Any) -> None:
            for queue_keys, queue_args in enqueues:
                self.scripts.queue(pipe, "enqueue", queue_keys, queue_args)
            self.scripts.queue(pipe, "append", keys, args)
            if status:
                if status in TERMINAL_STATUSES:
                    pipe.zrem(self.keys.leases, run_id)
                self.queue_index(pipe, run_id, status, at_ms)
            self._sync(pipe)

        replies = await self.scripts.pipeline(build)
        res = replies[len(enqueues)]
        if isinstance(res, ResponseError) and str(res).startswith("ROLLEDBACK"):
            raise _rolled_back(run_id, str(res).split()[3])
        if isinstance(res, ResponseError) and str(res).startswith(("STALE", "TERMINAL")):
            raise LeaseLostError(f"run {run_id}: {res}")
        raise_first(replies)
        return [str(r) for r in res]

    def _enqueue_calls(
        self, tasks: Sequence[tuple[str, dict[str, str]]]
    ) -> list[tuple[list[str], list[str]]]:
        """``enqueue.lua`` calls for ``tasks``: one per queue and set of field names."""
        groups: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        for queue, fields in tasks:
            groups.setdefault((queue, tuple(fields)), []).extend(fields.values())
        return [
            ([self.keys.queue(queue)], [str(len(names)), *names, *values])
            for (queue, names), values in groups.items()
        ]


def _rolled_back(run_id: str, known: str) -> StoreRolledBackError:
    return StoreRolledBackError(
        f"run {run_id}: Redis no longer holds log entry {known}, which this worker saw "
        f"written: the server lost acknowledged writes (a crash under appendfsync "
        f"everysec, or a failover to a lagging replica). The run is replayed from what "
        f"Redis holds; set TASKLOOM_DURABILITY=fsync so recorded outcomes reach disk first"
    )
