"""Subagents inside workflows (``ctx.agent``): the official openai SDK against the fake
LLM server, the engine on real Redis. A recorded call is never sent again, not after a
replay and not after a SIGKILLed worker; budgets hold across a fan-out; tokens stream
live beside the log; model calls show in the metrics."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from redis.asyncio import Redis

from taskloom import (
    ManualClock,
    Orchestrator,
    RunFailedError,
    RunHandle,
    Settings,
    Store,
    workflow,
)
from taskloom.agents import Agent, AgentRunner, PriceTable, RateLimits
from taskloom.agents.fake_llm import (
    FakeLLM,
    Request,
    Step,
    disconnect,
    malformed_json,
    reply,
    unauthorized,
)
from taskloom.engine.blobs import is_ref
from taskloom.engine.metrics import Metrics
from taskloom.engine.store import Event
from taskloom.pipeline.subagents import agent_runner
from tests import subagent_workflows as flows
from tests.helpers import running, samples, value
from tests.test_durability import Spawn, start_worker, stop_worker

pytestmark = pytest.mark.anyio

MODEL = flows.MODEL
PRICES = PriceTable.builtin()


def task_of(request: Request) -> str:
    """The task a subagent was given (its user message)."""
    return str(request.body["messages"][-1]["content"])


def echo(*, latency: float = 0.0, **options: Any) -> Callable[[Request], Step]:
    """A script answering each task with ``done <task>``."""
    return lambda request: reply(f"done {task_of(request)}", latency=latency, **options)


@pytest.fixture
async def orch_blobs(
    client: Redis, prefix: str, redis_url: str, tmp_path: Path
) -> AsyncIterator[Orchestrator]:
    """An orchestrator whose workers keep a blob store under ``tmp_path`` and store
    every message over 100 bytes there."""
    settings = Settings(
        redis_url=redis_url,
        key_prefix=prefix,
        blob_url=str(tmp_path / "blobs"),
        payload_threshold=BLOB_THRESHOLD,
    )
    o = Orchestrator(client=client, settings=settings)
    await o.connect()
    yield o
    await o.close()


BLOB_THRESHOLD = 100


async def completed(store: Store, run_id: str) -> list[Event]:
    return [e for e in await store.read_log(run_id) if e.type == "activity_completed"]


async def results(orch: Orchestrator, run_id: str) -> list[dict[str, Any]]:
    """The results its activities recorded (read back from the blob store if there)."""
    payloads = orch.payloads()
    return [await payloads.unpack(e.data["result"]) for e in await completed(orch.store, run_id)]


async def test_an_agent_step_is_recorded_and_a_new_worker_replays_it_without_a_call(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    fake.add(reply(json={"claim": "water is wet", "confidence": 0.8}, input_tokens=900))
    first = orch.worker(modules=[flows])
    async with running(first):
        handle = await orch.start(flows.check_then_wait, "water is wet", run_id="fact-1")
        async for event in handle.events():
            if event.type == "activity_completed":
                break
    second = orch.worker(modules=[flows])  # a new worker, new clients: the run replays
    async with running(second):
        await handle.signal("go", "ana")
        result = await handle.result(timeout=20)
    assert len(fake.requests) == 1  # the model was called once, not again on replay
    fake.assert_complete()
    assert result["fact"] == {"claim": "water is wet", "confidence": 0.8}
    assert result["by"] == "ana"
    output_tokens = result["tokens"] - 900
    assert Decimal(str(result["cost"])) == PRICES.cost(MODEL, 900, output_tokens)
    system = fake.requests[0].body["messages"][0]["content"]
    assert "a fact checker" in system and "an encyclopedia" in system


async def test_messages_are_stored_by_content_and_the_log_keeps_references(
    fake: FakeLLM, orch_blobs: Orchestrator
) -> None:
    fake.answer_with(echo())
    worker = orch_blobs.worker(modules=[flows])
    brief = ": " + "a long brief for the writer, " * 4  # every message over BLOB_THRESHOLD
    refs: list[set[str]] = []
    async with running(worker):
        for run_id in ("parts-a", "parts-b"):  # the same conversations twice
            handle = await orch_blobs.start(flows.write_parts, 3, brief, run_id=run_id)
            assert await handle.result(timeout=20) == [f"done part {i}{brief}" for i in range(3)]
            run_refs = set()
            for result in await results(orch_blobs, run_id):
                messages = result["messages"]
                assert [m["size"] > 0 for m in messages] == [True] * 3
                assert all(is_ref(m) for m in messages)
                run_refs |= {m["$blob"] for m in messages}
            refs.append(run_refs)
    assert refs[0] == refs[1]  # stored once, referenced by both runs
    blobs = orch_blobs.payloads().blobs
    assert blobs is not None
    texts = [json.loads(await blobs.get(ref)) for ref in sorted(refs[0])]
    roles = Counter(m["role"] for m in texts)
    assert roles == {"system": 3, "user": 3, "assistant": 3}
    assert {m["content"] for m in texts if m["role"] == "assistant"} == {
        f"done part {i}{brief}" for i in range(3)
    }
    # remembered by the run (with its activities' arguments and results, over 100 bytes too)
    assert refs[0] <= await orch_blobs.store.raw.smembers(orch_blobs.store.keys.blobs("parts-a"))


async def test_messages_under_the_payload_threshold_stay_in_the_log_and_write_no_file(
    fake: FakeLLM, client: Redis, prefix: str, redis_url: str, tmp_path: Path
) -> None:
    # A subagent's system prompt holds its task: new at every call, so storing it by
    # content saved nothing and cost a file and two fsyncs per call.
    fake.answer_with(echo())
    blobs = tmp_path / "blobs"
    settings = Settings(redis_url=redis_url, key_prefix=prefix, blob_url=str(blobs))
    async with Orchestrator(client=client, settings=settings) as orch:
        async with running(orch.worker(modules=[flows])):
            handle = await orch.start(flows.write_parts, 2, run_id="inline")
            assert await handle.result(timeout=20) == ["done part 0", "done part 1"]
        for event in await completed(orch.store, "inline"):
            system, user, assistant = event.data["result"]["messages"]
            assert system["role"] == "system" and "part" in system["content"]
            assert not any(is_ref(m) for m in (system, user, assistant))
        assert await orch.store.raw.smembers(orch.store.keys.blobs("inline")) == set()
    assert not [p for p in blobs.rglob("*") if p.is_file()], "no blob written"


async def test_a_message_no_longer_than_its_reference_stays_in_the_log(
    fake: FakeLLM, orch_blobs: Orchestrator
) -> None:
    # Its reference would be as long: the log is no smaller, and the call writes no file.
    fake.answer_with(echo())
    worker = orch_blobs.worker(modules=[flows])
    async with running(worker):
        handle = await orch_blobs.start(flows.write_parts, 2, run_id="short")
        assert await handle.result(timeout=20) == ["done part 0", "done part 1"]
    stored = set()
    for result in await results(orch_blobs, "short"):
        system, user, assistant = result["messages"]
        assert is_ref(system)  # the system prompt is long
        assert not is_ref(user) and user["role"] == "user"
        assert assistant == {"role": "assistant", "content": f"done {user['content']}"}
        stored.add(system["$blob"])
    assert stored <= await orch_blobs.store.raw.smembers(orch_blobs.store.keys.blobs("short"))


async def test_a_fan_out_under_a_budget_never_spends_past_it(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    fake.answer_with(echo(latency=0.3, input_tokens=50, output_tokens=10))
    prompt, answer = AgentRunner(env={}).estimate(flows.writer, "part 0")
    per_call = PRICES.cost(MODEL, prompt, answer)
    budget = per_call * 2 + per_call / 2  # room for two calls held at once, not three
    worker = orch.worker(modules=[flows], concurrency=8)
    async with running(worker):
        handle = await orch.start(flows.budgeted_parts, 6, budget_usd=str(budget))
        result = await handle.result(timeout=20)
    spent = await orch.budget(handle.run_id)
    assert len(result["done"]) + len(result["refused"]) == 6
    assert len(result["done"]) == len(fake.requests) >= 2
    assert set(result["refused"]) == {"BudgetExceededError"}
    assert spent.spent_usd == PRICES.cost(MODEL, 50, 10) * len(result["done"])
    assert spent.spent_usd <= budget and spent.held_usd == 0


async def test_a_streaming_agent_sends_its_tokens_live_and_only_the_result_is_logged(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    story = "once upon a time a worker crashed and another one carried on"
    fake.add(reply(story, chunk_delay=0.02))
    worker = orch.worker(modules=[flows])
    async with running(worker):
        handle = await orch.start(flows.stream_story)
        step = await _first_step(handle)
        pieces = [p async for p in orch.live_tokens(handle.run_id, step, timeout=20)]
        assert await handle.result(timeout=20) == story
    assert len(pieces) > 3 and "".join(pieces) == story
    assert fake.requests[0].stream
    key = orch.store.keys.live(handle.run_id, step)
    assert "{" + handle.run_id + "}" in key  # in the run's hash slot
    assert 0 < await orch.store.raw.ttl(key) <= 3600  # short-lived, beside the log
    log = await orch.store.read_log(handle.run_id)
    assert sum(story in json.dumps(e.data) for e in log) == 2  # the result, the run's end


async def test_following_a_streaming_agent_that_fails_for_good_ends_after_its_last_try(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    # The first attempt streams a little and loses its connection (retried); the second
    # is refused for good. A follower sees the first attempt's text, then stops.
    fake.add(disconnect(after_chunks=3), unauthorized())
    worker = orch.worker(modules=[flows])
    async with running(worker):
        handle = await orch.start(flows.stream_story)
        step = await _first_step(handle)
        follow = orch.live_tokens(handle.run_id, step)  # no timeout: it must end by itself
        pieces = await asyncio.wait_for(_all(follow), timeout=30)
        with pytest.raises(RunFailedError):
            await handle.result(timeout=20)
    assert len(fake.requests) == 2
    assert "".join(pieces)  # what the first attempt streamed before the line dropped


async def _all(pieces: AsyncIterator[str]) -> list[str]:
    return [p async for p in pieces]


async def _first_step(handle: RunHandle) -> str:
    """The step of the run's first activity, once it is scheduled."""
    async for event in handle.events():
        if event.type == "activity_scheduled" and event.seq is not None:
            return event.seq
    raise AssertionError("the run ended without scheduling an activity")


