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
``escalate`` raises :class:`~orchestrator.HumanTaskExpiredError`).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from . import serde
from .errors import HumanTaskClosedError, HumanTaskNotFoundError, UserError
from .store import Store, now_ms

__all__ = ["Decide", "Decision", "Expire", "HumanTask", "HumanTasks", "Reassign"]


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
    """The inbox across all runs: list open tasks, decide them, apply SLA fallbacks."""

    def __init__(self, store: Store) -> None:
        self.store = store

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
        older_than: float | None = None,
        limit: int = 100,
    ) -> list[HumanTask]:
        """Open tasks, oldest first; filters: assignee, group, run, age (seconds)."""
        keys = self.store.keys
        top = "+inf" if older_than is None else now_ms() - int(older_than * 1000)
        ids = await self.store.raw.zrangebyscore(keys.inbox_open, "-inf", top)
        if run_id is not None:
            ids = [i for i in ids if i.split("/", 1)[0] == run_id]
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

    # -- writing ------------------------------------------------------------------------
    async def open(self, task: HumanTask) -> bool:
        """Add ``task`` to the inbox unless it is there already (idempotent)."""
        keys = self.store.keys
        created = await self.store.scripts.call(
            "inbox_open",
            [keys.inbox_task(task.id), keys.inbox_open, keys.inbox_sla],
            [task.id, serde.dumps(task.to_dict()), task.created_ms, task.sla_due_ms or 0],
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
        event = {
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
        :class:`~orchestrator.HumanTaskExpiredError` with ``reason`` (a re-plan made the
        question moot, say). A task decided meanwhile is refused, like a decision."""
        task = await self.get(task_id)
        if task.status != "open":
            raise HumanTaskClosedError(_closed_message(task))
        await self._expire(task, reason, "closed", now_ms() if at_ms is None else at_ms)

    async def _expire(self, task: HumanTask, reason: str, status: str, at_ms: int) -> None:
        error = {"type": "HumanTaskExpiredError", "message": f"{task.title}: {reason}"}
        event = {"type": "human_expired", "seq": task.seq, "error": error, "ts": at_ms}
        await self._settle(task, event, status, {})

    async def _settle(
        self, task: HumanTask, event: dict[str, Any], status: str, decision: dict[str, Any]
    ) -> None:
        """Record the task's outcome on its run (exactly once), then close the entry."""
        routing = await self.store.deliver(task.run_id, task.seq, event, "inbox")
        if routing.status == "dup":  # decided meanwhile: heal the entry, refuse this one
            recorded = await self._recorded(task)
            healed = HumanTask(**(task.to_dict() | recorded))
            await self._close(healed)
            raise HumanTaskClosedError(_closed_message(healed))
        if routing.status in ("late", "missing"):
            await self._close(HumanTask(**(task.to_dict() | {"status": "closed"})))
            raise HumanTaskClosedError(
                f"human task {task.id}: its run {task.run_id} has ended; nothing to decide"
            )
        await self._close(HumanTask(**(task.to_dict() | {"status": status, "decision": decision})))

    async def _recorded(self, task: HumanTask) -> dict[str, Any]:
        keys = self.store.keys
        entry = await self.store.raw.hget(keys.steps(task.run_id), task.seq)
        rows = await self.store.raw.xrange(keys.log(task.run_id), entry, entry) if entry else []
        data = serde.loads(rows[0][1]["e"]) if rows else {}
        if data.get("type") == "human_decided":
            return {"status": "decided", "decision": data.get("result")}
        return {"status": "expired"}

    async def _close(self, task: HumanTask) -> None:
        keys = self.store.keys
        await self.store.scripts.call(
            "inbox_close",
            [keys.inbox_task(task.id), keys.inbox_open, keys.inbox_sla],
            [task.id, serde.dumps(task.to_dict())],
        )

    # -- SLAs ---------------------------------------------------------------------------
    async def apply_due_slas(self, *, now: int, limit: int = 50) -> builtins.list[tuple[str, str]]:
        """Apply the next fallback of every open task whose SLA passed by ``now``.
        Returns ``(task_id, what)`` for each fallback this call applied."""
        keys = self.store.keys
        due = await self.store.raw.zrangebyscore(keys.inbox_sla, "-inf", now, start=0, num=limit)
        applied = []
        for task_id in due:
            try:
                task = await self.get(task_id)
            except HumanTaskNotFoundError:
                await self.store.raw.zrem(keys.inbox_sla, task_id)
                continue
            what = await self._fallback(task, now)
            if what:
                applied.append((task_id, what))
        return applied

    async def _fallback(self, task: HumanTask, now: int) -> str:
        keys = self.store.keys
        if task.status != "open" or task.fallback_used >= len(task.fallback):
            await self.store.raw.zrem(keys.inbox_sla, task.id)  # nothing (more) to apply
            return ""
        step = task.fallback[task.fallback_used]
        if step["kind"] == "reassign":
            sla = step.get("sla")
            moved = HumanTask(
                **(
                    task.to_dict()
                    | {
                        "assignee": step["to"],
                        "fallback_used": task.fallback_used + 1,
                        "sla_due_ms": now + int(sla * 1000) if sla else None,
                    }
                )
            )
            won = await self.store.scripts.call(
                "inbox_reassign",
                [keys.inbox_task(task.id), keys.inbox_sla],
                [task.id, task.fallback_used, serde.dumps(moved.to_dict()), moved.sla_due_ms or 0],
            )
            return f"reassigned to {step['to']}" if won else ""
        try:
            if step["kind"] == "decide":
                await self.decide(task.id, step["decision"], by="sla", note=step["note"], at_ms=now)
                return f"decided {step['decision']}"
            await self._expire(task, step["reason"], "expired", now)
            return "expired"
        except HumanTaskClosedError:
            return ""  # another worker (or a person) got there first


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
