"""A pipeline run's progress, folded from its log as it is read: each plan version, each
activity's state, attempts, verdicts, tokens and cost, and the stretches of time a
timeline draws (each attempt's model call and verification, each wait on a person, the
planner's and the integrator's calls).

::

    progress = RunProgress()
    async for event in handle.events():      # the log, oldest first, live
        progress.feed(event)
        progress.plan                         # the latest Plan (None before the first)
        progress.steps["pricing"].state       # planned, running, waiting, accepted, ...
        progress.rows()                       # the timeline: one row per activity

Everything comes from the log (the engine's events and the pipeline's ``pipeline.*``
records); nothing is read from elsewhere, so a page, a test or a terminal view built on
it shows what the run recorded, and feeding the events again gives the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from taskloom.engine.store import Event
from taskloom.pipeline.entries import pipeline_entry
from taskloom.pipeline.plan import Plan

__all__ = ["ACTIVE", "DONE", "Bar", "PlanVersion", "RunProgress", "Step", "TimelineRow", "event_ms"]

DONE = frozenset({"accepted", "reused"})
"""States of an activity whose output is accepted."""
ACTIVE = frozenset({"running", "verifying", "retrying", "sub-plan"})
"""States of an activity that is working now."""

_ENDED_RUN = ("run_completed", "run_failed", "run_cancelled")
_PLANNER, _INTEGRATOR = "taskloom.planner", "taskloom.integrator"


def event_ms(event: Event) -> int:
    """When ``event`` was written: its stream id's milliseconds."""
    head = event.id.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


@dataclass
class Bar:
    """A stretch of time on the timeline."""

    kind: str
    """``plan``, ``work`` (a subagent's call), ``verify``, ``wait`` (on a person),
    ``sub-plan`` (a child run), ``check`` (cross-checks) or ``integrate``."""
    start_ms: int
    end_ms: int | None = None
    """``None`` while it lasts."""
    outcome: str = ""
    """How it ended: a verdict (``pass``, ``fail``, ...), a decision, ``failed``."""
    attempt: int = 0
    """The activity's attempt it belongs to (0: none)."""
    seq: str = ""
    """The run's step it times (where a model call's live tokens stream)."""


@dataclass
class Step:
    """One activity of one plan version."""

    id: str
    role: str
    instructions: str
    inputs: list[str]
    version: int
    state: str = "planned"
    """``planned``, ``running``, ``verifying``, ``retrying``, ``waiting`` (on a person),
    ``decided``, ``replan``, ``sub-plan``, ``accepted``, ``reused``, ``rejected``,
    ``blocked`` or ``cancelled``."""
    attempts: int = 0
    verdict: str = ""
    """The last verification's status."""
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    """The last verification's verdicts (verifier, status, score, reasons)."""
    tokens: int = 0
    cost_usd: float = 0.0
    decided: str = ""
    """A person's last decision on it, with who made it."""
    accepted_by: str = ""
    task_id: str | None = None
    """Its open inbox item, while it waits on a person."""
    child_run: str = ""
    """The run of its sub-plan, if it asked for one."""
    reused_from: str = ""
    """Where a reused output was made: ``v1`` (an earlier plan version of the run; its
    attempts, verdict, tokens and cost are shown here too) or ``an earlier run``."""
    note: str = ""
    """Why it waits, is blocked, or was retried (the last such reason)."""
    bars: list[Bar] = field(default_factory=list)

    @property
    def calling(self) -> str | None:
        """The step of its model call in progress, if one is (the live tokens of
        ``orch.live_tokens(run_id, step)``)."""
        if self.state not in ACTIVE:
            return None  # e.g. cancelled by a re-plan while its call was on
        for bar in reversed(self.bars):
            if bar.kind == "work":
                return bar.seq if bar.end_ms is None else None
        return None

    @property
    def reasons(self) -> list[str]:
        """Why its last verification did not pass (empty if it passed)."""
        return [
            str(r) for v in self.verdicts if v.get("status") != "pass" for r in v.get("reasons", [])
        ]


