"""Human tasks: a run asks a person to decide, and waits, holding no worker slot.

Workflow code escalates::

    decision = await ctx.escalate(
        "Approve the refund of 120 EUR?",
        context={"order": "A-17", "draft": text},
        decisions=["approve", "reject"],
        assignee="ana",
        sla=4 * 3600,
        fallback=[Reassign("lead", sla=3600), Decide("reject", note="no answer in time")],
    )
    if decision.decision == "approve": ...

and people (or the inbox surfaces built on this API) decide::

    inbox = orch.human_tasks
    for task in await inbox.list(assignee="ana"):
        await inbox.decide(task.id, "approve", by="ana", note="fine")

The decision is recorded once, as the outcome of the run's step: the run's log is the
truth, and a second decision is refused with who decided and when. The inbox entry
(``{inbox}`` keys) is an index over open tasks, healed from the log if a crash left it
behind. When a task's SLA passes, the next fallback of its chain applies: reassign to
the next person (with a new SLA), a default decision, or expire (the workflow's
``escalate`` raises :class:`~taskloom.HumanTaskExpiredError`). A task with no SLA of
its own gets the operator's default (``HumanTasks(default_sla=...)``,
``TASKLOOM_INBOX_SLA``), if any.

Every change of a task appends an event to the inbox outbox, a Redis stream, in the
same script as the change itself: ``opened``, ``sla_near`` (when
:data:`SLA_NEAR_FRACTION` of its SLA window has passed), ``sla_breached``,
``reassigned``, ``decided`` and ``expired`` (closed without a decision: a fallback gave
up, the run ended, or the task was withdrawn). Each is JSON::

    {"id": "<task id>:<kind>:<n>", "kind": "opened", "task": {...}, "ts": 1712345678901}

where ``n`` is the round of the task's SLA chain, so an id names one event for good.
The notifier (:mod:`taskloom.inbox.notify`) turns them into webhooks and e-mail. The same
scripts keep the inbox's numbers (open items per assignee, decisions, decision latency)
in Redis for :meth:`HumanTasks.stats`.
"""

from __future__ import annotations

import bisect
import builtins
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from taskloom.engine import serde
from taskloom.engine.events import HumanDecided, HumanExpired
from taskloom.engine.inboxstats import INBOX_LATENCY_BUCKETS, InboxStats
from taskloom.engine.store import Store, now_ms
from taskloom.errors import HumanTaskClosedError, HumanTaskNotFoundError, UserError

__all__ = [
    "OUTBOX_MAXLEN",
    "SLA_NEAR_FRACTION",
    "Decide",
    "Decision",
    "EventKind",
    "Expire",
    "HumanTask",
    "HumanTasks",
    "Reassign",
    "SlaStep",
]

SLA_NEAR_FRACTION = 0.8
"""The share of an SLA window after which a task is "near" its SLA (``sla_near``)."""

OUTBOX_MAXLEN = 10_000
"""About how many inbox events the outbox keeps, read or not (``MAXLEN ~``)."""

EventKind = Literal["opened", "sla_near", "sla_breached", "reassigned", "decided", "expired"]
"""What happened to an inbox item, the ``kind`` of its event."""


@dataclass(frozen=True)
class Reassign:
    """SLA fallback: give the task to ``to``, with a new SLA (seconds) if given."""

    to: str
    sla: float | None = None


@dataclass(frozen=True)
class Decide:
    """SLA fallback: decide ``decision`` on the person's behalf."""

    decision: str
    note: str = "decided by the SLA fallback"


@dataclass(frozen=True)
class Expire:
    """SLA fallback: give up; the workflow's ``escalate`` raises HumanTaskExpiredError."""

    reason: str = "no decision before the SLA"


Fallback = Reassign | Decide | Expire


@dataclass(frozen=True)
class Decision:
    """What a person (or a fallback) decided."""

    decision: str
    by: str
    note: str = ""
    data: Any = None
    """Anything the decider attached (an edited output, say)."""
    decided_ms: int = 0


