"""A worker's start: it imports only what it serves, loads the layers above the engine
off the event loop, and settles its memory like the CLI's (issue 18).

Before, ``taskloom worker`` imported every command, the pipeline, the verifiers and
the LLM layer before its first activity (1.15-1.93 s), and only the CLI worker froze
the GC.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import os
import subprocess
import sys
import threading
from typing import Any

import pytest

from taskloom import Context, Orchestrator, Store, Worker, activity, workflow
from taskloom.engine.worker import YOUNG_GC_THRESHOLD
from taskloom.terminal import cli
from tests.helpers import ROOT, running, wait_until

pytestmark = pytest.mark.anyio

HEAVY = ("openai", "anthropic", "jinja2", "starlette", "prometheus_client", "pydantic")
"""Packages (and what they hold) a worker of plain engine code has no use for."""

_WORKER_IMPORTS = """
import asyncio, json, sys
from taskloom.engine.worker import YOUNG_GC_THRESHOLD
from taskloom.terminal import cli
cli._parser("worker")  # what `taskloom worker` parses with
from taskloom import Orchestrator, Settings
import tests.plain_workflows

async def main():
    orch = Orchestrator(settings=Settings(redis_url=sys.argv[1], key_prefix=sys.argv[2]))
    async with orch:
        orch.worker(modules=["tests.plain_workflows"])
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {heavy}
                                or m.startswith(("taskloom.pipeline.", "taskloom.verifiers")))))

asyncio.run(main())
"""


def _python(code: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_a_worker_for_plain_engine_code_imports_no_sdk_template_or_web_library(
    redis_url: str, prefix: str
) -> None:
    code = _WORKER_IMPORTS.replace("{heavy}", repr(set(HEAVY)))
    assert json.loads(_python(code, redis_url, prefix)) == []  # the pipeline neither


_AGENT_WORKER = """
import asyncio, json, sys
from taskloom import Context, Orchestrator, Settings
from taskloom.agents import Agent
from taskloom.pipeline.subagents import agent_runner

async def main():
    orch = Orchestrator(settings=Settings(redis_url=sys.argv[1], key_prefix=sys.argv[2]))
    async with orch:
        worker = orch.worker(agents=[Agent(name="a", model="openai:gpt-4.1-mini")])
        before = ["jinja2" in sys.modules, "pydantic" in sys.modules]
        await agent_runner(worker).warm([])
        text = agent_runner(worker).prompts.render("subagent", role="r", task="t", name="a")
        print(json.dumps([*before, "jinja2" in sys.modules, "t" in text]))

asyncio.run(main())
"""


def test_a_worker_with_subagents_loads_jinja2_in_its_warm_up_not_at_start(
    redis_url: str, prefix: str
) -> None:
    """``from taskloom import Context`` and the subagents a worker serves at once load no
    Jinja2 (~100 ms to import and compile) and no pydantic (~60 ms; an agent without an
    output model or tools has no use for it, and the SDKs load it in the warm-up); the
    warm-up thread loads Jinja2 before a call."""
    assert json.loads(_python(_AGENT_WORKER, redis_url, prefix)) == [False, False, True, True]


def test_the_cli_loads_with_the_gc_paused_and_leaves_it_running() -> None:
    seen: list[bool] = []

    def parse() -> argparse.Namespace:
        seen.append(gc.isenabled())
        return argparse.Namespace()

    assert gc.isenabled()
    cli._load(parse)
    assert seen == [False]
    assert gc.isenabled()


def test_the_in_process_worker_freezes_the_gc_like_the_cli_worker(
    redis_url: str, prefix: str
) -> None:
    code = """
import asyncio, gc, sys
from taskloom import Orchestrator, Settings

async def main():
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold()[0] == 700
    settings = Settings(redis_url=sys.argv[1], key_prefix=sys.argv[2])
    async with Orchestrator(settings=settings) as orch:
        worker = orch.worker()
        task = asyncio.create_task(worker.run())
        await worker.started.wait()
        print(gc.get_freeze_count(), *gc.get_threshold())
        worker.stop()
        await task