@dataclass
class PlanVersion:
    """A plan the run adopted, with its activities as they went."""

    version: int
    by: str
    at_ms: int
    plan: Plan
    steps: dict[str, Step]
    reused: dict[str, str] = field(default_factory=dict)
    """For a re-plan: new activity id -> the previous version's whose work it reuses."""
    dropped: list[str] = field(default_factory=list)
    """For a re-plan: the previous version's activities it no longer has."""


@dataclass
class TimelineRow:
    """One row of the timeline: an activity (across plan versions) or a stage."""

    label: str
    kind: str
    """``plan``, ``activity``, ``check`` or ``integrate``."""
    bars: list[Bar]
    state: str = ""
    """An activity's state in the latest version, ``dropped`` if that has no such id."""


class RunProgress:
    """Folds a pipeline run's log, event by event (:meth:`feed`)."""

    def __init__(self) -> None:
        self.versions: list[PlanVersion] = []
        self.start_ms = 0
        self.end_ms: int | None = None
        self.ended = ""
        """``run_completed``, ``run_failed`` or ``run_cancelled`` once the run ended."""
        self.result: Any = None
        """A completed run's result, as the log holds it (maybe a blob reference)."""
        self.error: dict[str, Any] = {}
        self.follow_up: dict[str, Any] | None = None
        """For a follow-up or a re-run: the ``follow_up`` record (previous, rerun, ...)."""
        self.answer_status = ""
        """The integrated answer's last verification status."""
        self.stages: dict[str, list[Bar]] = {"plan": [], "check": [], "integrate": []}
        self.last_id = ""
        self._branches: dict[str, Step] = {}  # seq prefix -> the activity its steps are
        self._open: dict[str, Bar] = {}  # seq -> its bar, until it ends
        self._stage = "plan"  # where a top-level wait on a person belongs

    # -- what it shows ------------------------------------------------------------------
    @property
    def plan(self) -> Plan | None:
        """The latest plan (``None`` before the first)."""
        return self.versions[-1].plan if self.versions else None

    @property
    def steps(self) -> dict[str, Step]:
        """The latest plan's activities by id."""
        return self.versions[-1].steps if self.versions else {}

    def rows(self) -> list[TimelineRow]:
        """The timeline: planning, then one row per activity id (bars of every version,
        oldest first; rows ordered by their first bar), then cross-checks, integration."""
        by_id: dict[str, TimelineRow] = {}
        for version in self.versions:
            for step in version.steps.values():
                row = by_id.setdefault(step.id, TimelineRow(step.id, "activity", []))
                row.bars.extend(step.bars)
        latest = self.steps
        for act_id, row in by_id.items():
            row.state = latest[act_id].state if act_id in latest else "dropped"
        order = {act_id: i for i, act_id in enumerate(by_id)}
        activities = sorted(
            by_id.values(),
            key=lambda r: (r.bars[0].start_ms if r.bars else float("inf"), order[r.label]),
        )
        stage = [
            TimelineRow(label, kind, self.stages[kind])
            for kind, label in (("plan", "Planning"), ("check", "Cross-checks"))
        ]
        final = TimelineRow("Integration", "integrate", self.stages["integrate"])
        return [stage[0], *activities, *(r for r in stage[1:] if r.bars), final]

    # -- folding ------------------------------------------------------------------------
    def feed(self, event: Event) -> None:
        """Take one more event of the log (in order)."""
        self.last_id = event.id
        at = event_ms(event)
        entry = pipeline_entry(event)
        if entry is not None:
            self._pipeline(entry, event.seq or "", at)
            return
        d, t = event.data, event.type
        if t == "run_created":
            self.start_ms = at
        elif t in _ENDED_RUN:
            self._end(t, d, at)
        elif t == "activity_scheduled":
            self._scheduled(event.seq or "", d, at)
        elif t in ("activity_completed", "activity_failed"):
            self._completed(event.seq or "", t, d, at)
        elif t == "human_task_created":
            self._waits(event.seq or "", d, at)
        elif t in ("child_started", "child_completed", "child_failed"):
            self._child(event.seq or "", t, d, at)
        elif t in ("human_decided", "human_expired"):
            decision = (d.get("result") or {}).get("decision") if t == "human_decided" else ""
            self._close(event.seq or "", at, str(decision or "expired"))
            step = self._branch(event.seq)
            if step is not None:
                step.task_id = None

    def _end(self, kind: str, d: dict[str, Any], at: int) -> None:
        self.ended, self.end_ms = kind, at
        self.result = d.get("result")
        self.error = dict(d.get("error") or {})
        for bar in self._open.values():
            bar.end_ms, bar.outcome = at, bar.outcome or "stopped"
        self._open.clear()

    def _scheduled(self, seq: str, d: dict[str, Any], at: int) -> None:
        name = str(d.get("name", ""))
        args = d.get("args") or []
        agent = str(args[0]) if name == "taskloom.agent" and args else ""
        step = self._branch(seq)
        if step is not None:
            kind = {"taskloom.agent": "work", "taskloom.verify": "verify"}.get(name)
            if kind is not None:
                self._open[seq] = _add(step.bars, Bar(kind, at, attempt=step.attempts, seq=seq))
            return
        if "." in seq:
            return  # a branch's step of no activity known (an older log)
        stage = {_PLANNER: "plan", _INTEGRATOR: "integrate"}.get(agent) or {
            "taskloom.cross_check": "check",
            "taskloom.verify": "integrate",
        }.get(name)
        if stage is not None:
            self._stage = stage
            kind = "verify" if name == "taskloom.verify" else stage
            self._open[seq] = _add(self.stages[stage], Bar(kind, at))

    def _completed(self, seq: str, t: str, d: dict[str, Any], at: int) -> None:
        result = d.get("result")
        bar = self._open.get(seq)
        outcome = "failed" if t == "activity_failed" else ""
        if isinstance(result, dict) and isinstance(result.get("status"), str):
            outcome = result["status"]  # a verification's
        self._close(seq, at, outcome or "done")
        step = self._branch(seq)
        if step is None or not isinstance(result, dict) or bar is None:
            return
        if bar.kind == "work":
            usage = result.get("usage")
            if isinstance(usage, dict):
                step.tokens += sum(v for v in usage.values() if isinstance(v, int))
            if isinstance(result.get("cost_usd"), int | float):
                step.cost_usd += float(result["cost_usd"])
        elif bar.kind == "verify" and isinstance(result.get("verdicts"), list):
            step.verdicts = [v for v in result["verdicts"] if isinstance(v, dict)]

    def _waits(self, seq: str, d: dict[str, Any], at: int) -> None:
        task = d.get("task") or {}
        step = self._branch(seq)
        if step is not None:
            step.task_id = task.get("id")
            self._open[seq] = _add(step.bars, Bar("wait", at, attempt=step.attempts))
        elif "." not in seq:
            self._open[seq] = _add(self.stages[self._stage], Bar("wait", at))

    def _child(self, seq: str, t: str, d: dict[str, Any], at: int) -> None:
        step = self._branch(seq)
        if t != "child_started":
            self._close(seq, at, "pass" if t == "child_completed" else "failed")
        elif step is not None:
            step.child_run = str(d.get("child_id") or "")
            self._open[seq] = _add(step.bars, Bar("sub-plan", at, attempt=step.attempts))

    def _close(self, seq: str, at: int, outcome: str) -> None:
        bar = self._open.pop(seq, None)
        if bar is not None:
            bar.end_ms, bar.outcome = at, outcome

    def _branch(self, seq: str | None) -> Step | None:
        """The activity step ``seq`` belongs to (its prefix, or a prefix of that)."""
        prefix = (seq or "").rpartition(".")[0]
        while prefix:
            if prefix in self._branches:
                return self._branches[prefix]
            prefix = prefix.rpartition(".")[0]
        return None

    def _pipeline(self, entry: dict[str, Any], seq: str, at: int) -> None:
        kind = entry.get("event")
        if kind == "planned":
            self._planned(entry, at)
        elif kind == "replanned" and len(self.versions) > 1:
            self._replanned(entry)
        elif kind == "plan_invalid" and self.stages["plan"]:
            self.stages["plan"][-1].outcome = "invalid"
        elif kind == "follow_up":
            self.follow_up = entry
        elif kind == "cross_check" and self.stages["check"]:
            self.stages["check"][-1].outcome = "flagged"
        elif kind == "integrated":
            self.answer_status = str(entry.get("status", ""))
        elif kind == "activity":
            step = self.steps.get(str(entry.get("id")))
            if step is not None:
                self._branches[seq.rpartition(".")[0]] = step
                _fold(step, entry)

    def _replanned(self, entry: dict[str, Any]) -> None:
        old, new = self.versions[-2], self.versions[-1]
        new.reused = {str(k): str(v) for k, v in (entry.get("reused") or {}).items()}
        new.dropped = [str(d) for d in entry.get("dropped") or []]
        for new_id, old_id in new.reused.items():
            made, step = old.steps.get(old_id), new.steps.get(new_id)
            if made is not None and step is not None:  # shown with the work it reuses
                step.attempts, step.verdict, step.verdicts = (
                    made.attempts,
                    made.verdict,
                    made.verdicts,
                )
                step.tokens, step.cost_usd = made.tokens, made.cost_usd
                step.accepted_by, step.decided = made.accepted_by, made.decided
                step.reused_from = f"v{old.version}"

    def _planned(self, entry: dict[str, Any], at: int) -> None:
        plan = Plan.model_validate(entry.get("plan"))
        version = int(entry.get("version") or len(self.versions) + 1)
        steps = {
            a.id: Step(a.id, a.role, a.instructions, list(a.inputs), version)
            for a in plan.activities
        }
        self.versions.append(PlanVersion(version, str(entry.get("by", "")), at, plan, steps))
        self._stage = "plan"