async def test_model_calls_show_in_the_metrics(fake: FakeLLM, orch: Orchestrator) -> None:
    fake.answer_with(echo(input_tokens=100, output_tokens=20))
    metrics = Metrics()
    async with running(orch.worker(modules=[flows], metrics=metrics)):
        await (await orch.start(flows.write_parts, 3)).result(timeout=20)
    text = generate_latest(metrics.registry).decode()
    got = samples(text)
    labels = {"model": "gpt-4.1-mini", "provider": "openai"}
    assert value(got, "taskloom_llm_tokens_total", kind="input", **labels) == 300
    assert value(got, "taskloom_llm_tokens_total", kind="output", **labels) == 60
    cost = value(got, "taskloom_llm_cost_usd_total", **labels)
    assert cost == pytest.approx(float(PRICES.cost(MODEL, 100, 20) * 3))
    assert value(got, "taskloom_llm_request_duration_seconds_count", **labels) == 3


async def test_a_worker_that_serves_no_subagents_says_how_to_make_one(
    fake: FakeLLM, orch: Orchestrator, make_worker: Callable[..., Any]
) -> None:
    worker = make_worker(modules=[flows])  # a bare engine Worker
    async with running(worker):
        handle = await orch.start(flows.write_parts, 1)
        with pytest.raises(RunFailedError, match=r"orch\.worker"):
            await handle.result(timeout=20)
    assert fake.requests == []


