"""The ``taskloom`` command line.

Exit codes: 0 success, 1 failure (or doctor findings), 2 usage error or Redis
unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import ipaddress
import json
import logging
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from taskloom.cliargs import MAX_LIMIT, int_in, positive_number
from taskloom.client import Orchestrator, RunHandle
from taskloom.display import clip, one_line, pretty, span, when
from taskloom.engine import serde
from taskloom.engine.human import HumanTask
from taskloom.engine.keys import STATUSES
from taskloom.engine.metrics import Metrics
from taskloom.engine.store import Event, RunInfo
from taskloom.errors import RedisUnavailableError, RunNotFoundError, TaskloomError, UserError
from taskloom.pipeline.endpoints import served_by, served_by_run
from taskloom.pipeline.templates import BUILTIN_TEMPLATES, template_names
from taskloom.redaction import redact_text, redact_url
from taskloom.settings import Settings
from taskloom.terminal import inbox_cli, runview
from taskloom.terminal import serve as web_commands
from taskloom.terminal.demo import DEMO_GOAL, DEMO_PRICE_NOTE

__all__ = ["main"]

Handler = Callable[[argparse.Namespace, Orchestrator], Coroutine[Any, Any, int]]
T = TypeVar("T")
Command = Callable[[str, Handler, str], argparse.ArgumentParser]
"""Makes one subcommand's parser: ``cmd(name, handler, help)``; modules with commands
of their own (``inbox_cli``, ``web.commands``) get it in their ``register(cmd)``."""


def _out(text: str = "") -> None:
    print(text, flush=True)


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    return Settings.from_env(
        redis_url=args.redis_url, data_dir=args.data_dir, key_prefix=args.key_prefix, **extra
    )


# -- commands ---------------------------------------------------------------------------
async def _demo(args: argparse.Namespace, orch: Orchestrator) -> int:
    import os
    import shutil

    from taskloom.agents.fake_llm import FakeLLM
    from taskloom.agents.providers import endpoint
    from taskloom.terminal.demo import DEMO_MODEL, demo_namespace, demo_team, drop_namespace

    settings = orch.settings
    namespace = demo_namespace(settings.key_prefix)
    blobs = settings.data_dir / "demo" / namespace
    where = redact_url(settings.redis_url or f"embedded Redis in {settings.data_dir}")
    _out("taskloom demo: the real pipeline and durable engine, with a SIMULATED LLM")
    _out("  (a fake server on loopback plays planner, subagents, judge and integrator;")
    _out("   nothing leaves this machine and every answer it gives says [simulated])")
    _out(f"state store: {where}")
    _out(f"namespace: {namespace} (a key prefix of its own: no other worker takes its work)")
    update: dict[str, Any] = {"key_prefix": namespace}
    if not args.keep:
        update["blob_url"] = str(blobs)
    demo = Orchestrator(settings=settings.model_copy(update=update), client=orch.store.raw)
    await demo.connect()
    team = demo_team()
    try:
        async with FakeLLM() as fake:
            fake.answer_with(team)
            os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"] = fake.openai_url, "demo"
            return await _pipeline_run(
                args, demo, model=DEMO_MODEL, simulated=endpoint("openai", fake.openai_url)
            )
    finally:
        await demo.close()
        if args.keep:
            _out(
                f"namespace {namespace} kept: `taskloom --key-prefix {namespace} history RUN` "
                f"shows the run"
            )
        else:
            await drop_namespace(orch.store.raw, namespace)
            shutil.rmtree(blobs, ignore_errors=True)
            with contextlib.suppress(OSError):  # the demos' folder, once none is left
                blobs.parent.rmdir()


async def _run(args: argparse.Namespace, orch: Orchestrator) -> int:
    return await _pipeline_run(args, orch, model=args.model, worker=not args.no_worker)


async def _chat(args: argparse.Namespace, orch: Orchestrator) -> int:
    from taskloom.terminal.chat import ChatSession, Conversation
    from taskloom.terminal.console import Asker, auto_approve, prompt_in_terminal

    model: str | None = args.model
    if args.resume is not None:
        conversation = await Conversation.resume(orch.store, args.resume or None)
        model = model or await conversation.model()  # the model it was using
    else:
        conversation = await Conversation.start(orch.store)
    ask: Asker = auto_approve if args.yes else prompt_in_terminal()
    async with _local_worker(orch, model, serve=not args.no_worker, concurrency=16) as model:
        session = ChatSession(orch, conversation, ask, input, sys.stdout, model=model)
        return await session.loop()


def _model(model: str | None, orch: Orchestrator) -> str:
    """``--model``, else ``TASKLOOM_MODEL``; neither is a usage error saying both."""
    chosen = model or orch.settings.model
    if not chosen:
        raise UserError(
            "no model: give --model openai:gpt-4.1-mini (or another provider:model, e.g. "
            "anthropic:claude-sonnet-4-5) or set TASKLOOM_MODEL"
        )
    return chosen


@contextlib.asynccontextmanager
async def _local_worker(
    orch: Orchestrator, model: str | None, *, serve: bool, concurrency: int
) -> AsyncIterator[str | None]:
    """With ``serve``: check the model can be called from here (provider, key, price:
    said now, not after planning), and run a worker in this process meanwhile, which
    gives its activities 2 s at the end, then hands them back. Yields the model."""
    if not serve:
        yield model
        return
    from taskloom.agents.providers import check_model

    model = check_model(_model(model, orch))
    orch.settings.price_table().price(model)
    worker = orch.worker(concurrency=concurrency, shutdown_grace=2.0)
    task = asyncio.create_task(worker.run())
    try:
        yield model
    finally:
        worker.stop()
        await task


async def _pipeline_run(
    args: argparse.Namespace,
    orch: Orchestrator,
    *,
    model: str | None,
    simulated: str | None = None,
    worker: bool = True,
) -> int:
    """Submit ``args.goal``, follow it, answer escalations in place; exit 0 done,
    1 failed, 3 waiting on a person. ``simulated``: the endpoint of the simulated team
    (the demo's), which must have served every model call for the run to be called
    simulated."""
    from taskloom.terminal.console import Asker, auto_approve, follow, prompt_in_terminal

    options: dict[str, Any] = {}
    for name in ("template", "budget_usd", "max_parallel"):
        if getattr(args, name, None) is not None:
            options[name] = getattr(args, name)
    slots = max(8, options.get("max_parallel") or 8)
    goal = args.goal
    if not goal.strip():
        raise UserError('give a goal: taskloom run "what you want done"')
    model = _model(model, orch)
    async with _local_worker(orch, model, serve=worker, concurrency=slots) as model:
        handle = await orch.submit(goal, model=model, **options)
        _out(f"run {handle.run_id}: {goal}")
        ask: Asker | None
        if getattr(args, "no_interactive", False):
            ask = None
        elif args.yes or not sys.stdin.isatty():
            ask = auto_approve
        else:
            ask = prompt_in_terminal()
        followed = await _interruptible(follow(orch, handle, ask=ask, live=args.live, goal=goal))
        if followed is None:
            if simulated is not None:  # the demo's namespace goes with it: nothing to leave
                await handle.cancel()
                _out(f"demo stopped (run {handle.run_id} cancelled)")
                return 130
            return await _interrupted(handle, in_process=worker)
    served = await served_by_run(orch, handle.run_id)
    if followed.status == "waiting" and not args.json:
        items = await orch.human_tasks.list(run_id=handle.run_id, children=True, limit=100)
        for line in _waiting_hint(handle.run_id, items, in_process=worker):
            _out(line)
    return _report(args, handle.run_id, followed, served, simulated)


def _waiting_hint(run_id: str, items: Sequence[HumanTask], *, in_process: bool) -> list[str]:
    """What to type for each open item of a run that waits on a person: the decisions
    that item offers (a planner's item takes retry, edit or reject, not approve), and
    that a decision made elsewhere needs a worker to resume the run."""
    lines = [f"run {run_id} is waiting on a person:"]
    for item in items:
        lines.append(f"  {item.id}  {clip(item.title, 90)}")
        plain = [d for d in item.decisions if d != "edit"]
        if plain:
            lines.append(f"    taskloom inbox decide {item.id} {'|'.join(plain)}")
        if "edit" in item.decisions:
            lines.append(f"    taskloom inbox edit {item.id}   (opens $EDITOR on what to change)")
    if not items:
        lines.append(f"  `taskloom inbox list --run {run_id}` shows what it waits on")
    stopped = "this command's worker has stopped; " if in_process else ""
    lines.append(
        f"{stopped}a decision made here, in the web inbox or by a link resumes the run "
        f"only while a worker runs: start one with `taskloom worker`"
    )
    return lines


async def _interruptible(work: Coroutine[Any, Any, T]) -> T | None:
    """``work``'s result, or ``None`` if Ctrl-C (SIGINT) came first (``work`` is then
    cancelled: the run itself goes on, durable)."""
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, interrupted.set)
    job, stop = asyncio.ensure_future(work), asyncio.ensure_future(interrupted.wait())
    try:
        await asyncio.wait({job, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        stop.cancel()
        if not job.done():
            job.cancel()
            await asyncio.gather(job, return_exceptions=True)
    return job.result() if not job.cancelled() else None


async def _interrupted(handle: RunHandle, *, in_process: bool) -> int:
    """Ctrl-C during a run: cancel it, or leave it running."""
    answer = "leave"
    if sys.stdin.isatty():
        line = await asyncio.to_thread(
            input, "\ninterrupted: cancel the run, or leave it running? [c/L] "
        )
        answer = "cancel" if line.strip().lower().startswith("c") else "leave"
    if answer == "cancel":
        await handle.cancel()
        with contextlib.suppress(TaskloomError, TimeoutError):  # let our worker apply it
            await handle.result(timeout=10)
        status = (await handle.info()).status
        _out(f"run {handle.run_id} {'cancelled' if status == 'cancelled' else 'cancel requested'}")
        return 130
    where = "it goes on when a worker runs (`taskloom worker`)" if in_process else "workers go on"
    _out(
        f"run {handle.run_id} left running: {where}; `taskloom result {handle.run_id}` "
        f"shows the answer, `taskloom history {handle.run_id} --follow` the progress"
    )
    return 130


def _report(
    args: argparse.Namespace,
    run_id: str,
    followed: Any,
    served: Counter[str],
    simulated_by: str | None,
) -> int:
    """The end of a followed run; "simulated" only when the simulated team (at
    ``simulated_by``) served every model call the run's history records."""
    simulated = simulated_by is not None and bool(served) and set(served) == {simulated_by}
    others = {e: n for e, n in served.items() if e != simulated_by}
    if simulated_by is not None and others and not args.json:
        _out(f"NOT simulated: model calls were served by {_endpoints(others)}")
    if args.json:
        _out(
            json.dumps(
                {
                    "run_id": run_id,
                    "status": followed.status,
                    "result": followed.result,
                    "error": followed.error,
                    "simulated": simulated,
                    "served_by": dict(served),
                }
            )
        )
    elif followed.status == "completed":
        result = followed.result
        _out(f"run completed{' (simulated)' if simulated else ''}:\n")
        _out(str(result["answer"]))
        tokens = result["tokens"]
        share = ", ".join(f"{k} {v}" for k, v in tokens.items() if k != "total")
        _out(f"\ntokens: {tokens['total']} ({share})")
        priced = f" at {DEMO_PRICE_NOTE}" if simulated else ""
        _out(f"cost: ${result['cost_usd']:.4f}{priced}; escalations: {result['escalations']}")
        if served:
            _out(f"model calls served by {_endpoints(served)}")
    elif followed.status != "waiting":  # waiting: said by _waiting_hint, knowing the items
        _out(f"run {run_id} {followed.status}: {followed.error}")
    return {"completed": 0, "waiting": 3}.get(followed.status, 1)


async def _worker(args: argparse.Namespace, orch: Orchestrator) -> int:
    metrics = Metrics() if args.metrics_port is not None else None
    worker = orch.worker(
        modules=args.imports or [],
        concurrency=args.concurrency or orch.settings.concurrency,
        metrics=metrics,
    )
    _out(
        f"worker {worker.worker_id}: {len(worker.registry.workflow_names)} workflows, "
        f"{len(worker.registry.activity_names)} activities, queue {worker.queue!r}, "
        f"{worker.concurrency} slots (Ctrl-C or SIGTERM stops gracefully)"
    )
    # Everything loaded so far (modules, registries) lives as long as the process: keep
    # it out of the cyclic GC, whose full passes over it paused the loop ~15 ms each.
    gc.collect()
    gc.freeze()
    if metrics is None:
        await worker.run(install_signal_handlers=True)
        return 0
    token = orch.settings.metrics_token
    async with await metrics.serve(
        host=args.metrics_host, port=args.metrics_port, token=token
    ) as server:
        guard = " (needs the bearer TASKLOOM_METRICS_TOKEN)" if token else ""
        _out(f"metrics on {server.url}{guard}")
        if token is None and not ipaddress.ip_address(server.host).is_loopback:
            _out("note: /metrics is open to the network; set TASKLOOM_METRICS_TOKEN")
        await worker.run(install_signal_handlers=True)
    return 0


async def _dlq(args: argparse.Namespace, orch: Orchestrator) -> int:
    letters = orch.dead_letters
    if args.action == "list":
        entries = await letters.list(run_id=args.run, limit=args.limit)
        statuses = await _run_statuses(orch, {e.run_id for e in entries})
        if args.json:
            _out(json.dumps([{**e.to_dict(), "run_status": statuses[e.run_id]} for e in entries]))
            return 0
        shown = [e for e in entries if args.completed or statuses[e.run_id] != "completed"]
        if not entries:
            _out("the dead-letter queue is empty")
        elif shown:
            rows = (
                [
                    e.id,
                    e.status,
                    statuses[e.run_id],
                    _dlq_activity(e.activity, e.args),
                    str(len(e.attempts)),
                    _short(f"{e.error.get('type', '')}: {e.error.get('message', '')}"),
                ]
                for e in shown
            )
            header = ("entry", "status", "run", "activity", "tries", "last error")
            for line in runview.table(header, rows):
                _out(line)
        hidden = len(entries) - len(shown)
        if hidden:
            _out(
                f"{hidden} entr{'y' if hidden == 1 else 'ies'} of runs that completed anyway "
                f"(a failed attempt the run got past) not shown: `taskloom dlq list --completed`"
            )
        return 0
    if args.action == "show":
        (entry_id,) = args.ids or [""]
        entry = await letters.get(entry_id)
        _out(json.dumps(entry.to_dict(), indent=None if args.json else 2))
        return 0
    ids = args.ids or []
    if args.all:
        ids += [e.id for e in await letters.list(run_id=args.run, limit=100_000)]
    if not ids:
        raise UserError(f"dlq {args.action} needs entry ids (RUN_ID/SEQ) or --all")
    act = letters.redrive if args.action == "redrive" else letters.purge
    for entry_id in ids:
        entry = await act(entry_id)
        _out(f"{args.action}d {entry.id} ({entry.activity})")
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


async def _runs(args: argparse.Namespace, orch: Orchestrator) -> int:
    runs = await orch.list_runs(args.status, limit=args.limit)
    if args.json:
        _out(json.dumps([_info_dict(r) for r in runs]))
        return 0
    if not runs:
        _out("no runs" + (f" with status {args.status}" if args.status else ""))
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
        _out(line)
    return 0


async def _status(args: argparse.Namespace, orch: Orchestrator) -> int:
    handle = orch.handle(args.run_id)
    info = await handle.info()
    activities = runview.activity_summaries([e async for e in handle.events(follow=False)])
    if args.json:
        _out(json.dumps({**_info_dict(info), "activities": [a.to_dict() for a in activities]}))
        return 0 if info.status != "failed" else 1
    for line in _status_lines(info, activities):
        _out(line)
    return 0 if info.status != "failed" else 1


def _status_lines(info: RunInfo, activities: list[runview.ActivitySummary]) -> list[str]:
    """``taskloom status`` for a person: the run, its totals, a table of its activities
    (a pipeline's), the start of its answer or result."""
    now = int(time.time() * 1000)
    finished = info.status in ("completed", "failed", "cancelled")
    took = runview.seconds((info.updated_ms if finished else now) - info.created_ms)
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
    info = await orch.handle(args.run_id).info()
    result = info.result
    if args.json:
        _out(json.dumps({"run_id": info.run_id, "status": info.status, "result": result}))
    elif info.status == "completed":
        _out(
            str(result["answer"])
            if isinstance(result, dict) and "answer" in result
            else json.dumps(result, indent=2)
        )
    elif info.status == "failed":
        _out(f"run {info.run_id} failed: {json.dumps(result)}")
    else:
        _out(
            f"run {info.run_id} is {info.status}: no result yet; `taskloom inbox list --run "
            f"{info.run_id}` shows what waits on a person, `taskloom history {info.run_id} "
            f"--follow` follows it"
        )
    return {"completed": 0, "failed": 1, "cancelled": 1}.get(info.status, 3)


async def _history(args: argparse.Namespace, orch: Orchestrator) -> int:
    steps, start_ms = runview.StepNames(), 0
    async for event in orch.handle(args.run_id).events(follow=args.follow):
        if args.json:
            _out(json.dumps({"id": event.id, **event.data}))
            continue
        if not start_ms:
            start_ms = runview.event_ms(event)
            _out(runview.history_header())
        steps.learn(event)
        _out(runview.history_line(event, steps, start_ms))
    return 0


async def _cancel(args: argparse.Namespace, orch: Orchestrator) -> int:
    await orch.handle(args.run_id).cancel()
    _out(f"cancel requested for run {args.run_id}")
    return 0


async def _signal(args: argparse.Namespace, orch: Orchestrator) -> int:
    try:
        payload = json.loads(args.payload) if args.payload is not None else None
    except json.JSONDecodeError as exc:
        raise UserError(
            f"the signal payload is not JSON ({exc}); quote it, e.g. '{{\"ok\": true}}'"
        ) from None
    await orch.handle(args.run_id).signal(args.name, payload)
    _out(f"signal {args.name!r} sent to run {args.run_id}")
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
        _out(
            json.dumps({"run_id": handle.run_id, "result": result})
            if args.json
            else json.dumps(result)
        )
    else:
        _out(json.dumps({"run_id": handle.run_id}) if args.json else handle.run_id)
    return 0


async def _templates(args: argparse.Namespace, orch: Orchestrator) -> int:
    templates = sorted(BUILTIN_TEMPLATES, key=lambda t: t.name)
    if args.json:
        _out(json.dumps([t.to_dict() for t in templates]))
        return 0
    for line in runview.table(
        ("template", "description"), ([t.name, t.description] for t in templates)
    ):
        _out(line)
    _out("use one: taskloom run GOAL --template NAME")
    return 0


async def _roles(args: argparse.Namespace, orch: Orchestrator) -> int:
    from taskloom.pipeline.roles import catalog

    worker = orch.worker(modules=args.imports or [])
    roles = catalog(worker.registry.agents)
    if args.json:
        _out(json.dumps([{**r.to_dict(), "model": r.model} for r in roles.values()]))
        return 0
    rows = ([r.name, r.output, ", ".join(r.tools), r.description] for r in roles.values())
    for line in runview.table(("role", "output", "tools", "description"), rows):
        _out(line)
    more = "" if args.imports else "; --import MODULE adds a module's agents, as a worker would"
    _out(f"a plan's activities name these roles{more}")
    return 0


async def _doctor(args: argparse.Namespace, orch: Orchestrator) -> int:
    from taskloom.terminal.doctor import diagnose, render_json, render_text

    report = await diagnose(orch.store.client, durability=orch.settings.durability)
    _out(render_json(report) if args.json else render_text(report))
    return 0 if report.ok else 1


# -- rendering --------------------------------------------------------------------------
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
            return f"{where}completed {d['name']}{by} -> {_short(d.get('result'))}"
        case "activity_failed":
            return f"{where}FAILED {d['name']}: {d['error'].get('message', '')}"
        case "timer_started":
            due = datetime.fromtimestamp(d["due_ms"] / 1000, tz=UTC).strftime("%H:%M:%S.%f")[:-3]
            seconds = (d["due_ms"] - d.get("ts", d["due_ms"])) / 1000
            return f"{where}sleeping {seconds:g}s (until {due} UTC)"
        case "child_started":
            return f"{where}child run {d['child_id']} ({d['workflow']})"
        case "run_completed":
            return f"run completed -> {_short(d.get('result'))}"
        case "run_failed":
            return f"run FAILED: {d['error'].get('type')}: {d['error'].get('message')}"
        case _:
            return f"{where}{event.type.replace('_', ' ')}"


def _endpoints(served: Mapping[str, int]) -> str:
    return ", ".join(f"{e} ({n})" for e, n in sorted(served.items()))


def _short(value: Any, limit: int = 70) -> str:
    return clip(serde.dumps(value), limit)


# -- parsing ----------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="taskloom", description="durable orchestration of LLM subagents on Redis"
    )
    p.add_argument(
        "--redis-url",
        help="Redis URL (default: TASKLOOM_REDIS_URL, REDIS_URL, else the embedded server)",
    )
    p.add_argument("--data-dir", help="data directory of the embedded Redis")
    p.add_argument("--key-prefix", help="prefix of every Redis key")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(handler=handler)
        return sp

    d = cmd("demo", _demo, "the whole pipeline end to end, with a simulated LLM (no key needed)")
    d.add_argument("--goal", default=DEMO_GOAL)
    d.add_argument("--yes", action="store_true", help="answer escalations automatically")
    d.add_argument(
        "--live", action=argparse.BooleanOptionalAction, help="the live table (default: on a TTY)"
    )
    d.add_argument("--json", action="store_true")
    d.add_argument(
        "--keep", action="store_true", help="keep the demo's namespace afterwards, to look at"
    )
    rn = cmd("run", _run, "hand taskloom a goal: plan, run, verify, integrate (live)")
    rn.add_argument("goal")
    rn.add_argument("--model", help="provider:model (default: TASKLOOM_MODEL)")
    rn.add_argument(
        "--template",
        choices=template_names(),
        metavar="NAME",
        help="a workflow template (`taskloom templates` lists them)",
    )
    rn.add_argument("--budget-usd", type=positive_number, help="the most the run may spend")
    rn.add_argument("--max-parallel", type=int_in(1, 10_000), help="model calls at once")
    rn.add_argument("--yes", action="store_true", help="approve escalations automatically")
    rn.add_argument(
        "--no-interactive", action="store_true", help="leave escalations in the inbox (exit 3)"
    )
    rn.add_argument("--no-worker", action="store_true", help="rely on running workers")
    rn.add_argument("--json", action="store_true")
    rn.add_argument(
        "--live", action=argparse.BooleanOptionalAction, help="the live table (default: on a TTY)"
    )
    ch = cmd("chat", _chat, "a conversation: goals and follow-ups that build on the last answer")
    ch.add_argument("--model", help="provider:model (default: TASKLOOM_MODEL)")
    ch.add_argument(
        "--resume", nargs="?", const="", metavar="ID", help="continue the last (or ID) conversation"
    )
    ch.add_argument("--yes", action="store_true", help="approve escalations automatically")
    ch.add_argument("--no-worker", action="store_true", help="rely on running workers")
    w = cmd("worker", _worker, "run a worker: take runs and activities until stopped")
    w.add_argument(
        "--import",
        dest="imports",
        action="append",
        metavar="MODULE",
        help="module whose @workflow/@activity definitions to serve (repeatable)",
    )
    w.add_argument(
        "--concurrency", type=int_in(1, 10_000), help="activities at once (TASKLOOM_CONCURRENCY)"
    )
    w.add_argument(
        "--metrics-port",
        type=int_in(0, 65535),
        help="serve Prometheus metrics on /metrics at this port",
    )
    w.add_argument(
        "--metrics-host", default="127.0.0.1", help="address for --metrics-port (default: local)"
    )
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
    r = cmd("runs", _runs, "list runs by status")
    r.add_argument("--status", choices=STATUSES)
    r.add_argument("--limit", type=int_in(1, MAX_LIMIT), default=50)
    r.add_argument("--json", action="store_true")
    for name, handler, help_ in (
        ("status", _status, "show one run"),
        ("history", _history, "show a run's event log"),
        ("cancel", _cancel, "cancel a run and its children"),
        ("result", _result, "a run's result (a pipeline's answer); exit 3 while unfinished"),
    ):
        sp = cmd(name, handler, help_)
        sp.add_argument("run_id")
        if name != "cancel":
            sp.add_argument("--json", action="store_true")
        if name == "history":
            sp.add_argument("--follow", action="store_true", help="keep following until the end")
    s = cmd("signal", _signal, "send a signal to a run")
    s.add_argument("run_id")
    s.add_argument("name")
    s.add_argument("payload", nargs="?", help="JSON payload")
    st = cmd("start", _start, "start a workflow by name (a worker must serve it)")
    st.add_argument("workflow")
    st.add_argument("args", nargs="*", help="JSON arguments")
    st.add_argument("--run-id")
    st.add_argument("--wait", action="store_true", help="wait for the result")
    st.add_argument("--json", action="store_true")
    tp = cmd("templates", _templates, "the workflow templates: names and what each is for")
    tp.add_argument("--json", action="store_true")
    ro = cmd("roles", _roles, "the roles a plan may use: the built-in agents and yours")
    ro.add_argument(
        "--import",
        dest="imports",
        action="append",
        metavar="MODULE",
        help="a module whose agents a worker would serve (repeatable)",
    )
    ro.add_argument("--json", action="store_true")
    doc = cmd("doctor", _doctor, "check the Redis in use: version, persistence, eviction, latency")
    doc.add_argument("--json", action="store_true")
    for register in (inbox_cli.register, web_commands.register):
        register(cmd)
    return p


