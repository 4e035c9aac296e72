"""taskloom on a local Redis Cluster of 3 masters (tests/cluster.py), started once per
session: the engine, durability, pipeline, DLQ, budget and rate-limit tests that matter
most, run again here on ``redis+cluster://`` (this module's ``redis_url``), and what
only a cluster has: runs spread over the masters, and a URL of the wrong mode refused
at once with the fix.

The whole suite runs on the cluster with ``TASKLOOM_TEST_CLUSTER=1``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis

from taskloom import Context, Orchestrator, Settings, activity, workflow
from taskloom.engine.clustering import seed_nodes
from taskloom.engine.connection import connect, make_client
from taskloom.engine.store import Store
from taskloom.errors import ConfigurationError, RedisRefusedError
from taskloom.terminal.doctor import diagnose, render_json
from tests.cluster import LocalCluster
from tests.conftest import REDIS_URL
from tests.helpers import Relay, running

# The same tests as on a single Redis: collected again here, on this module's cluster.
from tests.test_budget import test_concurrent_callers_never_overspend  # noqa: F401
from tests.test_durability import (  # noqa: F401
    assert_recorded_once,
    test_sigkill_mid_fan_out_another_worker_resumes_exactly_once,
)
from tests.test_engine import (  # noqa: F401
    test_durable_sleep_and_deterministic_helpers,
    test_gather_of_1000_activities_fans_in_correctly,
    test_signal_reaches_a_run_no_worker_holds,
    test_signal_sent_before_the_wait_is_kept,
)
from tests.test_follow import (  # noqa: F401
    test_two_thousand_waiters_all_return_over_a_bounded_number_of_connections,
)
from tests.test_limits import ManualTime, _deferred_for, _limiter
from tests.test_pipeline import (  # noqa: F401
    test_a_replan_reuses_finished_work_and_cancels_dropped_activities,
    test_an_uncertain_verdict_escalates_and_approve_resumes_the_run,
)
from tests.test_retries import (  # noqa: F401
    _reset,
    test_exhausted_attempts_raise_into_the_workflow_and_leave_a_dead_letter,
    test_non_retryable_pauses_at_once_and_redrive_completes_the_run,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="session")
def redis_url(local_cluster: LocalCluster) -> Iterator[str]:
    """Every fixture of conftest (client, store, orch, workers) on the local cluster."""
    yield local_cluster.url


@activity(name="cluster.inc")
async def inc(x: int) -> int:
    return x + 1


@workflow(name="cluster.chain")
async def chain(ctx: Context, steps: int) -> int:
    value = 0
    for _ in range(steps):
        value = await ctx.run(inc, value)
    return value


async def test_a_200_step_chain_completes(orch: Orchestrator, make_worker) -> None:  # type: ignore[no-untyped-def]
    async with running(make_worker(workflows=[chain], activities=[inc])):
        handle = await orch.start(chain, 200)
        assert await handle.result(timeout=120) == 200
    assert len(await assert_recorded_once(orch.store, handle.run_id)) == 200


async def test_runs_spread_over_every_master(
    orch: Orchestrator, make_worker, local_cluster: LocalCluster, prefix: str
) -> None:  # type: ignore[no-untyped-def]
    async with running(make_worker(workflows=[chain], activities=[inc], concurrency=32)):
        handles = [await orch.start(chain, 2) for _ in range(30)]
        assert await asyncio.gather(*(h.result(timeout=60) for h in handles)) == [2] * 30
    held = [
        sum(1 for _ in local_cluster.node(port).scan_iter(match=f"{prefix}:run:*:meta"))
        for port in local_cluster.ports
    ]
    assert sum(held) == 30
    assert all(held), f"runs per master: {held}"


async def test_rpm_is_shared_by_two_clients_of_the_cluster(
    client: Redis, redis_url: str, prefix: str
) -> None:
    clock = ManualTime()
    other = make_client(redis_url, key_prefix=prefix)
    try:
        a, b = _limiter(client, prefix, clock, rpm=3), _limiter(other, prefix, clock, rpm=3)
        for who in (a, b, a):
            await who.reserve()
            clock.t += 10
        assert await _deferred_for(b) == pytest.approx(30.0)
        await other.script_flush()  # every node forgets the scripts: NOSCRIPT recovery
        r = await b.reserve()
        assert r.waited == pytest.approx(30.0)
    finally:
        await other.aclose()


async def test_store_keys_of_one_run_share_a_slot(store: Store, client: Redis) -> None:
    keys = store.keys
    slots = {client.keyslot(k) for k in (*keys.run_keys("r1"), keys.claim("r1", "3"))}  # type: ignore[attr-defined]
    assert len(slots) == 1


async def test_a_single_redis_url_to_a_cluster_node_is_refused_at_once(
    local_cluster: LocalCluster,
) -> None:
    async with Relay.to(f"redis://127.0.0.1:{local_cluster.ports[1]}") as door:
        with pytest.raises(RedisRefusedError) as caught:
            await connect(Settings(redis_url=door.url()))
        assert door.entered == 1  # not retried as an outage
    assert caught.value.kind == "cluster_mode"
    assert f"redis+cluster://127.0.0.1:{door.port}" in caught.value.fix
    assert "TASKLOOM_REDIS_CLUSTER=1" in caught.value.fix


async def test_a_redirect_to_a_single_redis_client_is_a_refusal(
    local_cluster: LocalCluster, prefix: str
) -> None:
    client = make_client(f"redis://127.0.0.1:{local_cluster.ports[0]}/0")
    try:
        with pytest.raises(RedisRefusedError) as caught:  # some key lives on another node
            for n in range(50):
                await client.get(f"{prefix}:{n}")
        assert caught.value.kind == "cluster_mode"
    finally:
        await client.aclose()


async def test_a_plain_url_with_the_cluster_setting_connects(local_cluster: LocalCluster) -> None:
    port = local_cluster.ports[2]
    conn = await connect(Settings(redis_url=f"redis://127.0.0.1:{port}", redis_cluster=True))
    try:
        assert len(conn.client.get_primaries()) == 3  # type: ignore[attr-defined]
    finally:
        await conn.close()


async def test_a_url_naming_several_nodes_starts_while_the_first_is_down(
    local_cluster: LocalCluster,
) -> None:
    """A process must be able to start while the node its URL names first is down (a
    master SIGKILLed, its replica promoted): the URL may name several to start from."""
    with socket.socket() as s:  # a port nothing listens on: the "dead" first node
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    live = local_cluster.ports[1]
    conn = await connect(Settings(redis_url=f"redis+cluster://127.0.0.1:{dead},127.0.0.1:{live}"))
    try:
        assert len(conn.client.get_primaries()) == 3  # type: ignore[attr-defined]
    finally:
        await conn.close()


def test_seed_nodes_keep_the_credentials_and_options_of_the_url() -> None:
    url = "rediss://app:pw@10.0.0.1:7000,10.0.0.2:7001, [::1]:7002/0?ssl_ca_certs=/ca.pem"
    assert seed_nodes(url) == (
        "rediss://app:pw@10.0.0.1:7000/0?ssl_ca_certs=/ca.pem",
        [("10.0.0.2", 7001), ("::1", 7002)],
    )
    assert seed_nodes("redis://h:1") == ("redis://h:1", [])
    with pytest.raises(ConfigurationError, match="HOST:PORT"):
        seed_nodes("redis://h:1,h2")


async def test_a_cluster_url_to_a_single_redis_is_refused_at_once() -> None:
    host_port = REDIS_URL.partition("://")[2].partition("/")[0]
    with pytest.raises(RedisRefusedError) as caught:
        await connect(Settings(redis_url=f"redis+cluster://{host_port}"))
    assert caught.value.kind == "not_cluster"
    assert f"redis://{host_port}/0" in caught.value.fix


async def test_a_refused_login_on_a_cluster_is_not_retried(local_cluster: LocalCluster) -> None:
    for port in local_cluster.ports:  # ACLs are per node
        local_cluster.node(port).acl_setuser("tl-app", enabled=True, passwords=["+right-pw"])
    async with Relay.to(f"redis://127.0.0.1:{local_cluster.ports[0]}") as door:
        url = f"redis+cluster://tl-app:s3cret-pw@127.0.0.1:{door.port}"
        with pytest.raises(RedisRefusedError) as caught:
            await connect(Settings(redis_url=url))
        assert door.entered == 1  # one login, refused: nothing retried
    assert caught.value.kind == "wrong_password"
    assert "s3cret-pw" not in str(caught.value)
    assert "redis+cluster://USER:PASSWORD@" in caught.value.fix


def test_a_cluster_url_names_database_0_only() -> None:
    with pytest.raises(ConfigurationError, match="only database 0"):
        make_client("redis+cluster://127.0.0.1:7000/2")
    with pytest.raises(ConfigurationError, match="TASKLOOM_REDIS_CLUSTER"):
        make_client("redis+cluster://127.0.0.1:7000", cluster=False)


async def test_doctor_reports_the_cluster_and_each_node(
    client: Redis, local_cluster: LocalCluster
) -> None:
    first, *others = local_cluster.ports
    local_cluster.node(first).config_set("appendonly", "yes")
    try:
        report = await diagnose(client, pings=3)
    finally:
        local_cluster.node(first).config_set("appendonly", "no")
    by_name = {check.name: check for check in report.checks}
    assert by_name["cluster"].ok
    assert "3 masters" in by_name["cluster"].detail
    assert "16384 of 16384 slots served" in by_name["cluster"].detail
    persistence = by_name["persistence"]
    assert not persistence.ok  # AOF is on on one node only
    assert all(f"127.0.0.1:{p}" in persistence.fix for p in others)
    assert f"127.0.0.1:{first}" not in persistence.fix
    rows = render_json(report)
    assert '"nodes"' in rows
    assert sum(row["slots"] for row in report.nodes) == 16384
    assert {row["role"] for row in report.nodes} == {"master"}
    assert [row["aof"] for row in report.nodes if row["node"] == f"127.0.0.1:{first}"] == [True]


async def test_no_node_holds_more_than_max_connections(
    local_cluster: LocalCluster, prefix: str
) -> None:
    name = f"bound-{prefix}"
    url = f"{local_cluster.url}?client_name={name}&max_connections=2"
    client = make_client(url)
    try:
        await asyncio.gather(*(client.set(f"{prefix}:{n}", n) for n in range(300)))
        held = {
            port: sum(c.get("name") == name for c in local_cluster.node(port).client_list())
            for port in local_cluster.ports
        }
    finally:
        await client.aclose()
    assert all(0 < n <= 2 for n in held.values()), held  # the first node's CLUSTER SLOTS too