async def test_an_unknown_model_fails_the_activity_with_the_fix(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    odd = Agent(name="odd", model="openai:gpt-unheard-of")

    @workflow(name="odd_one")
    async def odd_one(ctx: Any) -> str:
        return (await ctx.agent(odd, "hello")).text

    async with running(orch.worker(workflows=[odd_one], agents=[odd])):
        handle = await orch.start(odd_one)
        with pytest.raises(RunFailedError, match="gpt-unheard-of"):
            await handle.result(timeout=20)
    assert fake.requests == []  # refused before anything was sent
    log = await orch.store.read_log(handle.run_id)
    assert [e.type for e in log].count("activity_retrying") == 0  # a retry can't fix it


async def test_a_sigkilled_worker_mid_fan_out_never_resends_a_recorded_call(
    fake: FakeLLM, orch: Orchestrator, spawn_worker: Spawn
) -> None:
    fake.answer_with(echo(latency=0.25))
    env = {"OPENAI_BASE_URL": fake.openai_url, "OPENAI_API_KEY": "sk-test"}
    module = "tests.subagent_workflows"
    n = 24
    first = await start_worker(spawn_worker, module=module, concurrency=4, **env)
    handle = await orch.start(flows.write_parts, n, run_id="fanout-kill")
    for _ in range(200):
        if len(await completed(orch.store, handle.run_id)) >= 6:
            break
        await asyncio.sleep(0.05)
    await stop_worker(first)
    recorded = {e.data["result"]["text"] for e in await completed(orch.store, handle.run_id)}
    assert 6 <= len(recorded) < n
    second = await start_worker(spawn_worker, module=module, concurrency=4, **env)
    try:
        result = await handle.result(timeout=60)
    finally:
        await stop_worker(second)
    assert result == [f"done part {i}" for i in range(n)]
    sent = Counter(task_of(r) for r in fake.requests)
    assert set(sent) == {f"part {i}" for i in range(n)}
    for text in recorded:  # recorded before the kill: never sent again
        assert sent[text.removeprefix("done ")] == 1, text
    steps = Counter(e.seq for e in await completed(orch.store, handle.run_id))
    assert len(steps) == n and set(steps.values()) == {1}  # each recorded exactly once


async def test_the_settings_limits_and_prices_reach_the_workers_subagents(
    client: Redis, prefix: str, redis_url: str, tmp_path: Path
) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"openai:gpt-4.1-mini": {"input": 1, "output": 2}}))
    settings = Settings(
        redis_url=redis_url,
        key_prefix=prefix,
        rate_limits={"openai:*": {"rpm": 7, "tpm": None}},
        prices=prices,
    )
    async with Orchestrator(client=client, settings=settings) as orch:
        runner = agent_runner(orch.worker())
    assert runner.limiters is not None
    assert runner.limiters.for_model(MODEL).limits == RateLimits(rpm=7, tpm=None)
    assert runner.prices.cost(MODEL, 1_000_000, 1_000_000) == Decimal(3)


