"""``taskloom demo``, ``run`` and ``chat``: hand taskloom a goal and follow it here (with
a worker in this process unless ``--no-worker``), answering escalations in place."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from taskloom.cliargs import int_in, positive_number
from taskloom.client import Orchestrator, RunHandle
from taskloom.display import clip
from taskloom.engine.human import HumanTask
from taskloom.errors import TaskloomError, UserError
from taskloom.pipeline.endpoints import served_by_run
from taskloom.pipeline.templates import template_names
from taskloom.redaction import redact_url
from taskloom.terminal.demo import DEMO_GOAL, DEMO_PRICE_NOTE
from taskloom.terminal.output import out
from taskloom.terminal.store_commands import describe

if TYPE_CHECKING:
    from taskloom.terminal.cli import Command

__all__ = ["register"]

T = TypeVar("T")


def register(cmd: Command) -> None:
    """Add the ``demo``, ``run`` and ``chat`` commands to the CLI."""
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
    if orch.embedded is not None:  # and how long it runs: the demo leaves it running
        where = describe(orch.embedded)
    out("taskloom demo: the real pipeline and durable engine, with a SIMULATED LLM")
    out("  (a fake server on loopback plays planner, subagents, judge and integrator;")
    out("   nothing leaves this machine and every answer it gives says [simulated])")
    out(f"state store: {where}")
    out(f"namespace: {namespace} (a key prefix of its own: no other worker takes its work)")
    update: dict[str, Any] = {"key_prefix": namespace}
    if not args.keep:
        update["blob_url"] = str(blobs)
    demo = Orchestrator(settings=dataclasses.replace(settings, **update), client=orch.store.raw)
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
            out(
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
        out(f"run {handle.run_id}: {goal}")
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
                out(f"demo stopped (run {handle.run_id} cancelled)")
                return 130
            return await _interrupted(handle, in_process=worker)
    served = await served_by_run(orch, handle.run_id)
    if followed.status == "waiting" and not args.json:
        items = await orch.human_tasks.list(run_id=handle.run_id, children=True, limit=100)
        for line in _waiting_hint(handle.run_id, items, in_process=worker):
            out(line)
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
        out(f"run {handle.run_id} {'cancelled' if status == 'cancelled' else 'cancel requested'}")
        return 130
    where = "it goes on when a worker runs (`taskloom worker`)" if in_process else "workers go on"
    out(
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
        out(f"NOT simulated: model calls were served by {_endpoints(others)}")
    if args.json:
        out(
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
        out(f"run completed{' (simulated)' if simulated else ''}:\n")
        out(str(result["answer"]))
        tokens = result["tokens"]
        share = ", ".join(f"{k} {v}" for k, v in tokens.items() if k != "total")
        out(f"\ntokens: {tokens['total']} ({share})")
        priced = f" at {DEMO_PRICE_NOTE}" if simulated else ""
        out(f"cost: ${result['cost_usd']:.4f}{priced}; escalations: {result['escalations']}")
        if served:
            out(f"model calls served by {_endpoints(served)}")
    elif followed.status != "waiting":  # waiting: said by _waiting_hint, knowing the items
        out(f"run {run_id} {followed.status}: {followed.error}")
    return {"completed": 0, "waiting": 3}.get(followed.status, 1)


def _endpoints(served: Mapping[str, int]) -> str:
    return ", ".join(f"{e} ({n})" for e, n in sorted(served.items()))
