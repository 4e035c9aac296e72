"""``taskloom dlq``: list, show, redrive and purge the dead-letter queue's entries."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from taskloom.cliargs import MAX_LIMIT, int_in
from taskloom.client import Orchestrator
from taskloom.errors import RunNotFoundError, UserError
from taskloom.terminal import runview
from taskloom.terminal.output import out, short

if TYPE_CHECKING:
    from taskloom.terminal.cli import Command

__all__ = ["register"]


def register(cmd: Command) -> None:
    """Add the ``dlq`` command to the CLI."""
    q = cmd("dlq", _dlq, "the dead-letter queue: activities that failed for good")
    q.add_argument("action", choices=("list", "show", "redrive", "purge"))
    q.add_argument("ids", nargs="*", metavar="ID", help="entry ids (RUN_ID/SEQ)")
    q.add_argument("--all", action="store_true", help="redrive or purge every entry (of --run)")
    q.add_argument("--run", help="only this run's entries")
    q.add_argument("--limit", type=int_in(1, MAX_LIMIT), default=100)
    q.add_argument(
        "--completed",
        action="store_true",
        help="list also the entries of runs that completed anyway (hidden by default)",
    )
    q.add_argument("--json", action="store_true", help="every entry, with its run's status")


async def _dlq(args: argparse.Namespace, orch: Orchestrator) -> int:
    letters = orch.dead_letters
    if args.action == "list":
        entries = await letters.list(run_id=args.run, limit=args.limit)
        statuses = await _run_statuses(orch, {e.run_id for e in entries})
        if args.json:
            out(json.dumps([{**e.to_dict(), "run_status": statuses[e.run_id]} for e in entries]))
            return 0
        shown = [e for e in entries if args.completed or statuses[e.run_id] != "completed"]
        if not entries:
            out("the dead-letter queue is empty")
        elif shown:
            rows = (
                [
                    e.id,
                    e.status,
                    statuses[e.run_id],
                    _dlq_activity(e.activity, e.args),
                    str(len(e.attempts)),
                    short(f"{e.error.get('type', '')}: {e.error.get('message', '')}"),
                ]
                for e in shown
            )
            header = ("entry", "status", "run", "activity", "tries", "last error")
            for line in runview.table(header, rows):
                out(line)
        hidden = len(entries) - len(shown)
        if hidden:
            out(
                f"{hidden} entr{'y' if hidden == 1 else 'ies'} of runs that completed anyway "
                f"(a failed attempt the run got past) not shown: `taskloom dlq list --completed`"
            )
        return 0
    if args.action == "show":
        (entry_id,) = args.ids or [""]
        entry = await letters.get(entry_id)
        out(json.dumps(entry.to_dict(), indent=None if args.json else 2))
        return 0
    ids = args.ids or []
    if args.all:
        ids += [e.id for e in await letters.list(run_id=args.run, limit=100_000)]
    if not ids:
        raise UserError(f"dlq {args.action} needs entry ids (RUN_ID/SEQ) or --all")
    act = letters.redrive if args.action == "redrive" else letters.purge
    for entry_id in ids:
        entry = await act(entry_id)
        out(f"{args.action}d {entry.id} ({entry.activity})")
    return 0


async def _run_statuses(orch: Orchestrator, run_ids: set[str]) -> dict[str, str]:
    """Each run's status (``gone`` for a run no longer in Redis)."""
    statuses: dict[str, str] = {}
    for run_id in sorted(run_ids):
        try:
            statuses[run_id] = (await orch.handle(run_id).info()).status
        except RunNotFoundError:
            statuses[run_id] = "gone"
    return statuses


def _dlq_activity(activity: str, args: Sequence[Any]) -> str:
    """The activity, with the agent it called (``taskloom.agent (planner)``)."""
    if activity == "taskloom.agent" and args and isinstance(args[0], str):
        return f"{activity} ({args[0].removeprefix('taskloom.')})"
    return activity
