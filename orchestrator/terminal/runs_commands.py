"""The commands on runs by id: ``runs`` (list; ``runs delete RUN``), ``status``,
``history``, ``result``, ``cancel``, ``signal``, and ``start`` (a workflow by name)."""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from taskloom.cliargs import MAX_LIMIT, int_in, positive_number
from taskloom.client import Orchestrator
from taskloom.display import duration, one_line, pretty, span, when
from taskloom.engine.keys import STATUSES
from taskloom.engine.store import Event, RunInfo
from taskloom.errors import RunCancelledError, RunFailedError, UserError
from taskloom.pipeline.endpoints import served_by
from taskloom.pipeline.entries import PIPELINE_NAME as PIPELINE
from taskloom.terminal import runview
from taskloom.terminal.output import out, short

if TYPE_CHECKING:
    from taskloom.terminal.cli import Command

__all__ = ["register"]


def register(cmd: Command) -> None:
    """Add ``runs``, ``status``, ``history``, ``cancel``, ``result``, ``signal`` and
    ``start`` to the CLI."""
    r = cmd("runs", _runs, "list runs by status; `runs delete RUN...` deletes ended runs")
    r.add_argument("action", nargs="?", choices=("delete",), help="delete the runs named")
    r.add_argument("run_ids", nargs="*", metavar="RUN", help="run ids (with delete)")
    r.add_argument("--status", choices=STATUSES)
    r.add_argument("--limit", type=int_in(1, MAX_LIMIT), default=50)
    r.add_argument("--json", action="store_true")
    for name, handler, help_ in (
        ("status", _status, "show one run"),
        ("history", _history, "show a run's event log"),
        ("cancel", _cancel, "cancel a run and its children"),
        (
            "result",
            _result,
            "a run's result (a pipeline's answer); exit 3 while unfinished (--wait waits)",
        ),
    ):
        sp = cmd(name, handler, help_)
        sp.add_argument("run_id")
        if name != "cancel":
            sp.add_argument("--json", action="store_true")
        if name == "history":
            sp.add_argument("--follow", action="store_true", help="keep following until the end")
        if name == "result":
            sp.add_argument("--wait", action="store_true", help="wait for the run to end")
            sp.add_argument(
                "--timeout",
                type=positive_number,
                metavar="SECONDS",
                help="with --wait: wait at most this long (then exit 3 if it has not ended)",
            )
    s = cmd("signal", _signal, "send a signal to a run")
    s.add_argument("run_id")
    s.add_argument("name")
    s.add_argument("payload", nargs="?", help="JSON payload")
    s.add_argument(
        "--request-id",
        help="deliver it once per id: a script that retries passes the same id each time",
    )
    st = cmd("start", _start, "start a workflow by name (a worker must serve it)")
    st.add_argument("workflow")
    st.add_argument("args", nargs="*", help="JSON arguments")
    st.add_argument("--run-id")
    st.add_argument("--wait", action="store_true", help="wait for the result")
    st.add_argument("--json", action="store_true")


async def _runs(args: argparse.Namespace, orch: Orchestrator) -> int:
    if args.action == "delete":
        return await _delete(args, orch)
    if args.run_ids:
        raise UserError(
            f"`taskloom runs` lists runs; to delete one: taskloom runs delete {args.run_ids[0]}"
        )
    runs = await orch.list_runs(args.status, limit=args.limit)
    if args.json:
        out(json.dumps([_info_dict(r) for r in runs]))
        return 0
    if not runs:
        out("no runs" + (f" with status {args.status}" if args.status else ""))
        return 0
    now = time.time() * 1000
    rows = []
    for r in runs:
        result = r.result if isinstance(r.result, dict) else {}
        cost = result.get("cost_usd")
        goal = result.get("goal") or ""  # a finished pipeline's; others have none to show
        rows.append(
            [
                r.run_id,
                r.status,
                r.workflow,
                _age(now - r.created_ms),
                f"${cost:.4f}" if isinstance(cost, int | float) else "",
                one_line(goal, 60) if isinstance(goal, str) else "",
            ]
        )
    for line in runview.table(("run", "status", "workflow", "started", "cost", "goal"), rows):
        out(line)
    return 0


