"""A run as a person reads it in the terminal: ``taskloom status`` (what each activity
did: attempts, time, verdict, tokens, cost) and ``taskloom history`` (the log, each
step named by the activity or agent it belongs to, times from the run's start).

Both read the run's log only; ``--json`` output is built elsewhere (``cli``)::

    steps = StepNames()
    for event in events:
        print(history_line(event, steps, start_ms))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from taskloom.display import clip, duration, one_line
from taskloom.engine.store import Event
from taskloom.pipeline.endpoints import served_by
from taskloom.pipeline.entries import pipeline_entry
from taskloom.terminal.console import describe

__all__ = [
    "SUMMARY_HEADER",
    "ActivitySummary",
    "StepNames",
    "activity_summaries",
    "event_ms",
    "history_header",
    "history_line",
    "table",
]

_INTERNAL = "taskloom."


def event_ms(event: Event) -> int:
    """When ``event`` was written: its stream id's milliseconds."""
    head = event.id.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Lines of a plain table: a header, then the rows, columns padded to fit (the last
    column is not padded)."""
    body = [list(header), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in body) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)) + "  " + r[-1]
        if len(r) > 1
        else r[0]
        for r in body
    ]


class StepNames:
    """Which activity (or agent) each step of a run belongs to, learnt from the log as
    it is read: a pipeline activity's steps share its seq prefix (``2.3.x`` for the
    plan's fourth activity), an agent call names its agent."""

    def __init__(self) -> None:
        self._prefixes: dict[str, str] = {}
        self._agents: dict[str, str] = {}

    def learn(self, event: Event) -> None:
        """Take what ``event`` says about its step's name."""
        seq = event.seq
        if seq is None:
            return
        entry = pipeline_entry(event)
        if entry is not None and entry.get("event") == "activity" and entry.get("id"):
            self._prefixes[seq.rpartition(".")[0]] = str(entry["id"])
        if event.type == "activity_scheduled" and event.data.get("name") == "taskloom.agent":
            args = event.data.get("args") or []
            if args and isinstance(args[0], str):
                self._agents[seq] = args[0].removeprefix(_INTERNAL)

    def name(self, seq: str | None) -> str:
        """The activity or agent of step ``seq`` (``""`` if unknown)."""
        if seq is None:
            return ""
        prefix = seq.rpartition(".")[0]
        while prefix:
            if prefix in self._prefixes:
                return self._prefixes[prefix]
            prefix = prefix.rpartition(".")[0]
        return self._agents.get(seq, "")

    def agent(self, seq: str | None) -> str:
        """The agent step ``seq`` calls (``""`` if it calls none)."""
        return self._agents.get(seq or "", "")


def history_header() -> str:
    """The header of :func:`history_line`'s columns."""
    return f"{'time':>9}  {'step':<8}  {'activity':<16}  what happened"


def history_line(event: Event, steps: StepNames, start_ms: int) -> str:
    """One log event as a line under :func:`history_header` (call ``steps.learn(event)``
    first)."""
    at = f"+{duration(event_ms(event) - start_ms)}" if start_ms else ""
    name = clip(steps.name(event.seq), 16)
    what = _what(event, steps)
    if name and what.startswith(f"{name}: "):  # a pipeline line names its activity
        what = what[len(name) + 2 :]
    return f"{at:>9}  {event.seq or '':<8}  {name:<16}  {one_line(what, 160)}"


def _what(event: Event, steps: StepNames) -> str:
    d = event.data
    entry = pipeline_entry(event)
    if entry is not None:
        return describe(entry)
    match event.type:
        case "run_created":
            return f"run created ({d.get('workflow', '')})"
        case "activity_scheduled":
            agent = steps.agent(event.seq)
            return f"asked agent {agent}" if agent else f"scheduled {d.get('name')}"
        case "activity_completed":
            agent = steps.agent(event.seq)
            what = f"agent {agent} answered" if agent else f"completed {d.get('name', '')}"
            return f"{what}{_cost(d.get('result'))}"
        case "activity_failed":
            error = d.get("error") or {}
            return (
                f"FAILED {d.get('name', '')}: {error.get('type', '')}: {error.get('message', '')}"
            )
        case "value_recorded":
            return f"recorded {d.get('name', '')}: {one_line(d.get('value'), 60)}"
        case "human_task_created":
            task = d.get("task") or {}
            return f"waits on a person: {one_line(task.get('title', ''), 80)}"
        case "human_decided":
            result = d.get("result") or {}
            return f"{result.get('by', 'someone')} decided {result.get('decision')}"
        case "run_completed":
            return "run completed"
        case "run_failed":
            error = d.get("error") or {}
            return f"run FAILED: {error.get('type')}: {error.get('message')}"
        case _:
            return event.type.replace("_", " ")