asyncio.run(main())
"""
    frozen, young, *older = map(int, _python(code, redis_url, prefix).split())
    assert frozen > 0
    assert (young, older) == (YOUNG_GC_THRESHOLD, [10, 10])  # the young passes are rarer


def test_the_command_table_is_what_the_command_modules_register() -> None:
    registered: dict[str, tuple[str, str]] = {}

    def cmd(name: str, handler: Any, help_: str) -> argparse.ArgumentParser:
        registered[name] = (handler.__module__.rsplit(".", 1)[-1], help_)
        return argparse.ArgumentParser()

    for name, (module, help_) in cli.COMMANDS.items():
        if module == "cli":
            registered[name] = (module, help_)
        elif name not in registered:  # its module registers it and its neighbours
            importlib.import_module(f"taskloom.terminal.{module}").register(cmd)
    assert list(registered) == list(cli.COMMANDS)
    for name, (module, help_) in cli.COMMANDS.items():
        assert registered[name][0] == module, name
        assert help_ in ("", registered[name][1]), name


# -- a layer loaded off the loop ------------------------------------------------------
@activity(name="startup.plain")
async def plain(i: int) -> int:
    return i


@activity(name="startup.layered")
async def layered(i: int) -> int:
    return -i


@workflow(name="startup.both")
async def both(ctx: Context) -> list[int]:
    return [await ctx.run(plain, 1), await ctx.run("startup.layered", 2)]  # by name


@workflow(name="startup.plain_only")
async def plain_only(ctx: Context) -> int:
    return int(await ctx.run(plain, 3))


async def test_work_of_a_layer_still_loading_waits_for_it_and_plain_work_does_not(
    orch: Orchestrator, store: Store
) -> None:
    release = threading.Event()
    loading = threading.Event()

    def load() -> Any:  # in a thread, as the imports of a real layer
        loading.set()
        release.wait(60)
        return lambda worker: worker.registry.add(layered)

    worker = Worker(store, workflows=[both, plain_only], activities=[plain], lease_ttl=1.0)
    worker.defer(load)
    first = await orch.start(both)
    async with running(worker):
        await wait_until(loading.is_set, "the layer loading")
        # Plain work is served while the layer loads; the layer's activity waits for it.
        assert await orch.handle((await orch.start(plain_only)).run_id).result(timeout=60) == 3
        assert await first.status() not in ("completed", "failed")
        assert not worker.loaded.is_set()
        release.set()
        assert await first.result(timeout=60) == [1, -2]
        assert worker.registry.loading is None
        await asyncio.wait_for(worker.loaded.wait(), 60)
    assert await orch.dead_letters.count() == 0  # nothing was called unknown


async def test_a_deferred_worker_serves_goals_all_the_same(redis_url: str, prefix: str) -> None:
    """The pipeline is installed by the time the worker has loaded its layers."""
    code = """
import asyncio, json, sys
from taskloom import Orchestrator, Settings

async def main():
    settings = Settings(redis_url=sys.argv[1], key_prefix=sys.argv[2])
    async with Orchestrator(settings=settings) as orch:
        worker = orch.worker()
        task = asyncio.create_task(worker.run())
        await worker.started.wait()
        before = "taskloom.pipeline" in worker.registry.workflow_names
        while worker.registry.loading is not None:
            await asyncio.sleep(0.01)
        after = "taskloom.pipeline" in worker.registry.workflow_names
        print(json.dumps([before, after, "taskloom.agent" in worker.registry.activity_names]))
        worker.stop()
        await task

asyncio.run(main())
"""
    assert json.loads(_python(code, redis_url, prefix)) == [False, True, True]


def test_the_cli_worker_says_when_its_background_layers_are_in(redis_url: str, prefix: str) -> None:
    """``taskloom worker`` prints a "ready" line once the pipeline loaded off the loop
    is installed (the benchmarks wait for it before measuring): more workflows than at
    its first line, the pipeline's among them."""
    env = {**os.environ, "TASKLOOM_REDIS_URL": redis_url, "TASKLOOM_KEY_PREFIX": prefix}
    args = [
        sys.executable,
        *["-m", "taskloom.terminal.cli", "worker", "--import", "tests.plain_workflows"],
    ]
    with subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            first, ready = proc.stdout.readline(), proc.stdout.readline()
        finally:
            proc.terminate()
            proc.wait(30)
    counted = [int(line.split(" workflows")[0].rsplit(" ", 1)[1]) for line in (first, ready)]
    assert ": ready, " in ready, (first, ready)
    assert counted[1] > counted[0], (first, ready)


@pytest.mark.parametrize("module", ["runs_commands", "dlq_commands", "inbox_cli"])
def test_the_commands_that_show_runs_load_neither_the_pipeline_nor_pydantic(module: str) -> None:
    """``taskloom status``, ``runs``, ``result``, ``history``, ``dlq`` and ``inbox`` read
    what is recorded: the pipeline's name and its log entries
    (:mod:`taskloom.pipeline.entries`), not the pipeline, its plans and pydantic models,
    which took ``status`` from ~0.35 to ~0.75 s."""
    code = (
        "import sys, taskloom.terminal.cli, taskloom.terminal.store_commands, "
        f"taskloom.terminal.{module}; "
        "print([m for m in ('taskloom.pipeline.pipeline', 'taskloom.pipeline.plan', "
        "'pydantic') if m in sys.modules])"
    )
    assert _python(code) == "[]"