async def _delete(args: argparse.Namespace, orch: Orchestrator) -> int:
    """``runs delete RUN...``: each ended run and everything it owns, in order; the
    first that cannot be deleted (unknown, still running) stops it with its error."""
    if not args.run_ids:
        raise UserError("say which runs to delete: taskloom runs delete RUN [RUN ...]")
    for run_id in args.run_ids:
        await orch.delete(run_id)
        if args.json:
            out(json.dumps({"run_id": run_id, "deleted": True}))
        else:
            out(f"deleted run {run_id}")
    return 0


async def _status(args: argparse.Namespace, orch: Orchestrator) -> int:
    handle = orch.handle(args.run_id)
    info = await handle.info()
    # Only a pipeline's log has activities to show: any other run's is not read at all.
    events = [e async for e in handle.events(follow=False)] if info.workflow == PIPELINE else []
    activities = runview.activity_summaries(events)
    if args.json:
        out(json.dumps({**_info_dict(info), "activities": [a.to_dict() for a in activities]}))
        return 0 if info.status != "failed" else 1
    for line in _status_lines(info, activities):
        out(line)
    return 0 if info.status != "failed" else 1


def _status_lines(info: RunInfo, activities: list[runview.ActivitySummary]) -> list[str]:
    """``taskloom status`` for a person: the run, its totals, a table of its activities
    (a pipeline's), the start of its answer or result."""
    now = int(time.time() * 1000)
    finished = info.status in ("completed", "failed", "cancelled")
    took = duration((info.updated_ms if finished else now) - info.created_ms)
    lines = [f"run {info.run_id}: {info.status} ({info.workflow})"]
    result = info.result if isinstance(info.result, dict) else {}
    if result.get("goal"):
        lines.append(f"goal:     {one_line(result['goal'], 200)}")
    lines.append(
        f"started:  {when(info.created_ms)}; {'took' if finished else 'running for'} {took}"
    )
    if info.owner:
        lines.append(f"owner:    {info.owner}")
    if isinstance(result.get("cost_usd"), int | float):
        tokens: dict[str, Any] = result.get("tokens") or {}
        share = ", ".join(f"{k} {v}" for k, v in tokens.items() if k != "total")
        lines.append(
            f"cost:     ${result['cost_usd']:.4f}; {tokens.get('total', 0)} tokens ({share}); "
            f"{result.get('escalations', 0)} escalation(s)"
        )
    if activities:
        lines += ["", *runview.table(runview.SUMMARY_HEADER, (a.cells(now) for a in activities))]
    if "answer" in result:
        lines += ["", f"answer:   {one_line(result['answer'], 150)}"]
        lines.append(f"          (`taskloom result {info.run_id}` prints it whole)")
    elif info.result is not None:
        shown = pretty(info.result).splitlines()
        lines += ["", "result:" if info.status != "failed" else "error:", *shown[:20]]
        if len(shown) > 20:
            lines.append(f"... ({len(shown) - 20} more lines: `taskloom status --json`)")
    return lines


async def _result(args: argparse.Namespace, orch: Orchestrator) -> int:
    handle = orch.handle(args.run_id)
    if args.timeout is not None and not args.wait:
        raise UserError("--timeout goes with --wait: taskloom result RUN --wait --timeout 60")
    if args.wait:  # how it ended is shown below, as without --wait
        with contextlib.suppress(RunFailedError, RunCancelledError, TimeoutError):
            await handle.result(timeout=args.timeout)
    info = await handle.info()
    result = info.result
    if args.json:
        out(json.dumps({"run_id": info.run_id, "status": info.status, "result": result}))
    elif info.status == "completed":
        out(
            str(result["answer"])
            if isinstance(result, dict) and "answer" in result
            else json.dumps(result, indent=2)
        )
    elif info.status == "failed":
        out(f"run {info.run_id} failed: {json.dumps(result)}")
    elif info.status == "cancelled":
        out(f"run {info.run_id} was cancelled: it has no result")
    else:
        waited = f" after {args.timeout:g}s" if args.wait and args.timeout is not None else ""
        out(
            f"run {info.run_id} is {info.status}{waited}: no result yet; `taskloom inbox list "
            f"--run {info.run_id}` shows what waits on a person, `taskloom history {info.run_id} "
            f"--follow` follows it"
        )
    return {"completed": 0, "failed": 1, "cancelled": 1}.get(info.status, 3)


