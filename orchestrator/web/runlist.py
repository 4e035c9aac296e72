"""The runs list: each run's goal, status, template, tokens, cost, start and duration,
newest first, found by text and status, page by page from the status indexes
(:class:`~taskloom.engine.runindex.RunIndex`: no SCAN).

A text search reads the index newest first and keeps the runs whose goal, id, workflow
or template contain the text, up to :data:`SCAN_LIMIT` runs per request; past that the
page says how far it looked and offers the rest from where it stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from taskloom.client import Orchestrator
from taskloom.display import one_line
from taskloom.engine.keys import STATUSES, TERMINAL_STATUSES
from taskloom.engine.payloads import Payloads
from taskloom.engine.runindex import IndexedRun, RunIndex
from taskloom.pipeline.entries import PIPELINE_NAME

__all__ = ["PAGE_SIZE", "SCAN_LIMIT", "RunAbout", "RunRow", "RunsFound", "describe", "find_runs"]

PAGE_SIZE = 50
SCAN_LIMIT = 1000
"""Runs a text search reads per request before it offers to go on."""


@dataclass(frozen=True)
class RunAbout:
    """What a run was asked, from its recorded input."""

    goal: str = ""
    """A pipeline's goal (``""`` for another workflow)."""
    arguments: str = ""
    """Another workflow's arguments, on one line."""
    template: str = ""
    model: str = ""
    previous: str = ""
    """The run it follows up or re-runs."""
    rerun: tuple[str, ...] = ()
    """The activities of ``previous`` it re-runs from."""

    def words(self) -> str:
        """The text a search looks in."""
        return " ".join((self.goal, self.arguments, self.template, self.model, self.previous))


@dataclass(frozen=True)
class RunRow:
    """One run of the list."""

    run_id: str
    workflow: str
    status: str
    about: RunAbout
    tokens: int
    cost_usd: Decimal
    created_ms: int
    ended_ms: int | None
    """When it ended (``None``: it has not)."""
    parent: str | None

    def duration_ms(self, now_ms: int) -> int:
        """How long it ran, or has been running."""
        return (self.ended_ms or now_ms) - self.created_ms


@dataclass(frozen=True)
class RunsFound:
    """A page of the list, and where the next one starts."""

    rows: list[RunRow]
    next: str | None
    scanned: int
    """Runs read to find these (more than the rows for a text search)."""
    stopped: bool
    """The search stopped at :data:`SCAN_LIMIT` runs read, not at the end of the list."""


def describe(workflow: str, value: Any) -> RunAbout:
    """What a run was asked, from its recorded input (decoded): a pipeline's request,
    or the workflow's arguments on one line."""
    args = value.get("args") if isinstance(value, dict) else None
    if workflow == PIPELINE_NAME and args and isinstance(args[0], dict):
        request = args[0]
        template = request.get("template") or {}
        return RunAbout(
            goal=str(request.get("goal", "")),
            template=str(template.get("name", "") if isinstance(template, dict) else ""),
            model=str(request.get("model") or ""),
            previous=str(request.get("previous") or ""),
            rerun=tuple(map(str, request.get("rerun") or ())),
        )
    return RunAbout(arguments=one_line(args, 200) if args else "")


async def find_runs(
    orch: Orchestrator,
    payloads: Payloads,
    *,
    statuses: Sequence[str] = STATUSES,
    text: str = "",
    after: str | None = None,
    limit: int = PAGE_SIZE,
) -> RunsFound:
    """Up to ``limit`` runs with one of ``statuses`` whose goal, id, workflow or
    template contains ``text`` (any case), after cursor ``after``."""
    index = RunIndex(orch.store)
    needle = text.strip().casefold()
    found: list[tuple[IndexedRun, RunAbout]] = []
    cursor, scanned = after, 0
    while True:
        batch = min(max(limit, 100), SCAN_LIMIT - scanned) if needle else limit
        page = await index.page(statuses=statuses, after=cursor, limit=batch)
        for i, entry in enumerate(page.entries):
            scanned += 1
            info = entry.info
            about = describe(info.workflow, await payloads.unpack(entry.input))
            hay = " ".join((about.words(), info.run_id, info.workflow)).casefold()
            if needle in hay:
                found.append((entry, about))
                if len(found) == limit:
                    last = i == len(page.entries) - 1
                    after_it = page.next if last else entry.cursor
                    return await _rows(orch, found, after_it, scanned, stopped=False)
        cursor = page.next
        if cursor is None or not needle or scanned >= SCAN_LIMIT:
            stopped = cursor is not None and bool(needle)
            return await _rows(orch, found, cursor, scanned, stopped=stopped)


async def _rows(
    orch: Orchestrator,
    found: list[tuple[IndexedRun, RunAbout]],
    cursor: str | None,
    scanned: int,
    *,
    stopped: bool,
) -> RunsFound:
    usages = await asyncio.gather(*(orch.budget(e.info.run_id) for e, _ in found))
    rows = []
    for (entry, about), usage in zip(found, usages, strict=True):
        info = entry.info
        rows.append(
            RunRow(
                run_id=info.run_id,
                workflow=info.workflow,
                status=info.status,
                about=about,
                tokens=usage.spent_tokens,
                cost_usd=usage.spent_usd,
                created_ms=info.created_ms,
                ended_ms=info.updated_ms if info.status in TERMINAL_STATUSES else None,
                parent=(info.parent or {}).get("run_id"),
            )
        )
    return RunsFound(rows, cursor, scanned, stopped)