_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _check_redis_url(args: argparse.Namespace, settings: Settings) -> None:
    """A Redis URL the client cannot parse, said before connecting, naming where it came
    from and the forms it takes (redis-py's own error is a ValueError and a traceback)."""
    url = settings.redis_url
    if url is None or url.lower().startswith(_REDIS_SCHEMES):
        return
    if args.redis_url is not None:
        source = "--redis-url"
    else:
        import os

        source = next((v for v in ("TASKLOOM_REDIS_URL", "REDIS_URL") if os.environ.get(v)), "")
        source = source or "the Redis URL"
    raise UserError(
        f"{source} {redact_url(url)!r} is not a Redis URL: give redis://HOST:6379/0, "
        f"rediss://HOST:6380/0 (TLS) or unix:///path/to/redis.sock, or leave it unset for "
        f"the embedded Redis"
    )


async def _main(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _check_redis_url(args, settings)
    orch = Orchestrator(settings=settings)
    await orch.connect()
    try:
        handler: Handler = args.handler
        return await handler(args, orch)
    finally:
        await orch.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``taskloom`` console script."""
    args = _parser().parse_args(argv)
    log_file = _log_file(args)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[log_file] if log_file is not None else None,
    )
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _pipe_closed()
    except RedisUnavailableError as exc:
        if args.debug:
            raise
        if args.command == "doctor" and getattr(args, "json", False):
            _out(
                json.dumps(
                    {
                        "checks": [
                            {
                                "name": "reachable",
                                "ok": False,
                                "detail": redact_text(str(exc)),
                                "fix": "start Redis or fix TASKLOOM_REDIS_URL",
                            }
                        ],
                        "ok": False,
                    }
                )
            )
        print(f"taskloom: error: {redact_text(str(exc))}", file=sys.stderr)
        return 2
    except TaskloomError as exc:
        if args.debug:
            raise
        print(f"taskloom: error: {redact_text(str(exc))}", file=sys.stderr)
        return 2 if isinstance(exc, UserError) else 1
    finally:
        if log_file is not None:
            log_file.close()
            if log_file.warnings:
                print(
                    f"taskloom: {log_file.warnings} warning(s) logged to {log_file.baseFilename}",
                    file=sys.stderr,
                )


def _pipe_closed() -> int:
    """The reader of our output went away (``taskloom runs | head``): end quietly, as
    ``cat`` or ``git log`` do, with the exit status of a death by SIGPIPE (128 + 13).
    Python's recommended way: devnull over stdout, so the flush at exit cannot fail
    again and print a second error."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 128 + signal.SIGPIPE


class _LogFile(logging.FileHandler):
    """The log of an interactive command: a file, counting its warnings."""

    warnings = 0

    def _open(self) -> Any:  # on the first record: no file, no directory, until then
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.warnings += 1
        super().emit(record)


def _log_file(args: argparse.Namespace) -> _LogFile | None:
    """Where ``demo``, ``run`` and ``chat`` log on a terminal: ``<data_dir>/taskloom.log``,
    not stderr, whose lines would land in the live table and in the prompts a person is
    typing into (``--debug`` keeps them on stderr). ``None``: log to stderr."""
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if args.debug or not interactive or args.command not in ("demo", "run", "chat"):
        return None
    try:
        data_dir = Settings.from_env(data_dir=args.data_dir).data_dir
        return _LogFile(data_dir / "taskloom.log", delay=True)
    except TaskloomError:
        return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
