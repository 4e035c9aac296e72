"""The Redis state store: every read and write of taskloom's durable state.

The store owns the key layout (:class:`~taskloom.engine.keys.Keys`) and the Lua scripts,
registered once per client and called by EVALSHA. Each multi-key change is one script
touching one hash slot; the few follow-ups that cross slots (status index, queues,
wake-ups) are idempotent, so a crash between the two leaves nothing wrong that the next
step does not repair.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from taskloom.engine import serde
from taskloom.engine.keys import STATUSES, TERMINAL_STATUSES, Keys
from taskloom.errors import (
    LeaseLostError,
    RunIdConflictError,
    RunNotFoundError,
    StoreRolledBackError,
)
from taskloom.luascripts import LuaScripts

if TYPE_CHECKING:
    from taskloom.tracing import RunTrace

__all__ = ["Event", "Op", "Routing", "RunInfo", "Store", "now_ms", "ride_out"]

T = TypeVar("T")


def now_ms() -> int:
    """Wall-clock milliseconds, as stored in leases and timers."""
    return int(time.time() * 1000)


async def ride_out(call: Callable[[], Awaitable[T]], *, what: str, log: logging.Logger) -> T:
    """``call()``'s result, retrying while Redis cannot be reached (0.05 s, doubling, at
    most 5 s apart), each miss logged as ``what (error); retrying in ...``."""
    delay = 0.05
    while True:
        try:
            return await call()
        except RedisError as exc:
            log.warning("%s (%s); retrying in %.2fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a run's log."""

    id: str
    """The stream entry id (``ms-seq``), ordered."""
    type: str
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
        return cls(id=entry_id, type=data.get("type", "?"), data=data)


@dataclass(frozen=True, slots=True)
class Op:
    """One event for :meth:`Store.append`, with how it is written."""

    event: dict[str, Any]
    mode: Literal["log", "step", "sched"] = "log"
    seq: str = ""
    claim: bool = False


@dataclass(frozen=True, slots=True)
class Routing:
    """Where to send the wake-up after an outcome was recorded on a run."""

    status: str  # ok | dup | late | missing | terminal
    entry_id: str = ""
    owner: str = ""
    lease_until: int = 0


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run's metadata, as listed by status."""

    run_id: str
    workflow: str
    status: str
    created_ms: int
    updated_ms: int
    owner: str
    parent: dict[str, Any] | None
    result: Any
    duplicates_dropped: int

    @classmethod
    def from_meta(cls, meta: dict[str, str]) -> RunInfo:
        """Build from the run's meta hash."""
        parent = meta.get("parent") or ""
        result = meta.get("result") or ""
        return cls(
            run_id=meta["run_id"],
            workflow=meta.get("workflow", ""),
            status=meta.get("status", ""),
            created_ms=int(meta.get("created_ms") or 0),
            updated_ms=int(meta.get("updated_ms") or 0),
            owner=meta.get("owner", ""),
            parent=serde.loads(parent) if parent else None,
            result=serde.loads(result) if result else None,
            duplicates_dropped=int(meta.get("dups") or 0),
        )


