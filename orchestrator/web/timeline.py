"""A run's log for its page: each event, and each of the pipeline's recorded decisions,
as a row a person reads (the run page's graph and timeline come from
:mod:`taskloom.pipeline.progress`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from taskloom.display import one_line
from taskloom.engine.store import Event
from taskloom.pipeline.entries import pipeline_entry

__all__ = ["Row", "event_row", "pipeline_text"]

_LIMIT = 160


@dataclass(frozen=True)
class Row:
    """One line of the timeline."""

    ts_ms: int | None
    kind: str
    """A short class for styling: run, activity, human, pipeline, timer, child, other."""
    text: str
    task_id: str | None = None
    """The inbox item the row is about (to link to it)."""
    detail: str = ""


def short(value: Any, limit: int = _LIMIT) -> str:
    """``value`` as one line of at most ``limit`` characters."""
    return one_line(value, limit)


def event_row(event: Event) -> Row:
    """The timeline row of one log event."""
    d, t = event.data, event.type
    ts = d.get("ts") if isinstance(d.get("ts"), int) else None
    step = f"step {event.seq}: " if event.seq is not None else ""
    if t.startswith("activity_"):
        return _activity_row(t, d, ts, step)
    if t.startswith("human_"):
        return _human_row(t, d, ts, step)
    if t.startswith("run_"):
        return _run_row(t, d, ts)
    entry = pipeline_entry(event)
    if entry is not None:
        return Row(ts, "pipeline", pipeline_text(entry))
    match t:
        case "timer_started" | "timer_fired":
            return Row(ts, "timer", f"{step}{t.replace('_', ' ')}")
        case "child_started":
            return Row(ts, "child", f"{step}child run {d.get('child_id')} ({d.get('workflow')})")
        case _:
            return Row(ts, "other", f"{step}{t.replace('_', ' ')}")


def _activity_row(t: str, d: dict[str, Any], ts: int | None, step: str) -> Row:
    name = d.get("name", "activity")
    match t:
        case "activity_scheduled":
            return Row(ts, "activity", f"{step}{name} scheduled")
        case "activity_completed":
            return Row(ts, "activity", f"{step}{name} completed", detail=short(d.get("result")))
        case "activity_failed" | "activity_retrying":
            message = (d.get("error") or {}).get("message", "")
            verb = "failed" if t == "activity_failed" else "will be retried"
            return Row(ts, "activity", f"{step}{name} {verb}", detail=short(message))
        case _:
            return Row(ts, "activity", f"{step}{name}: {t.removeprefix('activity_')}")


def _human_row(t: str, d: dict[str, Any], ts: int | None, step: str) -> Row:
    if t == "human_task_created":
        task = d.get("task") or {}
        who = f" for {task['assignee']}" if task.get("assignee") else ""
        text = f"{step}escalated{who}: {short(task.get('title', ''))}"
        return Row(ts, "human", text, task.get("id"))
    if t == "human_decided":
        r = d.get("result") or {}
        note = f" ({short(r['note'], 80)})" if r.get("note") else ""
        text = f"{step}decided {r.get('decision')!r} by {r.get('by')}{note}"
        return Row(ts, "human", text, d.get("task_id"))
    message = (d.get("error") or {}).get("message", "")
    return Row(ts, "human", f"{step}no decision: {short(message)}", d.get("task_id"))


def _run_row(t: str, d: dict[str, Any], ts: int | None) -> Row:
    match t:
        case "run_created":
            return Row(ts, "run", f"run created ({d.get('workflow', '')})")
        case "run_completed":
            return Row(ts, "run", "run completed", detail=short(d.get("result")))
        case "run_failed":
            err = d.get("error") or {}
            return Row(
                ts, "run", f"run FAILED: {err.get('type')}", detail=short(err.get("message"))
            )
        case _:
            return Row(ts, "run", t.replace("_", " "))


def pipeline_text(entry: dict[str, Any]) -> str:
    """One recorded pipeline decision (from ``pipeline_events``) in words."""
    match entry.get("event"):
        case "planned":
            acts = (entry.get("plan") or {}).get("activities") or []
            ids = ", ".join(str(a.get("id")) for a in acts)
            return (
                f"plan v{entry.get('version')} by {entry.get('by')}: {len(acts)} activities ({ids})"
            )
        case "plan_invalid":
            problems = "; ".join(map(str, entry.get("problems") or []))
            return f"plan attempt {entry.get('attempt')} invalid: {short(problems)}"
        case "replanned":
            parts = (
                f"{k} {', '.join(entry.get(k) or []) or '-'}"
                for k in ("reused", "added", "dropped")
            )
            return f"re-planned to v{entry.get('version')}: " + "; ".join(parts)
        case "cross_check":
            reasons = "; ".join(
                r for v in entry.get("verdicts") or [] for r in v.get("reasons", [])
            )
            return (
                f"cross-check flagged {', '.join(entry.get('activities') or [])}: {short(reasons)}"
            )
        case "integrated":
            inputs = ", ".join(entry.get("inputs") or [])
            return f"integrated {inputs}: verification {entry.get('status')}"
        case "activity":
            return _activity_text(entry)
        case other:
            return f"{other}: {short({k: v for k, v in entry.items() if k != 'event'})}"


def _activity_text(e: dict[str, Any]) -> str:
    head = f"activity {e.get('id')}: {e.get('state')}"
    match e.get("state"):
        case "started":
            return f"{head} (attempt {e.get('attempt')})"
        case "verified":
            return f"{head} {e.get('status')} (attempt {e.get('attempt')})"
        case "retrying":
            return f"{head} with feedback: {short(e.get('feedback') or '')}"
        case "escalated":
            return f"{head}: {short(e.get('reason') or '')}"
        case "decided":
            return f"{head} {e.get('decision')!r} by {e.get('by')}"
        case "accepted" if e.get("status"):  # by its verifiers: the verdict is here too
            verified = f"verification {e.get('status')} (attempt {e.get('attempt')})"
            return f"{head} (by {e.get('by')}): {verified}"
        case "accepted":
            return f"{head} (by {e.get('by')})"
        case "blocked":
            return f"{head} (waiting on {', '.join(e.get('by') or [])})"
        case "decomposed":
            return f"{head}: {short(e.get('why') or '')}"
        case _:
            return head
