"""A master of the cluster SIGKILLed mid-run and its replica promoted: the runs whose
keys lived on it resume and complete, each step recorded once (writes the master had
acknowledged but not yet replicated may be gone: the owner then replays the run, as
after a single Redis's restart).

A cluster of its own (3 masters, 1 replica each: tests/cluster.py), since the test
breaks it.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from taskloom import Context, Orchestrator, activity, workflow
from taskloom.terminal.doctor import diagnose
from tests.cluster import LocalCluster
from tests.helpers import running, wait_until
from tests.test_durability import assert_recorded_once

pytestmark = pytest.mark.anyio

STEPS = 40
done: Counter[str] = Counter()
"""Executions of ``step`` per run (the worker runs in this process)."""


@pytest.fixture(scope="module")
def replicated_cluster() -> Iterator[LocalCluster]:
    home = Path(tempfile.mkdtemp(prefix="tl-failover-", dir="/tmp"))
    with LocalCluster(home, masters=3, replicas=1) as cluster:
        yield cluster
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_url(replicated_cluster: LocalCluster) -> str:
    """conftest's client, store, orch and workers on this module's cluster."""
    return replicated_cluster.url


@activity(name="failover.step")
async def step(run: str, value: int) -> int:
    await asyncio.sleep(0.03)
    done[run] += 1
    return value + 1


@workflow(name="failover.chain")
async def chain(ctx: Context, tag: str, steps: int) -> int:
    value = 0
    for _ in range(steps):
        value = await ctx.run(step, tag, value)
    return value


async def test_runs_on_a_killed_master_resume_on_its_promoted_replica(
    orch: Orchestrator, make_worker, replicated_cluster: LocalCluster, client: Redis
) -> None:  # type: ignore[no-untyped-def]
    cluster = replicated_cluster
    async with running(make_worker(workflows=[chain], activities=[step], concurrency=16)):
        handles = {f"r{i}": await orch.start(chain, f"r{i}", STEPS) for i in range(12)}
        home = {
            tag: cluster.master_of(client.keyslot(orch.store.keys.meta(h.run_id)))  # type: ignore[attr-defined]
            for tag, h in handles.items()
        }
        # Not the node the URL names: a new client (the fixtures' cleanup) starts there.
        victim = Counter(p for p in home.values() if p != cluster.ports[0]).most_common(1)[0][0]
        on_victim = [tag for tag, port in home.items() if port == victim]
        (replica,) = cluster.replicas_of(victim)
        await wait_until(
            lambda: all(done[t] >= 5 for t in on_victim), "the victim's runs under way"
        )
        assert all(done[t] < STEPS for t in on_victim)
        cluster.kill(victim)  # mid-run, writes in flight (replication is asynchronous)
        await asyncio.to_thread(cluster.wait_promoted, replica)

        results = await asyncio.gather(*(h.result(timeout=120) for h in handles.values()))
        assert results == [STEPS] * len(handles)
    for tag, handle in handles.items():
        assert len(await assert_recorded_once(orch.store, handle.run_id)) == STEPS, tag
    moved = {
        cluster.master_of(client.keyslot(orch.store.keys.meta(handles[t].run_id)))
        for t in on_victim
    }  # type: ignore[attr-defined]
    assert moved == {replica}


async def test_doctor_counts_the_replicas_of_each_master(
    client: Redis, replicated_cluster: LocalCluster
) -> None:
    """The cluster client may know only the masters: the replicas count from each
    master's replication view (it said '0 replicas' of this cluster). After the
    failover above, a promoted replica is a master without one, and doctor says so."""
    replicas = len(replicated_cluster.procs) - 3  # every live node but the 3 masters
    report = await diagnose(client, pings=3)
    cluster = next(check for check in report.checks if check.name == "cluster")
    assert cluster.ok and f"3 masters, {replicas} replicas" in cluster.detail
    assert ("without a replica" in cluster.detail) == (replicas < 3)