async def test_a_model_that_answers_garbage_forever_fails_the_run_after_its_retries(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    fake.answer_with(lambda request: malformed_json())
    clock = ManualClock()  # the backoff between attempts takes no real time
    async with running(orch.worker(modules=[flows], clock=clock)):
        handle = await orch.start(flows.check_then_wait, "the moon is cheese")
        result = asyncio.ensure_future(handle.result(timeout=30))
        while not result.done():
            clock.advance(120)
            await asyncio.sleep(0.05)
        with pytest.raises(RunFailedError, match="LLMOutputError"):
            await result
    log = await orch.store.read_log(handle.run_id)
    retries = [e for e in log if e.type == "activity_retrying"]
    assert len(retries) == 3  # four attempts in all (the agent activity's policy)
    # An unusable answer is asked again at once, not after the backoff made for outages
    # and rate limits (2, 4, 8 s: a person waited 14 s for a planner's escalation).
    assert [e.data["due_ms"] - e.data["ts"] for e in retries] == [0, 0, 0]
    assert len(fake.requests) == 8  # each attempt: the answer, then one repair turn
    repair = fake.requests[1].body["messages"][-1]["content"]
    assert "JSON" in repair or "valid" in repair.lower()


async def test_a_model_answering_garbage_forever_stops_at_the_budget_having_paid_for_it(
    fake: FakeLLM, orch: Orchestrator
) -> None:
    # issue 12, finding 7: every invalid answer and repair turn is charged, so a loop
    # that keeps asking runs out of budget instead of spending nothing forever.
    fake.answer_with(lambda request: malformed_json())
    prompt, answer = AgentRunner(env={}).estimate(flows.checker, "the moon is cheese")
    budget = prompt + answer + 1500  # the first hold, and a few attempts' worth of answers
    clock = ManualClock()
    async with running(orch.worker(modules=[flows], clock=clock)):
        handle = await orch.start(
            flows.check_until_stopped, "the moon is cheese", 25, budget_tokens=budget
        )
        result = asyncio.ensure_future(handle.result(timeout=60))
        while not result.done():
            clock.advance(120)
            await asyncio.sleep(0.05)
        with pytest.raises(RunFailedError, match="BudgetExceededError"):
            await result
    spent = await orch.budget(handle.run_id)
    served = fake.tokens.total()
    assert len(fake.requests) >= 4 and served > 0
    assert spent.spent_tokens == served and spent.held_tokens == 0
    assert served + prompt + answer > budget  # stopped because the next hold did not fit
    assert len(fake.requests) < 25 * 8  # not the 25 activities of 4 attempts each