def _cost(result: Any) -> str:
    """`` in 0.4s, 186 tokens, $0.0001, served by …`` for an agent's result; the verdict
    for a verification's; else ``""``."""
    if not isinstance(result, dict):
        return ""
    parts = []
    if isinstance(result.get("seconds"), int | float):
        parts.append(f"in {result['seconds']:.1f}s")
    usage = result.get("usage")
    if isinstance(usage, dict):
        parts.append(f"{sum(v for v in usage.values() if isinstance(v, int))} tokens")
    if isinstance(result.get("cost_usd"), int | float) and "usage" in result:
        parts.append(f"${result['cost_usd']:.4f}")
    if "verdicts" in result and isinstance(result.get("status"), str):
        parts.append(f"verdict {result['status']}")
    served = served_by(result)
    if served:
        parts.append(f"served by {', '.join(served)}")
    return f": {', '.join(parts)}" if parts else ""


@dataclass
class ActivitySummary:
    """One activity of a pipeline run, as ``taskloom status`` shows it."""

    id: str
    role: str = ""
    state: str = "queued"
    attempts: int = 0
    started_ms: int = 0
    ended_ms: int = 0
    verdict: str = ""
    tokens: int = 0
    cost_usd: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The form ``status --json`` adds under ``activities``."""
        took = self.ended_ms - self.started_ms if self.started_ms and self.ended_ms else None
        return {
            "id": self.id,
            "role": self.role,
            "state": self.state,
            "attempts": self.attempts,
            "seconds": took / 1000 if took is not None else None,
            "verdict": self.verdict or None,
            "tokens": self.tokens,
            "cost_usd": self.cost_usd,
        }

    def cells(self, now_ms: int) -> list[str]:
        """The row ``taskloom status`` prints."""
        took = ""
        if self.started_ms:
            took = duration((self.ended_ms or now_ms) - self.started_ms)
        return [
            self.id,
            self.role,
            self.state,
            str(self.attempts or ""),
            took,
            self.verdict,
            str(self.tokens or ""),
            f"${self.cost_usd:.4f}" if self.cost_usd else "",
        ]


SUMMARY_HEADER = ("activity", "role", "state", "attempts", "time", "verdict", "tokens", "cost")
_ENDED = {"accepted": "done", "reused": "done", "blocked": "failed", "cancelled": "cancelled"}


def activity_summaries(events: Iterable[Event]) -> list[ActivitySummary]:
    """Each activity of the run's latest plan, folded from its pipeline events (empty for
    a run that is not a pipeline)."""
    rows: dict[str, ActivitySummary] = {}
    for event in events:
        entry = pipeline_entry(event)
        if entry is None:
            continue
        if entry.get("event") == "planned":
            acts = (entry.get("plan") or {}).get("activities") or []
            rows = {
                a["id"]: rows.get(a["id"]) or ActivitySummary(a["id"], role=str(a.get("role", "")))
                for a in acts
            }
        elif entry.get("event") == "activity" and entry.get("id") in rows:
            _fold(rows[entry["id"]], entry, event_ms(event))
    return list(rows.values())


def _fold(row: ActivitySummary, entry: dict[str, Any], at: int) -> None:
    state = str(entry.get("state"))
    if state == "started" and entry.get("go", True):
        row.started_ms = row.started_ms or at
        row.attempts = max(row.attempts, int(entry.get("attempt") or row.attempts + 1))
        row.state = "running"
    elif state == "verified":
        row.verdict = str(entry.get("status", ""))
        row.state = "verifying"
    elif state == "accepted":
        row.tokens, row.cost_usd = int(entry.get("tokens", 0)), float(entry.get("cost_usd", 0))
        row.verdict = str(entry.get("status") or row.verdict)  # accepted by its verifiers
    elif state in ("retrying", "escalated", "decided", "decomposed"):
        row.state = {"decomposed": "sub-plan"}.get(state, state)
    if state in _ENDED:
        row.state, row.ended_ms = _ENDED[state], row.ended_ms or at
