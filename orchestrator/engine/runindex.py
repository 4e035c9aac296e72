"""Runs newest first, page by page, from the status indexes (sorted sets scored by the
time of each run's last status change): no SCAN, however many runs there are.

::

    index = RunIndex(store)
    page = await index.page(statuses=["failed"], limit=50)
    for entry in page.entries:
        entry.info.run_id, entry.input           # RunInfo and the recorded input
    more = await index.page(statuses=["failed"], after=page.next, limit=50)

A cursor (``page.next``) is the last entry's score and run id: the next page starts
strictly after it, so paging stays right while new runs arrive at the top. A run whose
status changes between two pages moves to the top of its new index, so it may be
missed or shown twice by a reader paging at that moment, as in any list of live runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from taskloom.engine import serde
from taskloom.engine.keys import STATUSES
from taskloom.engine.store import RunInfo, Store
from taskloom.errors import UserError

__all__ = ["IndexedRun", "RunIndex", "RunsPage", "parse_cursor"]

_TIES = 1000
"""Runs indexed in the same millisecond that one page boundary can step over."""


@dataclass(frozen=True)
class IndexedRun:
    """One run of a page: its metadata, its recorded input, where the index had it."""

    info: RunInfo
    input: Any
    """The decoded input (``{"args": [...], "kwargs": {...}}``, or a blob reference)."""
    cursor: str
    """The cursor of a page that starts just after this run."""


@dataclass(frozen=True)
class RunsPage:
    """Runs in index order, and the cursor of the next page (``None``: no more)."""

    entries: list[IndexedRun]
    next: str | None


def parse_cursor(cursor: str) -> tuple[int, str]:
    """``(score, run_id)`` of a cursor; a :class:`UserError` if it is not one."""
    score, sep, run_id = cursor.partition(":")
    if not sep or not run_id or not score.isdigit():
        raise UserError(f"{cursor!r} is not a page cursor (it looks like 1712345678901:RUN_ID)")
    return int(score), run_id


class RunIndex:
    """Pages through the status indexes of ``store``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def page(
        self, *, statuses: Sequence[str] = STATUSES, after: str | None = None, limit: int = 50
    ) -> RunsPage:
        """Up to ``limit`` runs with one of ``statuses``, newest status change first,
        starting after cursor ``after`` (``None``: from the newest)."""
        unknown = [s for s in statuses if s not in STATUSES]
        if unknown or not statuses:
            raise UserError(f"unknown status {unknown}; choose from {', '.join(STATUSES)}")
        if limit < 1:
            raise UserError(f"a page holds at least one run (limit={limit})")
        ranked, more = await self._ranked(statuses, after, limit)
        pipe = self.store.raw.pipeline(transaction=False)
        for _, run_id, _ in ranked:
            pipe.hgetall(self.store.keys.meta(run_id))
        entries = []
        for (score, run_id, _status), meta in zip(ranked, await pipe.execute(), strict=True):
            cursor = f"{score}:{run_id}"
            if not meta or meta.get("status") not in statuses:
                continue  # gone since, or the index lags a status change
            raw = meta.get("input") or ""
            entries.append(
                IndexedRun(RunInfo.from_meta(meta), serde.loads(raw) if raw else None, cursor)
            )
        last = f"{ranked[-1][0]}:{ranked[-1][1]}" if ranked else None
        return RunsPage(entries, last if more else None)

    async def _ranked(
        self, statuses: Sequence[str], after: str | None, limit: int
    ) -> tuple[list[tuple[int, str, str]], bool]:
        """The next ``limit`` (score, run id, status) over the indexes, and whether any
        index holds more after them."""
        keys = [self.store.keys.index(s) for s in statuses]
        pipe = self.store.raw.pipeline(transaction=False)
        if after is None:
            for key in keys:
                pipe.zrevrangebyscore(key, "+inf", "-inf", start=0, num=limit + 1, withscores=True)
        else:
            score, run_id = parse_cursor(after)
            for key in keys:  # the same millisecond's runs after the cursor's, then older
                pipe.zrevrangebyscore(key, score, score, start=0, num=_TIES, withscores=True)
                pipe.zrevrangebyscore(
                    key, f"({score}", "-inf", start=0, num=limit + 1, withscores=True
                )
        replies = await pipe.execute()
        found: list[tuple[int, str, str]] = []
        per_key = 1 if after is None else 2
        for i, status in enumerate(statuses):
            for rows in replies[i * per_key : (i + 1) * per_key]:
                found.extend((int(s), member, status) for member, s in rows)
        if after is not None:
            score, run_id = parse_cursor(after)
            found = [f for f in found if f[0] < score or f[1] < run_id]
        found.sort(reverse=True)
        return found[:limit], len(found) > limit