def _fold(step: Step, entry: dict[str, Any]) -> None:
    """One ``pipeline.activity`` record into ``step``."""
    state = str(entry.get("state"))
    match state:
        case "started":
            if entry.get("go", True):
                step.attempts = int(entry.get("attempt") or step.attempts + 1)
                step.state = "running"
        case "verified":
            step.verdict, step.state = str(entry.get("status", "")), "verifying"
        case "retrying":
            step.state, step.note = "retrying", str(entry.get("feedback") or "")
        case "escalated":
            step.state, step.note = "waiting", str(entry.get("reason") or "")
        case "decided":
            decision = str(entry.get("decision"))
            step.decided = f"{decision} by {entry.get('by')}"
            step.state = {"replan": "replan", "reject": "rejected"}.get(decision, "decided")
        case "accepted":
            step.state, step.accepted_by = "accepted", str(entry.get("by", ""))
            step.verdict = str(entry.get("status") or step.verdict)  # by its verifiers
            step.tokens = int(entry.get("tokens") or step.tokens)
            step.cost_usd = float(entry.get("cost_usd") or step.cost_usd)
        case "blocked":
            step.state = "blocked"
            step.note = "waits on " + ", ".join(map(str, entry.get("by") or []))
        case "decomposed":
            step.state, step.note = "sub-plan", str(entry.get("why") or "")
        case "reused":
            step.state, step.reused_from = state, step.reused_from or "an earlier run"
        case "cancelled":
            step.state = state


def _add(bars: list[Bar], bar: Bar) -> Bar:
    bars.append(bar)
    return bar