@dataclass(frozen=True, kw_only=True)
class HumanTask:
    """One task in the inbox."""

    id: str
    """``run_id/seq``."""
    run_id: str
    seq: str
    title: str
    context: Any = None
    decisions: list[str]
    assignee: str | None = None
    group: str | None = None
    sla_due_ms: int | None = None
    fallback: list[dict[str, Any]] = field(default_factory=list)
    fallback_used: int = 0
    sla_state: Literal["", "near", "breached"] = ""
    """How far the current SLA (of round ``fallback_used``) has gone."""
    created_ms: int = 0
    status: Literal["open", "decided", "expired", "closed"] = "open"
    decision: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form."""
        return asdict(self)

    @classmethod
    def from_json(cls, text: str) -> HumanTask:
        """Parse a task as stored."""
        return cls(**serde.loads(text))


@dataclass(frozen=True)
class SlaStep:
    """One thing :meth:`HumanTasks.apply_due_slas` did to a task."""

    task_id: str
    kind: Literal["sla_near", "sla_breached", "reassigned", "decided", "expired"]
    detail: str = ""


def task_spec(
    *,
    title: str,
    context: Any,
    decisions: Sequence[str],
    assignee: str | None,
    group: str | None,
    sla: float | None,
    fallback: Sequence[Fallback],
) -> dict[str, Any]:
    """Check an escalation's options and put them in the form the log keeps."""
    if not title:
        raise UserError("escalate() needs a title that tells the person what to decide")
    choices = list(decisions)
    if not choices or any(not isinstance(d, str) or not d for d in choices):
        raise UserError(f"decisions must be non-empty strings (got {decisions!r})")
    if sla is not None and not sla > 0:
        raise UserError(f"sla must be a positive number of seconds (got {sla!r})")
    chain: list[dict[str, Any]] = []
    for step in fallback:
        match step:
            case Reassign(to=to, sla=next_sla):
                chain.append({"kind": "reassign", "to": to, "sla": next_sla})
            case Decide(decision=decision, note=note):
                if decision not in choices:
                    raise UserError(
                        f"fallback Decide({decision!r}) is not one of the decisions {choices}"
                    )
                chain.append({"kind": "decide", "decision": decision, "note": note})
            case Expire(reason=reason):
                chain.append({"kind": "expire", "reason": reason})
            case _:
                raise UserError(f"fallback steps are Reassign, Decide or Expire, not {step!r}")
    return {
        "title": title,
        "context": context,
        "decisions": choices,
        "assignee": assignee,
        "group": group,
        "sla": sla,
        "fallback": chain,
    }


