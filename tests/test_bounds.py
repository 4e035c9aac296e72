"""Every stored message and input has a size bound (issue 12, finding 5): a huge error
is kept head and tail in the log (whole in the blob store), a huge workflow input is
kept by reference, and one past the hard limit is refused before its run exists."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from taskloom import (
    ActivityError,
    Context,
    Orchestrator,
    PayloadTooLargeError,
    RetryPolicy,
    RunFailedError,
    RunNotFoundError,
    Settings,
    activity,
    workflow,
)
from taskloom.engine.blobs import is_ref
from taskloom.engine.bounds import ERROR_TEXT_LIMIT, bound_text
from tests.helpers import running

pytestmark = pytest.mark.anyio

MB = 1024 * 1024
SMALL = 32 * 1024  # "a few tens of KiB": what any one stored record may take


def huge_message(size: int) -> str:
    return "HEAD>" + "x" * (size - 10) + "<TAIL"


@activity(name="b.explode", retry=RetryPolicy(max_attempts=3, initial_interval=0.01, jitter=0))
async def explode(size: int) -> str:
    raise ValueError(huge_message(size))


@workflow(name="b.calls_explode")
async def calls_explode(ctx: Context, size: int) -> str:
    return str(await ctx.run(explode, size))


@workflow(name="b.digest")
async def digest(ctx: Context, data: str) -> dict[str, Any]:
    return {"len": len(data), "sha256": hashlib.sha256(data.encode()).hexdigest()}


@workflow(name="b.parent")
async def parent(ctx: Context, data: str) -> dict[str, Any]:
    return dict(await ctx.child(digest, data))


@activity(name="b.measure", retry=RetryPolicy(max_attempts=2, initial_interval=0.01, jitter=0))
async def measure(data: str) -> int:
    raise ValueError(f"cannot measure {len(data)} characters")


@workflow(name="b.measure_fails")
async def measure_fails(ctx: Context, data: str) -> str:
    try:
        await ctx.run(measure, data)
    except ActivityError as exc:
        return exc.error_type
    return "measured"


DEFS: dict[str, Any] = {
    "workflows": [calls_explode, digest, parent, measure_fails],
    "activities": [explode, measure],
}


@pytest.fixture
async def orch_big(
    client: Redis, prefix: str, redis_url: str, tmp_path: Path
) -> AsyncIterator[Orchestrator]:
    """An orchestrator (and its workers) with a blob store under ``tmp_path`` and a
    hard limit that lets a 50 MB value through."""
    settings = Settings(
        redis_url=redis_url,
        key_prefix=prefix,
        blob_url=str(tmp_path / "blobs"),
        payload_hard_limit=64 * MB,
    )
    async with Orchestrator(client=client, settings=settings) as o:
        yield o


async def stream_entry_sizes(orch: Orchestrator, run_id: str) -> dict[str, int]:
    """Bytes of each entry of the run's log stream as Redis holds it."""
    entries = await orch.store.raw.xrange(orch.store.keys.log(run_id))
    return {
        entry_id: sum(len(k) + len(v.encode()) for k, v in fields.items())
        for entry_id, fields in entries
    }


async def meta_bytes(orch: Orchestrator, run_id: str) -> int:
    meta = await orch.store.raw.hgetall(orch.store.keys.meta(run_id))
    assert meta, f"no run {run_id}"
    return sum(len(k) + len(v.encode()) for k, v in meta.items())


def test_bound_text_keeps_head_and_tail_and_says_how_much_was_cut() -> None:
    text = huge_message(100_000)
    cut = bound_text(text, 1000, slack=0)
    assert cut.startswith("HEAD>") and cut.endswith("<TAIL")
    assert "… 99000 bytes cut …" in cut and len(cut.encode()) < 1100
    assert bound_text("short", 1000) == "short"
    wide = bound_text("é" * 5000, 1001, slack=0)  # a character split at the cut is dropped
    assert wide.startswith("é" * 250) and wide.endswith("é" * 250)
    assert "… 9000 bytes cut …" in wide


