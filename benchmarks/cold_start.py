"""cold_start: from launching ``taskloom worker`` to its first activity started.

A run waits in the queue; a fresh worker process is launched and the activity reports
the wall-clock time it started. The median of 5 launches, each a new process that
imports, connects, takes the run, replays it and starts its activity. ``cold_start_s``
serves :mod:`benchmarks.workloads` (what W4's restarted worker serves: an agent, so the
subagents load at start); ``cold_start_plain_s`` serves :mod:`benchmarks.cold_workloads`,
plain engine code (the pipeline and LLM layer load off the loop meanwhile).

Both read compiled bytecode, as an installed worker does (pip compiles it on install;
a first run writes it): the workers get a bytecode cache of their own
(:func:`bytecode_env`), filled by one launch not counted. Without one, as under
``PYTHONDONTWRITEBYTECODE=1`` with nothing compiled, every start compiles every module
it imports from source: ``cold_start_nocache_s`` is that start.

The yardstick, ``cold_start_raw_s``: W4's raw loop (:mod:`benchmarks.raw_worker`, plain
redis-py and the standard library) launched the same way with one task waiting, to the
start of that task: what any worker in Python on redis-py pays on this machine (the
interpreter, asyncio, redis-py, a connection), before any code of taskloom's.

``cold_start_without_otel_sdk_s`` and ``cold_start_raw_without_otel_sdk_s``: the first
and the yardstick again, launched where the OpenTelemetry SDK cannot be imported
(:mod:`benchmarks.without_otel_sdk`), as on an install without taskloom's ``otel``
extra: redis-py 8 imports the SDK's metrics at import time whenever the SDK is
installed, and this environment has it (the trace tests need it).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from statistics import median
from typing import Any

from redis.asyncio import Redis

from benchmarks import cold_workloads as cw
from benchmarks import raw_worker
from benchmarks import workloads as wl
from benchmarks.harness import ROOT, Bench, BenchmarkError, result_of
from benchmarks.measure import rounded

__all__ = ["LAUNCHES", "bytecode_env", "run"]

LAUNCHES = 5


def bytecode_env(bench: Bench, *, cached: bool = True) -> dict[str, str]:
    """The environment of a worker process that reads and writes compiled bytecode in
    this run's own cache (``cached``), or compiles every module it imports from source
    (an empty cache it may not write to)."""
    if cached:
        return {"PYTHONPYCACHEPREFIX": str(bench.tmp / "pycache"), "PYTHONDONTWRITEBYTECODE": ""}
    return {"PYTHONPYCACHEPREFIX": str(bench.tmp / "no-pycache"), "PYTHONDONTWRITEBYTECODE": "1"}


WITHOUT_OTEL_SDK = ("-m", "benchmarks.without_otel_sdk")
"""How a process is launched as on an install without the ``otel`` extra
(:mod:`benchmarks.without_otel_sdk`)."""


async def _launch(
    bench: Bench,
    module: str,
    workflow: str,
    args: list[Any],
    label: str,
    *,
    cached: bool = True,
    launcher: tuple[str, ...] = (),
) -> float:
    """Seconds from one worker process's launch to its first activity's start."""
    worker = bench.worker(
        "cold",
        4,
        label=f"-{module.rsplit('.', 1)[-1]}-{label}",
        module=module,
        extra_env=bytecode_env(bench, cached=cached),
        launcher=launcher,
    )
    async with bench.orchestrator("cold") as orch:
        handle = await orch.start(workflow, *args)
        try:
            launched = time.time()
            worker.start()
            result = await result_of(handle, [worker])
        finally:
            await worker.stop()
    started = result[0][0] if workflow == wl.CHAIN else result
    return float(started) - launched


async def _launch_raw(bench: Bench, label: str, *, launcher: tuple[str, ...] = ()) -> float:
    """Seconds from launching W4's raw loop, a task waiting, to that task's start (its
    task takes no time: the line it appends is written as it starts; the file's
    modification time says when)."""
    key = f"{bench.sub_prefix('cold')}-raw-{label}"
    path = bench.tmp / f"cold-raw-{label}.log"
    argv = raw_worker.command(
        bench.redis_url,
        key,
        n=1,
        concurrency=4,
        seconds=0,
        path=str(path),
        lease_ttl=1.0,
        launcher=launcher,
    )
    env = {**os.environ, **bytecode_env(bench), "PYTHONPATH": str(ROOT)}
    client = Redis.from_url(bench.redis_url, decode_responses=True)
    proc = None
    try:
        await client.xgroup_create(f"{key}:tasks", raw_worker.GROUP, id="0", mkstream=True)
        await client.xadd(f"{key}:tasks", {"i": "0"})
        launched = time.time()
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not path.exists() or not path.stat().st_size:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchmarkError(f"the raw worker ran no task (exit code {proc.poll()})")
            await asyncio.sleep(0.01)
        return path.stat().st_mtime - launched
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        await client.delete(f"{key}:tasks", f"{key}:results", f"{key}:done", f"{key}:ready")
        await client.aclose()


async def run(bench: Bench) -> dict[str, Any]:
    """Launch a worker :data:`LAUNCHES` times per module (and without a bytecode cache);
    the medians."""
    full_args: tuple[str, str, list[Any]] = ("benchmarks.workloads", wl.CHAIN, [1])
    plain_args: tuple[str, str, list[Any]] = ("benchmarks.cold_workloads", cw.PLAIN, [])
    await _launch(bench, *full_args, "compile")  # fills the cache: pip's compile step
    await _launch_raw(bench, "compile")
    full, plain, nocache, raw, bare, bare_raw = [], [], [], [], [], []
    for i in range(LAUNCHES):  # interleaved: the machine's load falls on all of them alike
        full.append(await _launch(bench, *full_args, str(i)))
        plain.append(await _launch(bench, *plain_args, str(i)))
        nocache.append(await _launch(bench, *full_args, f"nocache-{i}", cached=False))
        raw.append(await _launch_raw(bench, str(i)))
        bare.append(await _launch(bench, *full_args, f"bare-{i}", launcher=WITHOUT_OTEL_SDK))
        bare_raw.append(await _launch_raw(bench, f"bare-{i}", launcher=WITHOUT_OTEL_SDK))
    return {
        "workload": "cold_start",
        "cold_start_s": rounded(median(full)),
        "cold_start_plain_s": rounded(median(plain)),
        "cold_start_nocache_s": rounded(median(nocache)),
        "cold_start_max_s": rounded(max(full)),
        "cold_start_raw_s": rounded(median(raw)),
        "cold_start_without_otel_sdk_s": rounded(median(bare)),
        "cold_start_raw_without_otel_sdk_s": rounded(median(bare_raw)),
        "launches": LAUNCHES,
        "method": (
            "launch of `python -m taskloom.terminal.cli worker` to its first activity's "
            "start (wall clock), a run waiting in the queue; median of "
            f"{LAUNCHES} launches each, interleaved. cold_start_s and _plain_s read "
            "compiled bytecode (a cache of the run's own, filled by one launch first); "
            "cold_start_nocache_s compiles every module from source (no cache). "
            "cold_start_raw_s: W4's raw redis-py loop (benchmarks/raw_worker.py) "
            "launched the same way, one task waiting, to its start (the task writes "
            "a line as it starts; the file's mtime). The _without_otel_sdk_s pair: "
            "the same two launched through benchmarks/without_otel_sdk.py, where the "
            "OpenTelemetry SDK cannot be imported, as on an install without the otel "
            "extra (redis-py 8 imports the SDK's metrics at import whenever it is "
            "installed; this environment has it for the trace tests)."
        ),
    }