class HumanTasks:
    """The inbox across all runs: list open tasks, decide them, apply SLA fallbacks.

    ``default_sla`` (seconds) is the operator's SLA for tasks whose workflow set none,
    and for reassignments that name no SLA of their own.
    """

    def __init__(self, store: Store, *, default_sla: float | None = None) -> None:
        if default_sla is not None and not default_sla > 0:
            raise UserError(f"default_sla must be a positive number of seconds ({default_sla!r})")
        self.store = store
        self.default_sla = default_sla

    # -- reading ------------------------------------------------------------------------
    async def get(self, task_id: str) -> HumanTask:
        """The task ``task_id`` (``run_id/seq``), open or not."""
        text = await self.store.raw.get(self.store.keys.inbox_task(task_id))
        if not text:
            raise HumanTaskNotFoundError(
                f"no human task {task_id!r}; list the open ones with orch.human_tasks.list() "
                f"or `taskloom inbox list`"
            )
        return HumanTask.from_json(text)

    async def list(
        self,
        *,
        assignee: str | None = None,
        group: str | None = None,
        run_id: str | None = None,
        children: bool = False,
        older_than: float | None = None,
        limit: int = 100,
    ) -> list[HumanTask]:
        """Open tasks, oldest first; filters: assignee, group, run (with ``children``:
        also its child runs', ``RUN.SEQ...``), age (seconds)."""
        keys = self.store.keys
        if older_than is not None and not math.isfinite(older_than):
            raise UserError(f"older_than must be a finite number of seconds, got {older_than!r}")
        top = "+inf" if older_than is None else now_ms() - int(older_than * 1000)
        ids = await self.store.raw.zrangebyscore(keys.inbox_open, "-inf", top)
        if run_id is not None:
            child = f"{run_id}."
            ids = [
                i
                for i in ids
                if (rid := i.split("/", 1)[0]) == run_id or (children and rid.startswith(child))
            ]
        texts = await self.store.raw.mget([keys.inbox_task(i) for i in ids]) if ids else []
        tasks = [HumanTask.from_json(t) for t in texts if t]
        tasks = [
            t
            for t in tasks
            if (assignee is None or t.assignee == assignee) and (group is None or t.group == group)
        ]
        return tasks[:limit]

    async def count_open(self) -> int:
        """How many tasks are open."""
        return int(await self.store.raw.zcard(self.store.keys.inbox_open))

    async def stats(self) -> InboxStats:
        """The inbox's numbers across all processes, for :meth:`Metrics.set_inbox`:
        open tasks per assignee, decisions, decision latency, dead notifications."""
        keys = self.store.keys
        pipe = self.store.raw.pipeline(transaction=False)
        pipe.hgetall(keys.inbox_assignees)
        pipe.hgetall(keys.inbox_stats)
        pipe.zcard(keys.notify_dead)
        pipe.zcard(keys.inbox_open)
        assignees, stats, dead, open_ = await pipe.execute()
        counts = [0] * (len(INBOX_LATENCY_BUCKETS) + 1)
        decisions: dict[str, int] = {}
        for name, value in stats.items():
            kind, _, label = name.partition(":")
            if kind == "decided":
                decisions[label] = int(value)
            elif kind == "lat":  # by bound, so the histogram survives new buckets
                counts[bisect.bisect_left(INBOX_LATENCY_BUCKETS, float(label))] += int(value)
        return InboxStats(
            open_by_assignee={a: int(n) for a, n in assignees.items() if int(n) > 0},
            decisions=decisions,
            latency_counts=tuple(counts),
            latency_sum=int(stats.get("lat_sum_ms") or 0) / 1000,
            notifications_dead=int(dead),
            open=int(open_),
        )

    # -- writing ------------------------------------------------------------------------
    async def open(self, task: HumanTask) -> bool:
        """Add ``task`` to the inbox unless it is there already (idempotent)."""
        if task.sla_due_ms is None and self.default_sla is not None:
            task = replace(task, sla_due_ms=task.created_ms + int(self.default_sla * 1000))
        keys = self.store.keys
        point = _sla_point(task.created_ms, task.sla_due_ms)
        created = await self.store.scripts.call(
            "inbox_open",
            [
                keys.inbox_task(task.id),
                keys.inbox_open,
                keys.inbox_sla,
                keys.inbox_outbox,
                keys.inbox_assignees,
            ],
            [
                task.id,
                serde.dumps(task.to_dict()),
                task.created_ms,
                point,
                _event(task, "opened", 0, task.created_ms),
                OUTBOX_MAXLEN,
                task.assignee or "",
            ],
        )
        return bool(created)

    async def decide(
        self,
        task_id: str,
        decision: str,
        *,
        by: str,
        note: str = "",
        data: Any = None,
        at_ms: int | None = None,
    ) -> Decision:
        """Decide an open task, once: the run goes on with this :class:`Decision`.

        A decision not among the task's, or on a task already decided, is refused.
        """
        task = await self.get(task_id)
        if decision not in task.decisions:
            raise UserError(
                f"{decision!r} is not a decision of task {task_id}; choose one of "
                f"{', '.join(task.decisions)}"
            )
        if task.status != "open":
            raise HumanTaskClosedError(_closed_message(task))
        if not by:
            raise UserError("say who decides: decide(..., by='name')")
        made = Decision(decision, by, note, data, now_ms() if at_ms is None else at_ms)
        event: HumanDecided = {
            "type": "human_decided",
            "seq": task.seq,
            "task_id": task.id,
            "result": asdict(made),
            "ts": made.decided_ms,
        }
        await self._settle(task, event, "decided", asdict(made))
        return made

    async def withdraw(self, task_id: str, *, reason: str, at_ms: int | None = None) -> None:
        """Close an open task without a decision: its run's ``escalate`` raises
        :class:`~taskloom.HumanTaskExpiredError` with ``reason`` (a re-plan made the
        question moot, say). A task decided meanwhile is refused, like a decision."""
        task = await self.get(task_id)
        if task.status != "open":
            raise HumanTaskClosedError(_closed_message(task))
        await self._expire(task, reason, "closed", now_ms() if at_ms is None else at_ms)

    async def _expire(self, task: HumanTask, reason: str, status: str, at_ms: int) -> None:
        error = {"type": "HumanTaskExpiredError", "message": f"{task.title}: {reason}"}
        event: HumanExpired = {
            "type": "human_expired",
            "seq": task.seq,
            "error": error,
            "ts": at_ms,
        }
        await self._settle(task, event, status, {})

    async def _settle(
        self,
        task: HumanTask,
        event: HumanDecided | HumanExpired,
        status: str,
        decision: dict[str, Any],
    ) -> None:
        """Record the task's outcome on its run (exactly once), then close the entry."""
        at_ms = int(event["ts"])
        routing = await self.store.deliver(task.run_id, task.seq, event, "inbox")
        if routing.status == "dup":  # decided meanwhile: heal the entry, refuse this one
            recorded = await self._recorded(task)
            healed = HumanTask(**(task.to_dict() | recorded))
            await self._close(healed, at_ms)
            raise HumanTaskClosedError(_closed_message(healed))
        if routing.status in ("late", "missing"):
            await self._close(HumanTask(**(task.to_dict() | {"status": "closed"})), at_ms)
            raise HumanTaskClosedError(
                f"human task {task.id}: its run {task.run_id} has ended; nothing to decide"
            )
        closed = HumanTask(**(task.to_dict() | {"status": status, "decision": decision}))
        await self._close(closed, at_ms)

    async def _recorded(self, task: HumanTask) -> dict[str, Any]:
        keys = self.store.keys
        entry = await self.store.raw.hget(keys.steps(task.run_id), task.seq)
        rows = await self.store.raw.xrange(keys.log(task.run_id), entry, entry) if entry else []
        data = serde.loads(rows[0][1]["e"]) if rows else {}
        if data.get("type") == "human_decided":
            return {"status": "decided", "decision": data.get("result")}
        return {"status": "expired"}

    async def _close(self, task: HumanTask, at_ms: int) -> None:
        """Close the entry; the close that takes it off the open index counts the
        decision and emits ``decided`` or ``expired``."""
        keys = self.store.keys
        decision, bucket, latency_ms = "", "inf", 0
        if task.status == "decided" and task.decision:
            decision = str(task.decision.get("decision", ""))
            at_ms = int(task.decision.get("decided_ms") or at_ms)
            latency_ms = max(0, at_ms - task.created_ms)
            i = bisect.bisect_left(INBOX_LATENCY_BUCKETS, latency_ms / 1000)
            bucket = repr(INBOX_LATENCY_BUCKETS[i]) if i < len(INBOX_LATENCY_BUCKETS) else "inf"
        kind: EventKind = "decided" if decision else "expired"
        await self.store.scripts.call(
            "inbox_close",
            [
                keys.inbox_task(task.id),
                keys.inbox_open,
                keys.inbox_sla,
                keys.inbox_outbox,
                keys.inbox_assignees,
                keys.inbox_stats,
            ],
            [
                task.id,
                serde.dumps(task.to_dict()),
                _event(task, kind, 0, at_ms),
                OUTBOX_MAXLEN,
                decision,
                bucket,
                latency_ms,
            ],
        )

    # -- SLAs ---------------------------------------------------------------------------
    async def apply_due_slas(self, *, now: int, limit: int = 50) -> builtins.list[SlaStep]:
        """Act on every open task whose next SLA point passed by ``now``: mark it near
        its SLA, or breached and then apply the next fallback of its chain. Returns
        what this call did (another worker racing on a task does the rest)."""
        keys = self.store.keys
        due = await self.store.raw.zrangebyscore(keys.inbox_sla, "-inf", now, start=0, num=limit)
        applied: builtins.list[SlaStep] = []
        for task_id in due:
            try:
                task = await self.get(task_id)
            except HumanTaskNotFoundError:
                await self.store.raw.zrem(keys.inbox_sla, task_id)
                continue
            applied += await self._sla_due(task, now)
        return applied

    async def _sla_due(self, task: HumanTask, now: int) -> builtins.list[SlaStep]:
        if task.status != "open" or task.sla_due_ms is None:
            await self.store.raw.zrem(self.store.keys.inbox_sla, task.id)  # nothing to watch
            return []
        if now < task.sla_due_ms:  # the "near" point
            if task.sla_state or not await self._mark(task, "near", task.sla_due_ms, now):
                return []
            return [SlaStep(task.id, "sla_near")]
        steps = []
        more = task.fallback_used < len(task.fallback)
        if task.sla_state != "breached":
            # Keep the timer while a fallback is left: if this worker dies before it
            # applies it, the next pass does.
            if not await self._mark(task, "breached", task.sla_due_ms if more else 0, now):
                return []  # moved on meanwhile; whoever moved it goes on
            task = replace(task, sla_state="breached")
            steps.append(SlaStep(task.id, "sla_breached"))
        if more:
            step = await self._fallback(task, now)
            steps += [step] if step else []
        elif not steps:  # breached earlier, nothing left to apply (_mark took it off then)
            await self.store.raw.zrem(self.store.keys.inbox_sla, task.id)
        return steps

    async def _mark(
        self, task: HumanTask, state: Literal["near", "breached"], point: int, now: int
    ) -> bool:
        """Move ``task`` to SLA state ``state`` once, its timer to ``point``."""
        kind: EventKind = "sla_near" if state == "near" else "sla_breached"
        marked = replace(task, sla_state=state)
        return await self._move(task, marked, point, kind, now, expect=task.sla_state)

    async def _move(
        self,
        task: HumanTask,
        moved: HumanTask,
        point: int,
        kind: EventKind,
        now: int,
        *,
        expect: str = "*",
        reassign: bool = False,
    ) -> bool:
        """Replace ``task`` by ``moved`` once (``inbox_move.lua``): only while it is open
        at the same fallback and, unless ``expect`` is ``"*"``, SLA state ``expect``."""
        keys = self.store.keys
        done = await self.store.scripts.call(
            "inbox_move",
            [keys.inbox_task(task.id), keys.inbox_sla, keys.inbox_outbox, keys.inbox_assignees],
            [
                task.id,
                task.fallback_used,
                expect,
                serde.dumps(moved.to_dict()),
                point,
                _event(moved, kind, moved.fallback_used, now),
                OUTBOX_MAXLEN,
                "1" if reassign else "0",
                moved.assignee or "",
            ],
        )
        return bool(done)

    async def _fallback(self, task: HumanTask, now: int) -> SlaStep | None:
        step = task.fallback[task.fallback_used]
        if step["kind"] == "reassign":
            sla = step.get("sla") or self.default_sla
            moved = replace(
                task,
                assignee=step["to"],
                fallback_used=task.fallback_used + 1,
                sla_due_ms=now + int(sla * 1000) if sla else None,
                sla_state="",
            )
            point = _sla_point(now, moved.sla_due_ms)
            won = await self._move(task, moved, point, "reassigned", now, reassign=True)
            return SlaStep(task.id, "reassigned", f"to {step['to']}") if won else None
        try:
            if step["kind"] == "decide":
                await self.decide(task.id, step["decision"], by="sla", note=step["note"], at_ms=now)
                return SlaStep(task.id, "decided", step["decision"])
            await self._expire(task, step["reason"], "expired", now)
            return SlaStep(task.id, "expired", step["reason"])
        except HumanTaskClosedError:
            return None  # another worker (or a person) got there first