async def _history(args: argparse.Namespace, orch: Orchestrator) -> int:
    steps, start_ms = runview.StepNames(), 0
    async for event in orch.handle(args.run_id).events(follow=args.follow):
        if args.json:
            out(json.dumps({"id": event.id, **event.data}))
            continue
        if not start_ms:
            start_ms = runview.event_ms(event)
            out(runview.history_header())
        steps.learn(event)
        out(runview.history_line(event, steps, start_ms))
    return 0


async def _cancel(args: argparse.Namespace, orch: Orchestrator) -> int:
    await orch.handle(args.run_id).cancel()
    out(f"cancel requested for run {args.run_id}")
    return 0


async def _signal(args: argparse.Namespace, orch: Orchestrator) -> int:
    try:
        payload = json.loads(args.payload) if args.payload is not None else None
    except json.JSONDecodeError as exc:
        raise UserError(
            f"the signal payload is not JSON ({exc}); quote it, e.g. '{{\"ok\": true}}'"
        ) from None
    await orch.handle(args.run_id).signal(args.name, payload, request_id=args.request_id)
    out(f"signal {args.name!r} sent to run {args.run_id}")
    return 0


async def _start(args: argparse.Namespace, orch: Orchestrator) -> int:
    try:
        wf_args = [json.loads(a) for a in args.args]
    except json.JSONDecodeError as exc:
        raise UserError(
            f"workflow arguments are JSON values ({exc}); quote strings as '\"text\"'"
        ) from None
    handle = await orch.start(args.workflow, *wf_args, run_id=args.run_id)
    if args.wait:
        result = await handle.result()
        out(
            json.dumps({"run_id": handle.run_id, "result": result})
            if args.json
            else json.dumps(result)
        )
    else:
        out(json.dumps({"run_id": handle.run_id}) if args.json else handle.run_id)
    return 0


def _age(ms: float) -> str:
    return f"{span(ms)} ago"


def _info_dict(info: RunInfo) -> dict[str, Any]:
    return {
        "run_id": info.run_id,
        "workflow": info.workflow,
        "status": info.status,
        "created_ms": info.created_ms,
        "updated_ms": info.updated_ms,
        "owner": info.owner,
        "result": info.result,
        "parent": info.parent,
        "duplicates_dropped": info.duplicates_dropped,
    }


def _describe(event: Event) -> str:
    d, seq = event.data, event.seq
    where = f"step {seq} " if seq is not None else ""
    match event.type:
        case "activity_scheduled":
            return f"{where}scheduled {d['name']} ({d.get('dispatch', '')})"
        case "activity_completed":
            served = served_by(d.get("result"))
            by = f" (served by {', '.join(served)})" if served else ""
            return f"{where}completed {d['name']}{by} -> {short(d.get('result'))}"
        case "activity_failed":
            return f"{where}FAILED {d['name']}: {d['error'].get('message', '')}"
        case "timer_started":
            due = datetime.fromtimestamp(d["due_ms"] / 1000, tz=UTC).strftime("%H:%M:%S.%f")[:-3]
            seconds = (d["due_ms"] - d.get("ts", d["due_ms"])) / 1000
            return f"{where}sleeping {seconds:g}s (until {due} UTC)"
        case "child_started":
            return f"{where}child run {d['child_id']} ({d['workflow']})"
        case "run_completed":
            return f"run completed -> {short(d.get('result'))}"
        case "run_failed":
            return f"run FAILED: {d['error'].get('type')}: {d['error'].get('message')}"
        case _:
            return f"{where}{event.type.replace('_', ' ')}"