async def test_a_10mb_error_gives_bounded_events_and_a_failed_run(orch_big: Orchestrator) -> None:
    orch = orch_big
    size = 10 * MB
    async with running(orch.worker(**DEFS)):
        handle = await orch.start(calls_explode, size)
        with pytest.raises(RunFailedError) as failed:
            await handle.result(timeout=60)
    info = await handle.info()
    assert info.status == "failed", "a clear outcome, not a run left running"
    assert "ValueError" in str(failed.value) and "HEAD>" in str(failed.value)

    sizes = await stream_entry_sizes(orch, handle.run_id)
    events = await orch.store.read_log(handle.run_id)
    kinds = [e.type for e in events]
    assert kinds.count("activity_retrying") == 2 and "activity_failed" in kinds
    assert kinds[-1] == "run_failed"
    assert max(sizes.values()) < SMALL, sizes  # retries, activity_failed, run_failed
    assert await meta_bytes(orch, handle.run_id) < SMALL  # the run's hash keeps the error

    [letter] = await orch.dead_letters.list()
    raw = await orch.store.raw.get(orch.store.keys.dlq_entry(letter.queue, letter.id))
    assert raw is not None and len(raw.encode()) < SMALL, "the dead letter is bounded too"

    failed_event = next(e for e in events if e.type == "activity_failed").data
    error = failed_event["error"]
    assert error["message"].startswith("HEAD>") and error["message"].endswith("<TAIL")
    assert "bytes cut" in error["message"] and error["message_bytes"] == size
    assert len(error["message"].encode()) <= ERROR_TEXT_LIMIT + 100
    assert "HEAD>" not in error["traceback"], "the traceback does not repeat the message"
    assert all(len(h["error"]["message"]) <= 600 for h in failed_event["history"])
    assert is_ref(error["full_message"])
    assert await orch.payloads().unpack(error["full_message"]) == huge_message(size)


async def test_a_50mb_input_is_kept_by_reference_and_arrives_intact(
    orch_big: Orchestrator,
) -> None:
    orch = orch_big
    data = "".join(chr(ord("a") + i % 26) for i in range(1000)) * (50 * 1000)  # 50 MB
    async with running(orch.worker(**DEFS)):
        handle = await orch.start(digest, data)
        result = await handle.result(timeout=120)
    assert result == {"len": len(data), "sha256": hashlib.sha256(data.encode()).hexdigest()}
    assert await meta_bytes(orch, handle.run_id) < SMALL, "the run's hash holds a reference"
    sizes = await stream_entry_sizes(orch, handle.run_id)
    assert max(sizes.values()) < SMALL


async def test_a_big_child_input_and_a_failed_activitys_big_input_stay_references(
    orch_big: Orchestrator,
) -> None:
    orch = orch_big
    data = "y" * (256 * 1024)  # over the 32 KiB threshold
    async with running(orch.worker(**DEFS)):
        handle = await orch.start(parent, data)
        assert (await handle.result(timeout=30))["len"] == len(data)
        failing = await orch.start(measure_fails, data)
        assert await failing.result(timeout=30) == "ValueError"
    child_id = next(
        e.data["child_id"]
        for e in await orch.store.read_log(handle.run_id)
        if e.type == "child_started"
    )
    assert await meta_bytes(orch, child_id) < SMALL, "the child's input is a reference too"
    # the retry and the dead letter keep the argument's reference, not its value
    sizes = await stream_entry_sizes(orch, failing.run_id)
    assert max(sizes.values()) < SMALL
    [letter] = await orch.dead_letters.list()
    assert is_ref(letter.args)


async def test_an_input_past_the_hard_limit_is_refused_before_its_run_exists(
    client: Redis, prefix: str, redis_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        redis_url=redis_url,
        key_prefix=prefix,
        blob_url=str(tmp_path / "blobs"),
        payload_hard_limit=64 * 1024,
    )
    async with Orchestrator(client=client, settings=settings) as orch:
        with pytest.raises(PayloadTooLargeError) as refused:
            await orch.start(digest, "z" * 100_000, run_id="too-big")
        with pytest.raises(RunNotFoundError):
            await orch.handle("too-big").info()
    message = str(refused.value)
    assert "input of workflow 'b.digest'" in message
    assert "TASKLOOM_PAYLOAD_HARD_LIMIT" in message and "by reference" in message


async def test_a_worker_without_the_blob_store_fails_a_referenced_input_saying_why(
    orch_big: Orchestrator, make_worker: Any
) -> None:
    handle = await orch_big.start(digest, "w" * (64 * 1024))
    async with running(make_worker(**DEFS)):  # no blob store: it cannot read the input
        with pytest.raises(RunFailedError, match="blob store"):
            await handle.result(timeout=30)
