"""The store's Lua scripts survive a server that forgot them (a restart, SCRIPT FLUSH):
a NOSCRIPT reply loads them and the write goes through, whether it was sent alone or
in a pipeline of several commands."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from taskloom.engine.store import Store

pytestmark = pytest.mark.anyio


async def test_a_flushed_script_cache_is_reloaded_and_each_write_lands_once(
    store: Store, client: Redis
) -> None:
    run_id = "noscript"
    await store.create_run(run_id, workflow="w", input_json='{"args":[],"kwargs":{}}')
    queue = store.keys.queue("q")
    msg_id = await client.xadd(queue, {"run": run_id})
    await client.xgroup_create(queue, "workers", id="0")  # the group the acks go to
    await client.xreadgroup("workers", "c", {queue: ">"})

    await client.script_flush()  # alone: one EVALSHA, sent as a single command
    alone = await store.record([(run_id, "1", {"type": "activity_completed", "seq": "1"})], "w1")
    await client.script_flush()  # with the delivery's XACK and XDEL: a pipeline
    piped = await store.record(
        [(run_id, "2", {"type": "activity_completed", "seq": "2"})],
        "w1",
        acks=[("q", msg_id)],
    )

    assert [r.status for r in alone + piped] == ["ok", "ok"]
    assert await client.hkeys(store.keys.steps(run_id)) == ["1", "2"]
    log = [e.type for e in await store.read_log(run_id)]
    assert log == ["run_created", "activity_completed", "activity_completed"]
    assert await client.xlen(queue) == 0  # acknowledged and deleted
