"""Following a pipeline run in the terminal: its decisions as readable lines, and its
escalations answered in place (or left in the inbox).

Used by ``taskloom demo`` and ``taskloom run``::

    outcome = await follow(orch, handle, ask=prompt_in_terminal)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from taskloom.client import Orchestrator, RunHandle
from taskloom.display import clip, one_line
from taskloom.engine.human import HumanTask
from taskloom.errors import HumanTaskClosedError, RunCancelledError, RunFailedError, UserError
from taskloom.pipeline.edits import editable
from taskloom.pipeline.entries import pipeline_events

if TYPE_CHECKING:
    from taskloom.terminal.liveview import LiveView

__all__ = [
    "Answer",
    "Asker",
    "Followed",
    "auto_approve",
    "describe",
    "follow",
    "prompt_in_terminal",
]


@dataclass(frozen=True)
class Answer:
    """A decision on an inbox item, as a person gave it at the terminal."""

    decision: str
    note: str = ""
    data: Any = None


Asker = Callable[[HumanTask], Awaitable[Answer | None]]
"""Shown an open item, returns a decision (``None``: leave it in the inbox)."""


@dataclass(frozen=True)
class Followed:
    """How a followed run ended."""

    status: str
    """``completed``, ``failed``, ``cancelled`` or ``waiting`` (on a person)."""
    result: Any = None
    error: str = ""


def describe(event: dict[str, Any]) -> str:
    """One pipeline event as a line a person can read."""
    kind = event.get("event")
    if kind == "planned":
        acts = event["plan"]["activities"]
        edges = sum(len(a.get("inputs", [])) for a in acts)
        return f"plan v{event['version']} by {event['by']}: {len(acts)} activities, {edges} links"
    if kind == "plan_invalid":
        return f"plan refused (turn {event['attempt']}): {clip('; '.join(event['problems']), 160)}"
    if kind == "replanned":
        return (
            f"re-planned to v{event['version']}: reused {sorted(event['reused'])}, "
            f"dropped {event['dropped']}"
        )
    if kind == "integrated":
        return f"integrated {len(event['inputs'])} outputs: final check {event['status']}"
    if kind == "cross_check":
        return f"outputs disagree: {', '.join(event['activities'])}"
    if kind != "activity":
        return str(kind)
    state, name = event.get("state"), event.get("id")
    details = {
        "started": f"attempt {event.get('attempt')}" if event.get("go", True) else "stopped",
        "verified": f"verification {event.get('status')}",
        "retrying": f"retrying: {one_line(event.get('feedback', ''), 120)}",
        "escalated": f"needs a person: {one_line(event.get('reason', ''), 120)}",
        "decided": f"{event.get('by')} decided {event.get('decision')}",
        "accepted": (
            f"accepted ({event.get('by')}): verification {event['status']}"
            if event.get("status")
            else f"accepted ({event.get('by')})"
        ),
        "blocked": f"blocked by {event.get('by')}",
        "reused": "reused from the previous plan",
        "decomposed": f"split into a sub-plan: {event.get('why')}",
    }
    return f"{name}: {details.get(str(state), state)}"


class _Screen:
    """Where a followed run shows: a live table on a terminal, else lines."""

    def __init__(self, out: TextIO, *, live: bool, goal: str) -> None:
        self.out, self.t0 = out, time.monotonic()
        self.view: LiveView | None = None
        if live:  # rich loads only for a live view (`status` and `history` print plain)
            from taskloom.terminal.liveview import LiveView

            self.view = LiveView(goal, out)

    def say(self, text: str) -> None:
        if self.view is not None:
            self.view.print(text)
        else:
            print(f"  {time.monotonic() - self.t0:6.2f}s  {text}", file=self.out, flush=True)

    def show(self, event: dict[str, Any]) -> None:
        if self.view is not None:
            self.view.update(event)
        else:
            self.say(describe(event))

    async def answer(self, orch: Orchestrator, item: HumanTask, ask: Asker) -> None:
        with self.view.paused() if self.view is not None else contextlib.nullcontext():
            await _answer(orch, item, ask, self.say)


async def follow(
    orch: Orchestrator,
    handle: RunHandle,
    *,
    ask: Asker | None,
    out: TextIO = sys.stdout,
    live: bool | None = None,
    goal: str = "",
) -> Followed:
    """Show the run's pipeline events as they happen (a live table on a terminal, or
    lines) and answer its escalations with ``ask`` (``None``: leave them in the inbox
    and return ``waiting``)."""
    screen = _Screen(out, live=out.isatty() if live is None else live, goal=goal)

    async def narrate() -> None:
        async for event in pipeline_events(handle):
            screen.show(event)

    with screen.view or contextlib.nullcontext():
        narrator = asyncio.create_task(narrate())
        result = asyncio.create_task(handle.result())
        try:
            while not result.done():
                # A client-side loop: the run's escalations (its children's too) are read
                # from the inbox index a few times a second, only while the command runs.
                mine = await orch.human_tasks.list(
                    run_id=handle.run_id, children=True, limit=10_000
                )
                if mine:
                    if ask is None:
                        return Followed("waiting")
                    for item in mine:
                        await screen.answer(orch, item, ask)
                await asyncio.wait({result}, timeout=0.2)
            await asyncio.sleep(0.05)  # let the last events reach the screen
            return _ended(result)
        finally:
            for job in (narrator, result):
                job.cancel()
            await asyncio.gather(narrator, result, return_exceptions=True)


def _ended(result: asyncio.Task[Any]) -> Followed:
    try:
        return Followed("completed", result.result())
    except RunCancelledError as exc:
        return Followed("cancelled", error=str(exc))
    except RunFailedError as exc:
        return Followed("failed", error=str(exc))


async def _answer(
    orch: Orchestrator, task: HumanTask, ask: Asker, say: Callable[[str], None]
) -> None:
    answer = await ask(task)
    if answer is None:
        return
    try:
        await orch.human_tasks.decide(
            task.id, answer.decision, by="terminal", note=answer.note, data=answer.data
        )
    except HumanTaskClosedError:
        return  # decided meanwhile (the web inbox, an SLA fallback)
    say(f"{answer.note or 'you'}: {answer.decision} ({task.id})")


async def auto_approve(task: HumanTask) -> Answer:
    """``--yes``: approve where that is offered, else reject (never ``edit`` or
    ``retry``, which would only ask again), else the item's first decision."""
    offered = task.decisions
    choice = next((d for d in ("approve", "reject") if d in offered), offered[0])
    return Answer(choice, note="auto-answered (--yes, or no terminal to ask in)")


def show(task: HumanTask, out: TextIO = sys.stdout) -> None:
    """An item, as the terminal shows it before asking."""
    ctx = task.context if isinstance(task.context, dict) else {"context": task.context}
    print(f"\n  ? {task.title}", file=out)
    if "output" in ctx:
        text = ctx["output"] if isinstance(ctx["output"], str) else json.dumps(ctx["output"])
        print(f"    output:   {clip(text, 300)}", file=out)
    if ctx.get("last_output"):  # what the model answered, though it never validated
        print(f"    answered: {clip(str(ctx['last_output']), 300)}", file=out)
    if ctx.get("problems"):  # why the planner's plans were refused
        print(f"    why:      {clip(str(ctx['problems']), 400)}", file=out)
    if "last_plan" in ctx:
        print(f"    plan:     {clip(json.dumps(ctx['last_plan']), 300)}", file=out)
        print(
            f"    edit takes a plan as JSON; `taskloom inbox edit {task.id}` opens this one "
            f"in $EDITOR",
            file=out,
        )
    for verdict in [v for v in ctx.get("verdicts") or [] if v.get("status") != "pass"]:
        reasons = "; ".join(verdict.get("reasons") or [])
        print(
            f"    verdict:  {verdict.get('verifier')} {verdict.get('status')} {reasons}", file=out
        )
    print(f"    choices:  {', '.join(task.decisions)}", file=out, flush=True)


def prompt_in_terminal(read: Callable[[str], str] = input, out: TextIO = sys.stdout) -> Asker:
    """An :data:`Asker` that shows the item and reads the decision from the terminal
    (``edit`` asks for the new output; blank: leave the item in the inbox)."""

    async def ask(task: HumanTask) -> Answer | None:
        show(task, out)
        while True:
            line = (await asyncio.to_thread(read, "    decide> ")).strip()
            if not line:
                return None
            decision, _, note = line.partition(" ")
            if decision not in task.decisions:
                print(f"    choose one of: {', '.join(task.decisions)}", file=out)
                continue
            if decision == "edit":  # checked as `taskloom inbox edit` checks it
                try:
                    target = editable(task)
                except UserError as exc:
                    print(f"    {exc}", file=out)
                    continue
                text = await asyncio.to_thread(read, f"    new {target.field}> ")
                value, problems = target.parse(text)
                if problems:
                    print(f"    not taken: {'; '.join(problems)}", file=out)
                    continue
                return Answer("edit", note=note, data={target.field: value})
            return Answer(decision, note=note)

    return ask
