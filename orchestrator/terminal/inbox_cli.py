"""``taskloom inbox``: the escalation inbox from the terminal.

::

    taskloom inbox list [--assignee NAME] [--group NAME] [--run RUN_ID] [--older-than AGE]
                        [--status open|decided|all] [--limit N] [--json]
    taskloom inbox show ID [--json]
    taskloom inbox decide ID [ID ...] DECISION [--note TEXT] [--by NAME]
    taskloom inbox decide --run RUN_ID DECISION [--note TEXT] [--by NAME]
    taskloom inbox edit ID [--file PATH] [--note TEXT] [--by NAME]

An item's id is ``RUN_ID/SEQ``. Several ids in one ``decide`` must belong to one run (a
batch: the parallel escalations of a run answered together), and the whole batch is
checked before anything is recorded. ``edit`` opens the item's output in ``$EDITOR``
(else ``$VISUAL``, else ``vi``), checks it against the item's ``output_schema`` and
records it as the ``edit`` decision; ``--file`` reads the new output from a file instead.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskloom.cliargs import MAX_LIMIT, int_in
from taskloom.display import MAX_AGE, clip, one_line, parse_age, pretty, when
from taskloom.engine.human import HumanTask
from taskloom.engine.store import now_ms
from taskloom.errors import HumanTaskClosedError, HumanTaskNotFoundError, UserError
from taskloom.pipeline.edits import Editable, editable

if TYPE_CHECKING:
    from taskloom.client import Orchestrator
    from taskloom.terminal.cli import Command

__all__ = ["register"]

_Action = Callable[[argparse.Namespace, "Orchestrator"], Awaitable[int]]
_SECTIONS = (
    "goal",
    "activity",
    "activities",
    "reason",
    "why",
    "routed_to",
    "output",
    "answer",
    "last_output",
    "outputs",
    "verdicts",
    "history",
)
"""Context keys of the pipeline's escalations, shown in this order by ``show``."""


