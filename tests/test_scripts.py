"""The store's Lua scripts survive a server that forgot them (a restart, SCRIPT FLUSH):
a NOSCRIPT reply loads them and the write goes through, whether it was sent alone or
in a pipeline of several commands."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from taskloom.agents.budget import Budgets
from taskloom.agents.limits import RateLimiter
from taskloom.engine.store import Store
from taskloom.luascripts import LuaScripts
from tests.helpers import ROOT

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


def _fresh_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scripts: dict[str, str]) -> str:
    """A package of Lua scripts the server has never seen (each carries a new marker,
    so its SHA is new): what a restarted server gives every script."""
    package = f"tl_lua_{uuid.uuid4().hex[:8]}"
    (tmp_path / package / "lua").mkdir(parents=True)
    (tmp_path / package / "__init__.py").write_text("")
    for name, body in scripts.items():
        (tmp_path / package / "lua" / f"{name}.lua").write_text(f"-- {uuid.uuid4().hex}\n{body}")
    monkeypatch.syspath_prepend(str(tmp_path))
    return package


async def test_one_loader_runs_the_engine_s_scripts_and_the_llm_layer_s(
    store: Store, client: Redis, prefix: str
) -> None:
    """The store, the budget and the rate limiter share one loader; each reads its own
    folder, every ``.lua`` file of it (a new script needs no list to be kept in step)."""
    engine = sorted(p.stem for p in (ROOT / "orchestrator" / "lua").glob("[!_]*.lua"))
    assert isinstance(store.scripts, LuaScripts)
    assert sorted(store.scripts.names) == engine
    for owner in (Budgets(client, prefix=prefix), RateLimiter(client, model="a:b", prefix=prefix)):
        scripts = owner._scripts
        assert isinstance(scripts, LuaScripts)
        assert set(scripts.names) <= {p.stem for p in (ROOT / "agents" / "lua").glob("*.lua")}


async def test_a_lone_command_that_gets_noscript_is_sent_again_as_eval(
    client: Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pipeline of one command (the engine's common case) recovers from NOSCRIPT as a
    call does: that one script is sent as EVAL, the others are not loaded, and an error
    the script raises comes back as the reply, as from a pipeline."""
    package = _fresh_package(
        tmp_path,
        monkeypatch,
        {"echo": "return ARGV[1]\n", "boom": "return redis.error_reply('boom')\n"},
    )
    scripts = LuaScripts(client, package=package)
    assert await scripts.pipeline(lambda p: scripts.queue(p, "echo", keys=[], args=["x"])) == ["x"]
    assert await client.script_exists(scripts.sha("echo"), scripts.sha("boom")) == [True, False]
    (failed,) = await scripts.pipeline(lambda p: scripts.queue(p, "boom", keys=[], args=[]))
    assert isinstance(failed, ResponseError) and "boom" in str(failed)
    assert await client.script_exists(scripts.sha("boom")) == [True]


async def test_a_pipeline_that_gets_noscript_runs_again_with_its_scripts_loaded(
    client: Redis, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several commands, one of them a script the server lacks: the scripts are loaded
    and the pipeline runs once more, so each reply is the second run's."""
    package = _fresh_package(
        tmp_path, monkeypatch, {"incr": "return redis.call('INCR', KEYS[1])\n"}
    )
    scripts = LuaScripts(client, package=package)
    key = f"{prefix}:n"

    def build(pipe: object) -> None:
        pipe.set(key, 10)  # type: ignore[attr-defined]
        scripts.queue(pipe, "incr", keys=[key], args=[])

    assert await scripts.pipeline(build) == [True, 11]
    assert await client.get(key) == "11"


async def test_every_script_of_every_folder_begins_with_the_shared_prelude(
    client: Redis, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``taskloom/lua/_prelude.lua``'s helpers are there in any folder's script; the
    prelude itself is no script."""
    package = _fresh_package(
        tmp_path, monkeypatch, {"fields": "return hmget(KEYS[1], {'a', 'b', 'c'})"}
    )
    key = f"{prefix}:prelude"
    await client.hset(key, mapping={"a": "1", "c": "3"})
    assert await LuaScripts(client, package=package).call("fields", [key], []) == ["1", None, "3"]
    assert "_prelude" not in LuaScripts(client, package="taskloom").names