def _sla_point(start_ms: int, due_ms: int | None) -> int:
    """The first SLA point of a window from ``start_ms`` to ``due_ms`` (0: no SLA)."""
    if due_ms is None:
        return 0
    return start_ms + int(max(0, due_ms - start_ms) * SLA_NEAR_FRACTION)


def _event(task: HumanTask, kind: EventKind, n: int, ts: int) -> str:
    """The outbox event for ``kind`` happening to ``task`` (as it is after the change)."""
    event = {"id": f"{task.id}:{kind}:{n}", "kind": kind, "task": task.to_dict(), "ts": ts}
    return serde.dumps(event, what=f"event of human task {task.id}")


def _closed_message(task: HumanTask) -> str:
    if task.status == "decided" and task.decision:
        d = task.decision
        return (
            f"human task {task.id} was already decided: {d.get('decision')!r} by "
            f"{d.get('by')}; a task takes one decision"
        )
    return f"human task {task.id} is {task.status}; it takes no more decisions"


def new_task(run_id: str, seq: str, spec: dict[str, Any], *, created_ms: int) -> HumanTask:
    """The inbox entry of an escalation ``spec`` (from :func:`task_spec`)."""
    sla = spec.get("sla")
    return HumanTask(
        id=f"{run_id}/{seq}",
        run_id=run_id,
        seq=seq,
        title=spec["title"],
        context=spec.get("context"),
        decisions=list(spec["decisions"]),
        assignee=spec.get("assignee"),
        group=spec.get("group"),
        sla_due_ms=created_ms + int(sla * 1000) if sla else None,
        fallback=list(spec.get("fallback") or []),
        created_ms=created_ms,
    )