def register(cmd: Command) -> None:
    """Add the ``inbox`` command to the CLI (``cmd`` makes a subcommand's parser)."""
    inbox = cmd("inbox", _inbox, "the escalation inbox: list, show, decide and edit items")
    sub = inbox.add_subparsers(dest="inbox_command", required=True, metavar="ACTION")

    def action(name: str, handler: _Action, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(inbox_handler=handler)
        return sp

    ls = action("list", _list, "list inbox items, oldest first")
    ls.add_argument("--assignee", metavar="NAME", help="only items assigned to NAME")
    ls.add_argument("--group", metavar="NAME", help="only items of group NAME")
    ls.add_argument("--run", metavar="RUN_ID", help="only this run's items")
    ls.add_argument(
        "--older-than",
        type=_age_arg,
        metavar="AGE",
        help="only items open longer than AGE: seconds, or with a unit (90s, 30m, 2h, 1d)",
    )
    ls.add_argument(
        "--status",
        choices=("open", "decided", "all"),
        default="open",
        help="open (default); decided and all need --run (the inbox indexes open items)",
    )
    ls.add_argument("--limit", type=int_in(1, MAX_LIMIT), default=100, metavar="N")
    ls.add_argument("--json", action="store_true", help="a JSON array of the items")
    sh = action("show", _show, "show one item: goal, activity, output, verdicts, history")
    sh.add_argument("id", metavar="ID", help="the item's id (RUN_ID/SEQ)")
    sh.add_argument("--json", action="store_true", help="the item as JSON")
    de = action("decide", _decide, "decide one item, several items of one run, or a whole run")
    de.usage = (
        "taskloom inbox decide ID [ID ...] DECISION [--note TEXT] [--by NAME]\n"
        "       taskloom inbox decide --run RUN_ID DECISION [--note TEXT] [--by NAME]"
    )
    de.add_argument(
        "items",
        nargs="+",
        metavar="ID",
        help="item ids (RUN_ID/SEQ), then the decision: approve, reject, retry, replan, "
        "or any other the items offer",
    )
    de.add_argument("--run", metavar="RUN_ID", help="decide every open item of this run")
    ed = action("edit", _edit, "edit an item's output in $EDITOR and record it as the decision")
    ed.add_argument("id", metavar="ID", help="the item's id (RUN_ID/SEQ)")
    ed.add_argument(
        "--file", metavar="PATH", help="take the new output from PATH ('-': stdin), no editor"
    )
    for sp in (de, ed):
        sp.add_argument("--note", default="", help="a note for the run (a retry's feedback)")
        sp.add_argument("--by", metavar="NAME", help="who decides (default: your OS user)")


async def _inbox(args: argparse.Namespace, orch: Orchestrator) -> int:
    handler: _Action = args.inbox_handler
    return await handler(args, orch)


# -- list and show ----------------------------------------------------------------------
async def _list(args: argparse.Namespace, orch: Orchestrator) -> int:
    inbox = orch.human_tasks
    if args.status == "open":
        tasks = await inbox.list(
            assignee=args.assignee,
            group=args.group,
            run_id=args.run,
            older_than=args.older_than,
            limit=args.limit,
        )
    elif args.run is None:
        raise UserError(
            f"--status {args.status} needs --run RUN_ID: the inbox keeps an index of open "
            "items only, and a run's log knows all of its items"
        )
    else:
        tasks = [t for t in await _run_tasks(orch, args.run) if _matches(t, args)][: args.limit]
    if args.json:
        _out(json.dumps([t.to_dict() for t in tasks]))
        return 0
    if tasks:
        for line in _table(tasks, now_ms(), with_status=args.status != "open"):
            _out(line)
    _out(await _count_line(orch, tasks, args))
    return 0


async def _run_tasks(orch: Orchestrator, run_id: str) -> list[HumanTask]:
    """Every item a run raised, open or not, from its log (closed ones keep their entry)."""
    events = await orch.store.read_log(run_id)
    if not events:
        raise UserError(f"no run {run_id!r}; see the runs with `taskloom runs`")
    tasks = []
    for event in events:
        if event.type == "human_task_created":
            created = HumanTask(**event.data["task"])
            try:
                tasks.append(await orch.human_tasks.get(created.id))
            except HumanTaskNotFoundError:
                tasks.append(created)
    return tasks


def _matches(task: HumanTask, args: argparse.Namespace) -> bool:
    age_ms = now_ms() - task.created_ms
    return (
        (args.status == "all" or task.status == args.status)
        and (args.assignee is None or task.assignee == args.assignee)
        and (args.group is None or task.group == args.group)
        and (args.older_than is None or age_ms >= args.older_than * 1000)
    )


async def _count_line(orch: Orchestrator, tasks: list[HumanTask], args: argparse.Namespace) -> str:
    n = len(tasks)
    items = f"{n} item{'' if n == 1 else 's'}"
    if args.status != "open":
        return f"{items} of run {args.run} ({args.status})"
    total = await orch.human_tasks.count_open()
    line = f"{n} open item{'' if n == 1 else 's'}"
    if n == args.limit and total > n:
        return f"{line} shown of {total} open in all (--limit to see more)"
    return line if n == total else f"{line} ({total} open in all)"


def _table(tasks: Sequence[HumanTask], now: int, *, with_status: bool) -> list[str]:
    head = ["ID", *(["STATUS"] if with_status else []), "AGE", "ASSIGNEE", "SLA", "TITLE"]
    rows = [head] + [
        [
            t.id,
            *([t.status] if with_status else []),
            _span(now - t.created_ms),
            _assignee(t),
            _sla(t, now),
            one_line(t.title, 72),
        ]
        for t in tasks
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
    return [
        "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    ]


async def _show(args: argparse.Namespace, orch: Orchestrator) -> int:
    task = await _get(orch, args.id)
    if args.json:
        _out(json.dumps(task.to_dict(), indent=2, ensure_ascii=False))
    else:
        _out("\n".join(_render(task, now_ms())))
    return 0


def _render(task: HumanTask, now: int) -> list[str]:
    lines = [f"{task.id}  {task.title}", ""]
    facts = [
        ("run", task.run_id),
        ("status", task.status),
        ("assignee", _assignee(task)),
        ("opened", f"{when(task.created_ms)} ({_span(now - task.created_ms)} ago)"),
        ("SLA", _sla(task, now, long=True)),
        ("fallback", _chain(task)),
        ("decisions", ", ".join(task.decisions)),
        ("decided", _decided(task)),
    ]
    lines += [f"{name + ':':10} {value}" for name, value in facts if value and value != "-"]
    ctx = task.context
    if not isinstance(ctx, dict) or not set(_SECTIONS) & ctx.keys():
        return [*lines, "", *_block("context", pretty(ctx))]
    for key in _SECTIONS:
        if key in ctx:
            lines += ["", *_section(key, ctx[key])]
    if isinstance(ctx.get("output_schema"), dict):
        lines += ["", f"output type: {_schema_name(ctx['output_schema'])}"]
    for key, value in ctx.items():
        if key not in (*_SECTIONS, "output_schema"):
            lines += ["", *_block(key, pretty(value))]
    return lines


def _section(key: str, value: Any) -> list[str]:
    if key == "activity" and isinstance(value, dict):
        head = f"activity: {value.get('id', '?')} (role {value.get('role', '?')})"
        lines = [head, *_indent(str(value.get("instructions", "")))]
        if value.get("inputs"):
            lines.append(f"  inputs: {', '.join(map(str, value['inputs']))}")
        return lines
    if key == "verdicts" and isinstance(value, list):
        return ["verdicts:", *(line for v in value for line in _verdict(v))]
    if key == "activities" and isinstance(value, dict):  # a cross-check's
        return [line for spec in value.values() for line in _section("activity", spec)]
    if key == "history" and isinstance(value, list):
        return ["history:", *(line for h in value for line in _attempt(h))]
    if key == "history" and isinstance(value, dict):  # activity id -> its attempts
        return [
            f"history of {act}:" if i == 0 else line
            for act, attempts in value.items()
            for i, line in enumerate(["", *(x for h in attempts or [] for x in _attempt(h))])
        ]
    if key == "last_output":
        return _block("last answer of the model (it never validated)", pretty(value))
    return _block(key, pretty(value))


def _verdict(v: Any) -> list[str]:
    if not isinstance(v, dict):
        return [f"  - {pretty(v)}"]
    score = v.get("score")
    head = f"  - {v.get('verifier', '?')}: {v.get('status', '?')}"
    lines = [head + (f" (score {score:.2f})" if isinstance(score, int | float) else "")]
    lines += [f"      · {reason}" for reason in v.get("reasons") or []]
    if v.get("feedback"):
        lines.append(f"      feedback: {v['feedback']}")
    if v.get("evidence"):
        lines.append(f"      evidence: {clip(json.dumps(v['evidence'], ensure_ascii=False), 200)}")
    return lines


def _attempt(h: Any) -> list[str]:
    if not isinstance(h, dict):
        return [f"  - {pretty(h)}"]
    lines = [f"  - attempt {h.get('attempt', '?')}: {h.get('status', '?')}"]
    if h.get("feedback"):
        lines.append(f"      feedback: {h['feedback']}")
    if "output" in h:
        output = h["output"] if isinstance(h["output"], str) else json.dumps(h["output"])
        lines.append(f"      output: {one_line(output, 200)}")
    return lines


# -- decide -----------------------------------------------------------------------------
async def _decide(args: argparse.Namespace, orch: Orchestrator) -> int:
    *ids, decision = args.items
    if decision == "edit":
        raise UserError(
            "an edit carries the new output: use `taskloom inbox edit ID` "
            "(it opens $EDITOR, or takes --file PATH)"
        )
    by = _who(args.by)
    tasks = await _batch(orch, ids, args.run)
    problems = [p for t in tasks for p in _refusals(t, decision)]
    if len(problems) == 1:
        raise UserError(problems[0])
    if problems:
        raise UserError("nothing was decided:\n  - " + "\n  - ".join(problems))
    raced = []
    for task in tasks:
        try:
            await orch.human_tasks.decide(task.id, decision, by=by, note=args.note)
        except HumanTaskClosedError:
            raced.append(_closed(await orch.human_tasks.get(task.id)))
            continue
        _out(f"decided {decision} on {task.id} ({clip(task.title, 60)}) as {by}")
    if raced:
        raise HumanTaskClosedError(
            "decided meanwhile by someone else:\n  - " + "\n  - ".join(raced)
        )
    return 0


async def _batch(orch: Orchestrator, ids: list[str], run_id: str | None) -> list[HumanTask]:
    """The items one ``decide`` is about: the given ids (of one run) or a run's open items."""
    if run_id is not None:
        if ids:
            raise UserError("give item ids or --run RUN_ID, not both")
        tasks = await orch.human_tasks.list(run_id=run_id, limit=1_000_000)
        if not tasks:
            raise UserError(f"run {run_id!r} has no open inbox items; see `taskloom inbox list`")
        return tasks
    if not ids:
        raise UserError(
            "say which items: `taskloom inbox decide ID [ID ...] DECISION`, "
            "or `taskloom inbox decide --run RUN_ID DECISION`"
        )
    tasks = [await _get(orch, task_id) for task_id in dict.fromkeys(ids)]
    runs = sorted({t.run_id for t in tasks})
    if len(runs) > 1:
        raise UserError(
            f"a batch decides items of one run, and these belong to {len(runs)} runs "
            f"({', '.join(runs)}); decide each run's items separately"
        )
    return tasks


def _refusals(task: HumanTask, decision: str) -> list[str]:
    if task.status != "open":
        return [_closed(task)]
    if decision not in task.decisions:
        return [
            f"{decision!r} is not a decision of {task.id}; it takes one of: "
            f"{', '.join(task.decisions)}"
        ]
    return []


# -- edit -------------------------------------------------------------------------------
async def _edit(args: argparse.Namespace, orch: Orchestrator) -> int:
    by = _who(args.by)
    task = await _get(orch, args.id)
    problems = _refusals(task, "edit")
    if problems:
        raise UserError(problems[0])
    target = editable(task)
    if args.file is not None:
        text = sys.stdin.read() if args.file == "-" else _read(args.file)
        value, errors = target.parse(_trim(text, target))
        if errors:
            raise UserError(_invalid(target, errors))
    else:
        edited = await _from_editor(target, task.id)
        if edited is None:
            print(
                f"taskloom: the {target.field} is unchanged; nothing recorded (to accept it "
                f"as it is: `taskloom inbox decide {task.id} approve`)",
                file=sys.stderr,
            )
            return 1
        (value,) = edited
    try:
        await orch.human_tasks.decide(
            task.id, "edit", by=by, note=args.note, data={target.field: value}
        )
    except HumanTaskClosedError:
        raise HumanTaskClosedError(_closed(await orch.human_tasks.get(task.id))) from None
    title = clip(task.title, 60)
    _out(f"edited {task.id} ({title}): recorded the new {target.field} as {by}'s decision")
    return 0


async def _from_editor(target: Editable, task_id: str) -> tuple[Any] | None:
    """The edited value (a 1-tuple), or ``None`` when the editor left it unchanged."""
    initial = target.initial()
    with tempfile.TemporaryDirectory(prefix="taskloom-edit-") as tmp:
        name = re.sub(r"[^\w.-]+", "_", task_id) + (".txt" if target.text else ".json")
        path = Path(tmp) / name
        path.write_text(initial, encoding="utf-8")
        while True:
            await _run_editor(path)
            text = path.read_text(encoding="utf-8")
            if text == initial:
                return None
            value, errors = target.parse(_trim(text, target))
            if not errors:
                return (value,)
            if not sys.stdin.isatty():
                raise UserError(_invalid(target, errors))
            print(_invalid(target, errors), file=sys.stderr, flush=True)
            if not await _confirm("re-open the editor? [Y/n] "):
                raise UserError(f"edit abandoned; nothing recorded on {task_id}")


async def _run_editor(path: Path) -> None:
    editor = os.environ.get("EDITOR") or os.environ.get("VISUAL") or "vi"
    try:
        proc = await asyncio.to_thread(subprocess.run, [*shlex.split(editor), str(path)])
    except (OSError, ValueError) as exc:
        raise UserError(
            f"cannot start the editor {editor!r} ({exc}); set $EDITOR, "
            "or give the new output with --file PATH"
        ) from None
    if proc.returncode != 0:
        raise UserError(
            f"the editor {editor!r} exited with status {proc.returncode}; nothing recorded"
        )


async def _confirm(prompt: str) -> bool:
    try:
        answer = await asyncio.to_thread(input, prompt)
    except EOFError:
        return False
    return answer.strip().lower() in ("", "y", "yes")


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the new output from {path}: {exc}") from None


def _trim(text: str, target: Editable) -> str:
    """Text as edited, less the final newline an editor adds (not part of the output)."""
    if target.text and text.endswith("\n") and not target.initial().endswith("\n"):
        return text[:-2] if text.endswith("\r\n") else text[:-1]
    return text


def _invalid(target: Editable, errors: list[str]) -> str:
    what = f"the {target.field}"
    if target.schema is not None and not target.text:
        what += f" ({_schema_name(target.schema)})"
    return f"{what} is not valid; nothing recorded:\n  - " + "\n  - ".join(errors)


def _schema_name(schema: Mapping[str, Any]) -> str:
    if schema.get("type") == "string":
        return "text"
    return f"JSON {schema['title']}" if isinstance(schema.get("title"), str) else "JSON"


# -- small helpers ----------------------------------------------------------------------
def _out(text: str = "") -> None:
    print(text, flush=True)


async def _get(orch: Orchestrator, task_id: str) -> HumanTask:
    try:
        return await orch.human_tasks.get(task_id)
    except HumanTaskNotFoundError:
        shape = "" if "/" in task_id else " (ids look like RUN_ID/SEQ)"
        raise HumanTaskNotFoundError(
            f"no inbox item {task_id!r}{shape}; see the open ones with `taskloom inbox list`"
        ) from None


def _who(by: str | None) -> str:
    if by:
        return by
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):
        raise UserError("cannot tell who you are from the OS; say it with --by NAME") from None


def _closed(task: HumanTask) -> str:
    """Why ``task`` takes no decision: who decided it, and when."""
    d = task.decision
    if task.status == "decided" and d:
        note = f" (note: {d['note']})" if d.get("note") else ""
        return (
            f"{task.id} was already decided: {d.get('decision')!r} by {d.get('by')} at "
            f"{when(d.get('decided_ms') or 0)}{note}; nothing changed"
        )
    return f"{task.id} is {task.status} and takes no more decisions; nothing changed"


def _decided(task: HumanTask) -> str:
    d = task.decision
    if not d:
        return ""
    note = f": {d['note']}" if d.get("note") else ""
    return f"{d.get('decision')} by {d.get('by')} at {when(d.get('decided_ms') or 0)}{note}"


def _chain(task: HumanTask) -> str:
    steps = []
    for step in task.fallback[task.fallback_used :]:
        kind = step.get("kind")
        if kind == "reassign":
            sla = f" (SLA {_span(step['sla'] * 1000)})" if step.get("sla") else ""
            steps.append(f"reassign to {step.get('to')}{sla}")
        elif kind == "decide":
            steps.append(f"decide {step.get('decision')}")
        else:
            steps.append("expire")
    return ", then ".join(steps)


def _assignee(task: HumanTask) -> str:
    if task.assignee and task.group:
        return f"{task.assignee} ({task.group})"
    return task.assignee or (f"group {task.group}" if task.group else "-")


def _sla(task: HumanTask, now: int, *, long: bool = False) -> str:
    if task.sla_due_ms is None or task.status != "open":
        return "-"
    left = task.sla_due_ms - now
    at = f" ({when(task.sla_due_ms)})" if long else ""
    return f"due in {_span(left)}{at}" if left >= 0 else f"OVERDUE by {_span(-left)}{at}"


def _span(ms: float) -> str:
    s = int(max(ms, 0) // 1000)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _block(title: str, text: str) -> list[str]:
    return [f"{title}:", *_indent(text)]


def _indent(text: str) -> list[str]:
    return ["  " + line for line in text.splitlines()] or ["  "]


def _age_arg(text: str) -> float:
    seconds = parse_age(text)
    if seconds is None:
        raise argparse.ArgumentTypeError(
            f"{clip(text, 40)!r} is not an age: give seconds, or 90s, 30m, 2h, 1d, "
            f"up to {MAX_AGE / 86400:.0f}d"
        )
    return seconds