class Store:
    """Durable state on one Redis client (``decode_responses=True``)."""

    def __init__(self, client: Redis, *, prefix: str = "tl") -> None:
        self.client = client
        # redis-py's stubs type replies as unions of every shape; we rely on
        # decode_responses=True and read replies as the documented shapes.
        self.raw: Any = client
        self.keys = Keys(prefix)
        self.scripts = LuaScripts(self.raw, package="taskloom")
        self.waitaof = False
        """Whether each batch of writes that creates a run or records or schedules a step
        ends with ``WAITAOF 1 0``: it returns once they are on the Redis host's disk
        (``TASKLOOM_DURABILITY=fsync`` on Redis ≥ 7.2; see :mod:`taskloom.engine.durability`)."""

    def _sync(self, pipe: Any) -> None:
        """End ``pipe`` with WAITAOF when the durability level asks for it: one fsync
        wait shared by every write of the batch, in the same round trip."""
        if self.waitaof:
            pipe.execute_command("WAITAOF", 1, 0, 0)

    async def _call(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self.scripts.call(name, keys, args)

    # -- runs ---------------------------------------------------------------------------
    async def create_run(
        self,
        run_id: str,
        *,
        workflow: str,
        input_json: str,
        parent: dict[str, Any] | None = None,
        deadline_ms: int = 0,
        trace: RunTrace | None = None,
    ) -> tuple[bool, str]:
        """Create a run; returns ``(created, status)``. Same id + same input is a no-op.
        ``deadline_ms``: when the run times out (0: never); ``trace``: its trace context
        (see :mod:`taskloom.tracing`)."""
        meta, log, _ = self.keys.run_keys(run_id)
        ts = now_ms()
        event = serde.dumps({"type": "run_created", "workflow": workflow, "ts": ts})
        args = [
            run_id,
            workflow,
            input_json,
            serde.digest(input_json),
            ts,
            serde.dumps(parent) if parent else "",
            event,
            deadline_ms,
            trace.traceparent if trace is not None else "",
            trace.parent if trace is not None else "",
        ]

        def build(pipe: Any) -> None:
            self.scripts.queue(pipe, "create_run", [meta, log], args)
            self._sync(pipe)

        res = _raise_first(await self.scripts.pipeline(build))[0]
        if res[0] == "conflict":
            raise RunIdConflictError(
                f"run id {run_id!r} already exists with a different "
                f"{'workflow (' + str(res[1]) + ')' if res[1] != workflow else 'input'}; "
                f"a run id is an idempotency key: reuse it only for the same workflow and "
                f"input, or choose a new id"
            )
        if res[0] == "created":
            await self.set_index(run_id, "pending")
        return res[0] == "created", str(res[1])

    async def get_meta(self, run_id: str) -> dict[str, str]:
        """The run's meta hash; raises :class:`RunNotFoundError` if there is no such run."""
        meta: dict[str, str] = await self.raw.hgetall(self.keys.meta(run_id))
        if not meta:
            raise RunNotFoundError(
                f"no run {run_id!r} under key prefix {self.keys.prefix!r}; list runs with "
                f"`taskloom runs` and check TASKLOOM_REDIS_URL / TASKLOOM_KEY_PREFIX"
            )
        return meta

    async def run_info(self, run_id: str) -> RunInfo:
        """The run's metadata as a :class:`RunInfo`."""
        return RunInfo.from_meta(await self.get_meta(run_id))

    def queue_index(self, pipe: Any, run_id: str, status: str, at_ms: int | None = None) -> None:
        """Add to ``pipe``: put ``run_id`` in the index of ``status`` (out of every other)."""
        keys = [self.keys.index(status)] + [self.keys.index(s) for s in STATUSES if s != status]
        self.scripts.queue(pipe, "set_index", keys, [run_id, now_ms() if at_ms is None else at_ms])

    async def set_index(self, run_id: str, status: str) -> None:
        """Put ``run_id`` in the index of ``status`` (and out of every other)."""
        await self.scripts.pipeline(lambda pipe: self.queue_index(pipe, run_id, status))

    async def list_runs(self, status: str | None = None, *, limit: int = 100) -> list[RunInfo]:
        """Runs by status (newest change first), from the index sorted sets; never SCAN."""
        statuses = [status] if status else list(STATUSES)
        pipe = self.raw.pipeline(transaction=False)
        for s in statuses:
            pipe.zrevrange(self.keys.index(s), 0, limit - 1, withscores=True)
        ranked: list[tuple[float, str, str]] = []
        for s, rows in zip(statuses, await pipe.execute(), strict=True):
            ranked.extend((score, run_id, s) for run_id, score in rows)
        ranked.sort(reverse=True)
        ranked = ranked[:limit]
        pipe = self.raw.pipeline(transaction=False)
        for _, run_id, _ in ranked:
            pipe.hgetall(self.keys.meta(run_id))
        out: list[RunInfo] = []
        for (_, run_id, indexed), meta in zip(ranked, await pipe.execute(), strict=True):
            if not meta:
                continue
            if meta.get("status") != indexed:  # the index lags the run: repair it
                await self.set_index(run_id, meta["status"])
                if status and meta.get("status") != status:
                    continue
            out.append(RunInfo.from_meta(meta))
        return out

    async def read_log(
        self, run_id: str, *, after: str = "", known: Sequence[str] = ()
    ) -> list[Event]:
        """Events of the run's log after entry id ``after`` (all of them by default).

        ``known``: entries the reader saw before; if the log no longer holds one, Redis
        lost writes and :class:`StoreRolledBackError` is raised.
        """
        start = f"({after}" if after else "-"
        log = self.keys.log(run_id)
        pipe = self.raw.pipeline(transaction=False)
        for entry_id in known:
            pipe.xrange(log, entry_id, entry_id)
        pipe.xrange(log, start, "+")
        *found, rows = await pipe.execute()
        for entry_id, hit in zip(known, found, strict=True):
            if not hit:
                raise _rolled_back(run_id, entry_id)
        return [Event.parse(entry_id, fields) for entry_id, fields in rows]

    async def follow_log(self, run_id: str, *, after: str, block_ms: int) -> list[Event]:
        """Block up to ``block_ms`` for events after ``after``; ``[]`` on time-out."""
        res = await self.raw.xread({self.keys.log(run_id): after or "0"}, block=block_ms)
        if not res:
            return []
        return [Event.parse(entry_id, fields) for entry_id, fields in res[0][1]]

    # -- leases -------------------------------------------------------------------------
    async def acquire(self, run_id: str, worker: str, *, ttl_ms: int) -> tuple[str, str]:
        """Try to own a run: ``('acquired', epoch)``, ``('held', owner)``, ``('terminal'|
        'missing', ...)``."""
        ts = now_ms()
        res = await self._call("acquire", [self.keys.meta(run_id)], [worker, ts, ttl_ms])
        if res[0] == "acquired":

            def follow_up(pipe: Any) -> None:
                pipe.zadd(self.keys.leases, {run_id: ts + ttl_ms})
                if res[2] != "running":
                    self.queue_index(pipe, run_id, "running")

            _raise_first(await self.scripts.pipeline(follow_up))
        return str(res[0]), str(res[1]) if len(res) > 1 else ""

    async def renew(
        self,
        leases: Iterable[tuple[str, str]],
        worker: str,
        *,
        ttl_ms: int,
        known: Mapping[str, Sequence[str]] | None = None,
    ) -> list[bool]:
        """Renew ``(run_id, epoch)`` leases in one round trip; ``False`` where lost.

        ``known``: per run, log entries its owner saw; a run whose log lost one (Redis
        rolled back) is not renewed either: its owner must replay it.
        """
        leases = list(leases)
        if not leases:
            return []
        ts = now_ms()
        known = known or {}

        def build(pipe: Any) -> None:
            for run_id, epoch in leases:
                self.scripts.queue(
                    pipe,
                    "renew",
                    [self.keys.meta(run_id), self.keys.log(run_id)],
                    [worker, epoch, ts, ttl_ms, " ".join(known.get(run_id, ()))],
                )
            pipe.zadd(self.keys.leases, {run_id: ts + ttl_ms for run_id, _ in leases})

        res = _raise_first(await self.scripts.pipeline(build))
        return [int(r) == 1 for r in res[:-1]]

    async def release(
        self, run_id: str, worker: str, epoch: str, *, last_seen: str, status: str
    ) -> int:
        """Give up a run: 1 released, 0 not ours any more, -1 unseen events arrived."""
        meta, log, _ = self.keys.run_keys(run_id)
        res = int(
            await self._call("release", [meta, log], [worker, epoch, last_seen, status, now_ms()])
        )
        if res == 1:

            def follow_up(pipe: Any) -> None:
                pipe.zrem(self.keys.leases, run_id)
                self.queue_index(pipe, run_id, status)

            _raise_first(await self.scripts.pipeline(follow_up))
        return res

    async def expired_leases(self, *, limit: int = 100) -> list[str]:
        """Run ids whose lease has passed its expiry (their owner may be dead)."""
        rows: list[str] = await self.raw.zrangebyscore(
            self.keys.leases, "-inf", now_ms(), start=0, num=limit
        )
        return rows

    # -- the owner's writes -------------------------------------------------------------
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
        tasks: Sequence[tuple[str, dict[str, str]]] = (),
        at_ms: int | None = None,
        known: Sequence[str] = (),
    ) -> list[str]:
        """Append ops to the run's log, fenced by ``epoch``; see ``append.lua``.

        ``tasks`` are ``(queue, fields)`` activity tasks sent in the same round trip,
        before the log entries: a crash in between re-schedules them on replay, never
        leaves a scheduled entry with no task behind it. ``at_ms``: the time of a status
        change (the worker's clock; retention counts from a run's end). ``known``: log
        entries the owner saw; if Redis lost one, nothing is written and
        :class:`StoreRolledBackError` is raised (the owner replays instead).
        """
        meta, log, steps = self.keys.run_keys(run_id)
        keys = [meta, log, steps, self.keys.last_write(run_id)]
        args: list[Any] = [
            worker,
            epoch,
            now_ms() if at_ms is None else at_ms,
            claim_ttl_ms,
            status,
            serde.dumps(result) if status else "",
            " ".join(known),
            len(ops),
            secrets.token_hex(8),  # a re-sent call returns its first reply (append.lua)
        ]
        for op in ops:
            claim_index = 0
            if op.claim:
                keys.append(self.keys.claim(run_id, op.seq))
                claim_index = len(keys)
            args += [op.seq, op.mode, claim_index, serde.dumps(op.event)]

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
        _raise_first(replies)
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

    # -- activities ---------------------------------------------------------------------
    async def start_activities(
        self, tasks: Sequence[tuple[str, str]], worker: str, *, ttl_ms: int
    ) -> list[str]:
        """Claim ``(run_id, seq)`` tasks in one round trip: 'ok', 'done' or 'busy' each."""
        by_run = _group_by_run(tasks)

        def build(pipe: Any) -> None:
            for run_id, positions in by_run.items():
                seqs = [tasks[i][1] for i in positions]
                claims = [self.keys.claim(run_id, seq) for seq in seqs]
                self.scripts.queue(
                    pipe,
                    "start",
                    [self.keys.meta(run_id), self.keys.steps(run_id), *claims],
                    [worker, ttl_ms, *seqs],
                )

        replies = _raise_first(await self.scripts.pipeline(build))
        out = [""] * len(tasks)
        for positions, reply in zip(by_run.values(), replies, strict=True):
            for i, state in zip(positions, reply, strict=True):
                out[i] = str(state)
        return out

    async def record(
        self,
        items: Sequence[tuple[str, str, dict[str, Any] | str]],
        worker: str,
        *,
        acks: Sequence[tuple[str, str]] = (),
        attempts: Sequence[int] | None = None,
    ) -> list[Routing]:
        """Record step outcomes ``(run_id, seq, event)`` exactly once each, in one round
        trip; then acknowledge (and delete) the ``(queue, message_id)`` deliveries.

        ``attempts``: the attempt each outcome came from (0: not an activity attempt); an
        outcome of an attempt already recorded as failed is dropped as a duplicate.
        """

        by_run = _group_by_run(items)
        by_queue: dict[str, list[str]] = {}
        for queue, msg_id in acks:
            by_queue.setdefault(queue, []).append(msg_id)

        def build(pipe: Any) -> None:
            for run_id, positions in by_run.items():
                keys = [*self.keys.run_keys(run_id), self.keys.attempts(run_id)]
                args: list[Any] = [worker]
                for i in positions:
                    _, seq, event = items[i]
                    keys.append(self.keys.claim(run_id, seq))
                    text = event if isinstance(event, str) else serde.dumps(event)
                    args += [seq, attempts[i] if attempts else 0, text]
                self.scripts.queue(pipe, "record", keys, args)
            self._sync(pipe)  # the outcomes are on disk before their deliveries go
            for queue, msg_ids in by_queue.items():
                pipe.xack(self.keys.queue(queue), Keys.GROUP, *msg_ids)
                pipe.xdel(self.keys.queue(queue), *msg_ids)

        replies = _raise_first(await self.scripts.pipeline(build))
        out = [Routing(status="missing")] * len(items)
        for positions, reply in zip(by_run.values(), replies[: len(by_run)], strict=True):
            for i, one in zip(positions, reply, strict=True):
                out[i] = _routing(one)
        dups = sum(1 for r in out if r.status == "dup")
        if dups:
            await self.raw.hincrby(self.keys.stats, "duplicates_dropped", dups)
        return out

    async def fail_attempt(
        self,
        run_id: str,
        seq: str,
        *,
        attempt: int,
        event: str,
        worker: str,
        retry: tuple[str, int, str] | None = None,
        ack: tuple[str, str] | None = None,
    ) -> Routing:
        """Record failed attempt ``attempt`` of step ``seq`` once (``attempt.lua``).

        ``retry``: ``(queue, due_ms, member)``, the next attempt's task, added to the
        queue's retry set first in the same round trip (a crash in between leaves a
        retry that finds the step's outcome already there, never a lost one); it is
        withdrawn if the attempt was not ours to record. ``ack``: ``(queue, message_id)``,
        the delivery this attempt came from, done with either way.
        """
        meta, log, steps = self.keys.run_keys(run_id)

        def build(pipe: Any) -> None:
            if retry is not None:
                pipe.zadd(self.keys.retries(retry[0]), {retry[2]: retry[1]})
            self.scripts.queue(
                pipe,
                "attempt",
                [meta, log, steps, self.keys.attempts(run_id), self.keys.claim(run_id, seq)],
                [seq, attempt, event, worker],
            )
            self._sync(pipe)
            if ack is not None:
                pipe.xack(self.keys.queue(ack[0]), Keys.GROUP, ack[1])
                pipe.xdel(self.keys.queue(ack[0]), ack[1])

        replies = _raise_first(await self.scripts.pipeline(build))
        routing = _routing(replies[1 if retry is not None else 0])
        if retry is not None and routing.status != "ok":
            await self.raw.zrem(self.keys.retries(retry[0]), retry[2])
        return routing

    async def move_due_retries(self, queue: str, *, now_ms: int, limit: int = 500) -> int:
        """Move retries due by ``now_ms`` onto ``queue``; returns how many moved."""
        moved = 0
        while True:
            n = int(
                await self._call(
                    "due_retries",
                    [self.keys.retries(queue), self.keys.queue(queue)],
                    [now_ms, limit],
                )
            )
            moved += n
            if n < limit:
                return moved

    async def next_retry_ms(self, queue: str) -> int | None:
        """When the earliest retry of ``queue`` is due, if any is waiting."""
        rows = await self.raw.zrange(self.keys.retries(queue), 0, 0, withscores=True)
        return int(rows[0][1]) if rows else None

    async def deliver(self, run_id: str, seq: str, event: dict[str, Any], worker: str) -> Routing:
        """Record an outcome on ``run_id`` step ``seq`` exactly once (from anywhere: a
        child run, a person's decision) and wake whoever holds the run."""
        (routing,) = await self.record([(run_id, seq, event)], worker)
        if routing.status == "ok":
            await self.wake(run_id, routing)
        return routing

    async def external(
        self, run_id: str, event: dict[str, Any], *, request_id: str | None = None
    ) -> Routing:
        """Append an event from outside the run (signal, cancel request) once per
        ``request_id`` (default: a new one, so only a call sent again is dropped)."""
        meta, log, _ = self.keys.run_keys(run_id)
        keys = [meta, log, self.keys.sent(run_id)]
        flag = "cancel" if event.get("type") == "cancel_requested" else ""
        args = [serde.dumps(event), flag, request_id or secrets.token_hex(8)]

        def build(pipe: Any) -> None:
            self.scripts.queue(pipe, "external", keys, args)
            self._sync(pipe)

        return _routing(_raise_first(await self.scripts.pipeline(build))[0])

    async def stopped_runs(self, run_ids: Iterable[str]) -> set[str]:
        """Which of ``run_ids`` were cancelled or have ended (their activities may stop)."""
        ids = list(run_ids)
        pipe = self.raw.pipeline(transaction=False)
        for run_id in ids:
            pipe.hmget(self.keys.meta(run_id), "status", "cancel")
        rows = await pipe.execute()
        return {
            r for r, (status, cancel) in zip(ids, rows, strict=True)
            if cancel == "1" or status in TERMINAL_STATUSES or status is None
        }  # fmt: skip

    async def save_heartbeats(self, details: Iterable[tuple[str, str, Any]]) -> None:
        """Keep the last heartbeat details of running attempts ``(run_id, seq, details)``
        so an attempt that replaces a dead one can resume from them."""
        pipe = self.raw.pipeline(transaction=False)
        for run_id, seq, value in details:
            pipe.hset(self.keys.beats(run_id), seq, serde.dumps(value))
        await pipe.execute()

    async def load_heartbeats(self, steps: Sequence[tuple[str, str]]) -> list[Any]:
        """The saved heartbeat details of ``(run_id, seq)`` steps (``None``: none)."""
        pipe = self.raw.pipeline(transaction=False)
        for run_id, seq in steps:
            pipe.hget(self.keys.beats(run_id), seq)
        return [None if v is None else serde.loads(v) for v in await pipe.execute()]

    async def unclaim(self, tasks: Sequence[tuple[str, str]], worker: str) -> None:
        """Release ``worker``'s claims on ``(run_id, seq)`` tasks it hands back."""
        if not tasks:
            return
        by_run = _group_by_run(tasks)

        def build(pipe: Any) -> None:
            for run_id, positions in by_run.items():
                claims = [self.keys.claim(run_id, tasks[i][1]) for i in positions]
                self.scripts.queue(pipe, "unclaim", claims, [worker])

        _raise_first(await self.scripts.pipeline(build))

    async def renew_claims(self, claims: Iterable[tuple[str, str]], *, ttl_ms: int) -> None:
        """Extend the claims on activities this worker is running."""
        pipe = self.raw.pipeline(transaction=False)
        for run_id, seq in claims:
            pipe.pexpire(self.keys.claim(run_id, seq), ttl_ms)
        await pipe.execute()

    # -- queues, wake-ups, timers -------------------------------------------------------
    async def ensure_groups(self, queue: str) -> None:
        """Create the consumer groups (idempotent)."""
        for stream in (self.keys.queue(queue), self.keys.runq):
            await self.ensure_group(stream, Keys.GROUP)

    async def ensure_group(self, stream: str, group: str, *, start: str = "0") -> None:
        """Create consumer group ``group`` of ``stream`` (and the stream) reading from
        ``start`` unless it exists; any other error is raised."""
        try:
            await self.raw.xgroup_create(stream, group, id=start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def enqueue_run(self, run_id: str, why: str) -> None:
        """Ask any worker to take ``run_id``."""
        await self.raw.xadd(self.keys.runq, {"run": run_id, "why": why})

    async def wake(self, run_id: str, routing: Routing) -> None:
        """Wake whoever should read a recorded outcome: the run's live owner, else the
        run queue (one XADD, sent on its own)."""
        if routing.owner and routing.lease_until > now_ms():
            await self.raw.xadd(
                self.keys.wake(routing.owner), {"run": run_id}, maxlen=10_000, approximate=True
            )
        else:
            await self.raw.xadd(self.keys.runq, {"run": run_id, "why": "event"})

    async def add_timer(self, run_id: str, due_ms: int) -> None:
        """Make sure the run is woken at ``due_ms`` (keeps the earliest)."""
        await self.raw.zadd(self.keys.timers, {run_id: due_ms}, lt=True)

    async def pop_timers(self, *, now: int | None = None, limit: int = 100) -> int:
        """Move timers due by ``now`` (ms; default: the real time) to the run queue;
        returns how many fired."""
        at = now_ms() if now is None else now
        return int(await self._call("pop_timers", [self.keys.timers, self.keys.runq], [at, limit]))


def _rolled_back(run_id: str, known: str) -> StoreRolledBackError:
    return StoreRolledBackError(
        f"run {run_id}: Redis no longer holds log entry {known}, which this worker saw "
        f"written: the server lost acknowledged writes (a crash under appendfsync "
        f"everysec, or a failover to a lagging replica). The run is replayed from what "
        f"Redis holds; set TASKLOOM_DURABILITY=fsync so recorded outcomes reach disk first"
    )


def _routing(res: Any) -> Routing:
    if res[0] != "ok":
        return Routing(status=str(res[0]))
    return Routing(
        status="ok", entry_id=str(res[1]), owner=str(res[2] or ""), lease_until=int(res[3] or 0)
    )


def _group_by_run(items: Sequence[tuple[Any, ...]]) -> dict[str, list[int]]:
    """Positions of ``items`` by their first field, the run id (one script call per run:
    a run's keys share a hash slot, several runs' keys need not)."""
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(item[0], []).append(i)
    return groups


def _raise_first(replies: list[Any]) -> list[Any]:
    """Raise the first error among pipeline replies (they come back as objects)."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies
