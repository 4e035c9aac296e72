"""The live view of a pipeline run in a terminal (rich): the plan, each activity's state
with its elapsed time, tokens and cost, and the totals, redrawn in place as the run's
events arrive. Without a terminal, :mod:`taskloom.terminal.console` prints lines instead.

Every piece of text it shows (the goal, ids, roles, notes, lines above the table) goes
in as :class:`rich.text.Text`, never as markup: a goal or a model's answer holding
``[/]`` or ``[bold]`` is shown as written."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from taskloom.display import clip, one_line
from taskloom.pipeline.plan import Plan, levels

__all__ = ["LiveView"]

_STATE = {
    "started": "running",
    "verified": "verifying",
    "retrying": "retrying",
    "escalated": "escalated",
    "decided": "decided",
    "accepted": "done",
    "blocked": "failed",
    "cancelled": "cancelled",
    "reused": "done",
    "decomposed": "sub-plan",
}
NOTE_LIMIT = 80
"""The most of a note the live view shows (the decision prompt shows all of it)."""

_STYLE = {  # one for every state a row can show: "queued" and each of _STATE's
    "queued": "dim",
    "running": "cyan",
    "verifying": "blue",
    "retrying": "yellow",
    "escalated": "bold magenta",
    "decided": "magenta",
    "done": "green",
    "failed": "red",
    "cancelled": "dim",
    "sub-plan": "cyan",
}


@dataclass
class _Row:
    role: str
    needs: list[str]
    level: int = 0
    state: str = "queued"
    started: float | None = None
    ended: float | None = None
    attempt: int = 0
    tokens: int = 0
    cost: float = 0.0
    note: str = ""


@dataclass
class LiveView:
    """Feed it pipeline events (:meth:`update`); it redraws the table."""

    goal: str
    out: TextIO
    rows: dict[str, _Row] = field(default_factory=dict)
    header: str = "planning..."
    t0: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        # get_renderable: each refresh renders anew, so the clocks tick between events
        # (a table built once per event showed 0.0s all through planning)
        self._live = Live(
            console=Console(file=self.out),
            refresh_per_second=8,
            transient=False,
            get_renderable=self.render,
        )

    def __enter__(self) -> LiveView:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.refresh()
        self._live.stop()

    def print(self, text: str) -> None:
        """A line above the table, as written (no markup)."""
        self._live.console.print(Text(text))

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The table stopped meanwhile (a prompt needs the terminal)."""
        self._live.stop()
        try:
            yield
        finally:
            self._live.start()

    def update(self, event: dict[str, Any]) -> None:
        """Apply one pipeline event and redraw."""
        kind = event.get("event")
        now = time.monotonic()
        if kind == "planned":
            self.header = f"plan v{event['version']} ({event['by']})"
            rows: dict[str, _Row] = {}
            for act in event["plan"]["activities"]:
                old = self.rows.get(act["id"])
                rows[act["id"]] = (
                    old
                    if old is not None and old.state == "done"
                    else _Row(act["role"], list(act.get("inputs", [])))
                )
            self.rows = _as_tree(rows, Plan.model_validate(event["plan"]))
        elif kind == "integrated":
            self.header = f"integrated: final check {event['status']}"
        elif kind == "activity" and event.get("id") in self.rows:
            self._activity(self.rows[event["id"]], event, now)
        # no refresh here: the refresh thread draws the change within 1/8 s, and the
        # event loop never writes to (nor waits on) the terminal

    def _activity(self, row: _Row, event: dict[str, Any], now: float) -> None:
        state = str(event.get("state"))
        if state == "started" and event.get("go", True):
            row.started = row.started or now
            row.attempt = int(event.get("attempt") or row.attempt + 1)
        row.state = _STATE.get(state, row.state)
        if state == "retrying":
            row.note = one_line(event.get("feedback", ""), 60)
        elif state == "escalated":
            row.note = one_line(event.get("reason", ""), 60)
        elif state == "accepted":
            row.tokens, row.cost = int(event.get("tokens", 0)), float(event.get("cost_usd", 0))
            row.note = f"by {event.get('by')}"
        elif state == "reused":
            row.note = "reused: no new call"
        elif state == "decided":
            row.note = f"{event.get('by')}: {event.get('decision')}"
        if row.state in ("done", "failed", "cancelled"):
            row.ended = row.ended or now

    def render(self) -> Table:
        """The table as it stands."""
        goal = one_line(self.goal, 70) or "(no goal given)"
        title = Text(f"{goal} — {self.header}")
        table = Table(title=title, title_justify="left")
        for name in ("activity", "role", "needs", "state", "try", "time", "tokens", "cost", "note"):
            # the note (at most NOTE_LIMIT characters: the full reasons are shown where a
            # person decides) and the inputs wrap, sharing what the other columns leave
            table.add_column(name, no_wrap=name not in ("needs", "note"))
        now = time.monotonic()
        for act_id, row in self.rows.items():
            elapsed = ""
            if row.started is not None:
                elapsed = f"{(row.ended or now) - row.started:5.1f}s"
            cells = (
                ("  " * row.level + ("└ " if row.level else "")) + act_id,
                row.role,
                ", ".join(row.needs),
                row.state,
                str(row.attempt or ""),
                elapsed,
                str(row.tokens or ""),
                f"${row.cost:.4f}" if row.cost else "",
                clip(row.note, NOTE_LIMIT),
            )
            table.add_row(
                *(Text(c, style=_STYLE.get(c, "") if i == 3 else "") for i, c in enumerate(cells))
            )
        done = sum(1 for r in self.rows.values() if r.state == "done")
        table.caption = Text(
            f"{done}/{len(self.rows)} done, {sum(r.tokens for r in self.rows.values())} tokens, "
            f"${sum(r.cost for r in self.rows.values()):.4f}, {now - self.t0:.1f}s"
        )
        return table


def _as_tree(rows: dict[str, _Row], plan: Plan) -> dict[str, _Row]:
    """The plan's rows, each under the deepest of its inputs (levels as the plan's
    validation computes them), siblings in the plan's order."""
    for act_id, level in levels(plan).items():
        rows[act_id].level = level
    order = {act_id: i for i, act_id in enumerate(rows)}
    return dict(sorted(rows.items(), key=lambda kv: [order[i] for i in _path(kv[0], rows)]))


def _path(act_id: str, rows: dict[str, _Row]) -> list[str]:
    """Sort key: the chain of deepest inputs down to the activity (children follow
    their parent, siblings keep the plan's order)."""
    chain = [act_id]
    while rows[chain[-1]].needs and len(chain) <= len(rows):
        needs = rows[chain[-1]].needs[::-1]  # ties: the last input, so it follows them all
        parent = max(needs, key=lambda d: rows[d].level if d in rows else -1)
        if parent not in rows:
            break
        chain.append(parent)
    return chain[::-1]
