"""A model call's holds in one round trip before and one after (taskloom.agents.admission):
budgets and rate limits stay exact, a crashed call's hold is taken over, and a model
without rate limits costs one EXISTS. Real Redis (a server of this module's own where
commands are counted), the official SDK against the fake LLM server."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import ConnectionPool, UnixDomainSocketConnection
from redis.exceptions import ResponseError

from taskloom.agents.agent import Agent, AgentRunner
from taskloom.agents.batching import PipelineBatch
from taskloom.agents.budget import BudgetAsk, Budgets
from taskloom.agents.errors import BudgetExceededError, RateLimitDeferredError
from taskloom.agents.fake_llm import FakeLLM, rate_limited, reply
from taskloom.agents.limits import RateLimits
from taskloom.agents.pricing import PriceTable
from taskloom.engine.connection import make_client
from taskloom.luascripts import LuaScripts
from tests.helpers import own_socket_redis

pytestmark = pytest.mark.anyio

MODEL = "openai:gpt-4.1-mini"
UNLIMITED = {"openai:*": RateLimits()}


class CountingConnection(UnixDomainSocketConnection):
    """A real connection that counts the times it writes to the server (round trips:
    a pipeline is one write)."""

    writes = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.writes += 1
        await super().send_packed_command(command, check_health)


@pytest.fixture(scope="module")
def counted_redis() -> Iterator[Path]:
    """A redis-server of this module's own (its INFO commandstats are this module's)."""
    with own_socket_redis() as sock:
        yield sock


@pytest.fixture
async def counted(counted_redis: Path) -> AsyncIterator[Redis]:
    pool = ConnectionPool(
        connection_class=CountingConnection, path=str(counted_redis), decode_responses=True
    )
    client = Redis(connection_pool=pool)
    yield client
    await client.aclose()
    await pool.disconnect()


async def _commands(client: Redis) -> Counter[str]:
    stats: dict[str, Any] = await client.info("commandstats")
    return Counter(
        {
            k.removeprefix("cmdstat_"): int(v["calls"])
            for k, v in stats.items()
            if k != "cmdstat_info"
        }
    )


def runner_for(fake: FakeLLM, client: Any, prefix: str, **options: Any) -> AgentRunner:
    return AgentRunner(
        redis=client,
        prefix=prefix,
        provider_options={"openai": {"base_url": fake.openai_url, "api_key": "test"}},
        env={},
        **options,
    )


async def test_a_call_without_rate_limits_makes_one_round_trip_before_and_one_after(
    counted: Redis, prefix: str
) -> None:
    agent = Agent(name="w", model=MODEL, max_tokens=20)
    async with FakeLLM(lambda request: reply("done")) as fake:
        runner = runner_for(fake, counted, prefix, limits=UNLIMITED)
        await runner.run(agent, "warm", budget="run-a")  # scripts loaded, connection made
        before, writes = await _commands(counted), CountingConnection.writes
        for i in range(5):
            await runner.run(agent, f"task {i}", budget="run-a")
        used = await _commands(counted) - before
        writes = CountingConnection.writes - writes - 1  # the INFO above
        usage = await runner.budgets.usage("run-a")  # type: ignore[union-attr]
        await runner.aclose()
    assert writes == 5 * 2, "one round trip to admit and hold, one to settle"
    assert used["exists"] == 5, "the rate part is one EXISTS of the block key"
    assert used["evalsha"] == 5 * 2 and used["eval"] == 0  # budget reserve, budget settle
    assert used["zcard"] == used["zscore"] == 0, "the window script never ran"
    assert await counted.keys(f"{prefix}:{{rl:*") == []
    assert usage.held_tokens == 0 and usage.spent_tokens > 0


async def test_the_calls_of_one_tick_share_one_block_check(counted: Redis, prefix: str) -> None:
    # Twenty calls admitted together each need "is the model blocked?": one EXISTS for
    # all, in their one round trip; a block set meanwhile reaches every one of them.
    agent = Agent(name="w", model=MODEL, max_tokens=20)
    async with FakeLLM(lambda request: reply("done")) as fake:
        runner = runner_for(fake, counted, prefix, limits=UNLIMITED)
        await runner.run(agent, "warm", budget="run-t")
        before = await _commands(counted)
        await asyncio.gather(*(runner.run(agent, f"task {i}", budget="run-t") for i in range(20)))
        used = await _commands(counted) - before
        assert runner.limiters is not None
        limiter = runner.limiters.for_model(MODEL)
        check = limiter.block_check()
        assert check == ("EXISTS", limiter.keys.block)
        await counted.set(limiter.keys.block, "1", px=5000)
        before = await _commands(counted)
        batch = PipelineBatch(LuaScripts(counted, package="taskloom.agents"))
        replies = await asyncio.gather(
            *(batch.send(lambda pipe: pipe.ping(), shared=check) for _ in range(5))
        )
        shared_used = await _commands(counted) - before
        await runner.aclose()
    assert used["exists"] == 1
    assert used["evalsha"] == 20 * 2  # each call's budget hold and settle are its own
    assert shared_used["exists"] == 1 and shared_used["ping"] == 5
    assert [r[0] for r in replies] == [1] * 5  # each sees the block ...
    assert all(limiter.admitted(r[0], 10, "id") is None for r in replies)  # ... and waits


async def test_a_call_without_a_budget_asks_only_the_rate_limit(
    counted: Redis, prefix: str
) -> None:
    agent = Agent(name="w", model=MODEL, max_tokens=20)
    async with FakeLLM(lambda request: reply("done")) as fake:
        runner = runner_for(fake, counted, prefix, limits=UNLIMITED)
        await runner.run(agent, "warm")
        before, writes = await _commands(counted), CountingConnection.writes
        await runner.run(agent, "task")
        used = await _commands(counted) - before
        writes = CountingConnection.writes - writes - 1
        await runner.aclose()
    assert writes == 1 and used == Counter({"exists": 1})


async def test_concurrent_calls_of_two_runners_run_exactly_as_many_as_the_budget_allows(
    client: Redis, redis_url: str, prefix: str
) -> None:
    agent = Agent(name="w", model=MODEL, max_tokens=50)
    other = make_client(redis_url)  # as another worker would
    answer = reply("done", input_tokens=30, output_tokens=5, latency=0.02)
    async with FakeLLM(lambda request: answer) as fake:
        runners = [
            runner_for(fake, c, prefix, limits=limits)
            for c in (client, other)
            for limits in (UNLIMITED, None)  # light admission and the window script
        ]
        estimate = PriceTable.builtin().cost(MODEL, *runners[0].estimate(agent, "task"))
        budgets = runners[0].budgets
        assert budgets is not None
        await budgets.set_limits("run-k", max_usd=7 * estimate)
        outcomes = await asyncio.gather(
            *(runners[i % 4].run(agent, "task", budget="run-k") for i in range(40)),
            return_exceptions=True,
        )
        usage = await budgets.usage("run-k")
        for runner in runners:
            await runner.aclose()
    await other.aclose()
    refused = [o for o in outcomes if isinstance(o, BudgetExceededError)]
    assert len(refused) == 33 and len(fake.requests) == 7
    assert usage.held_usd == 0 and usage.held_tokens == 0
    assert usage.spent_usd == 7 * PriceTable.builtin().cost(MODEL, 30, 5)


async def test_a_call_run_again_after_a_crash_takes_over_the_hold_of_the_one_that_died(
    client: Redis, prefix: str
) -> None:
    agent = Agent(name="w", model=MODEL, max_tokens=50)
    key = "run-c/0.0.1#1"  # an activity attempt's idempotency key and attempt
    async with FakeLLM(lambda request: reply("done", input_tokens=30, output_tokens=5)) as fake:
        runner = runner_for(fake, client, prefix, limits=UNLIMITED)
        budgets = runner.budgets
        assert budgets is not None
        await budgets.set_limits("run-c", max_usd="1")
        # The first execution held its estimate, sent the call and died before settling.
        lost = await budgets.reserve("run-c", est_tokens=1_000, est_usd="0.40", key=key)
        assert (await budgets.usage("run-c")).held_usd == Decimal("0.40")
        # Its activity runs again, under the same key: the old hold is given back.
        result = await runner.run(agent, "task", budget="run-c", key=key)
        usage = await budgets.usage("run-c")
        assert (usage.held_usd, usage.held_tokens) == (0, 0), "no hold left to lapse"
        assert usage.spent_tokens == 35 and usage.spent_usd == Decimal(str(result.cost_usd))
        # Had the first one lived after all, what it spent is still charged, once.
        await budgets.settle(lost, actual_tokens=20, actual_usd="0.02")
        await budgets.settle(lost, actual_tokens=20, actual_usd="0.02")
        usage = await budgets.usage("run-c")
        await runner.aclose()
    assert usage.held_usd == 0 and usage.spent_tokens == 55
    assert usage.spent_usd == Decimal(str(result.cost_usd)) + Decimal("0.02")


async def test_a_key_whose_call_settled_holds_anew(client: Redis, prefix: str) -> None:
    """A key is not a hold to share: a later call under it (a retry of a settled attempt,
    say) holds and is charged on its own."""
    agent = Agent(name="w", model=MODEL, max_tokens=50)
    async with FakeLLM(lambda request: reply("done", input_tokens=30, output_tokens=5)) as fake:
        runner = runner_for(fake, client, prefix, limits=UNLIMITED)
        for _ in range(2):
            await runner.run(agent, "task", budget="run-d", key="run-d/0.1#1")
        usage = await runner.budgets.usage("run-d")  # type: ignore[union-attr]
        await runner.aclose()
    assert usage.spent_tokens == 70 and usage.held_tokens == 0


async def test_a_block_reaches_the_light_admission_of_another_process(
    client: Redis, redis_url: str, prefix: str
) -> None:
    """A 429 on a model without rate limits blocks it for every process: the one EXISTS
    finds the block key, and the window script says how long to wait."""
    agent = Agent(name="w", model=MODEL)
    other = make_client(redis_url)
    async with FakeLLM([rate_limited(retry_after=30)]) as fake:
        first = runner_for(fake, client, prefix, limits=UNLIMITED)
        with pytest.raises(Exception, match=r"429|rate"):
            await first.run(agent, "hi", budget="run-e")
        second = runner_for(fake, other, prefix, limits=UNLIMITED)
        assert second.limiters is not None and second.limiters.for_model(MODEL).light
        with pytest.raises(RateLimitDeferredError) as caught:
            await second.limiters.for_model(MODEL).reserve(10, max_wait=0.5)
        assert 25 < caught.value.retry_after <= 30
        usage = await first.budgets.usage("run-e")  # type: ignore[union-attr]
        await first.aclose()
        await second.aclose()
    await other.aclose()
    assert len(fake.requests) == 1 and usage.held_tokens == 0


async def test_the_pipelines_of_one_tick_go_in_one_round_trip(counted: Redis, prefix: str) -> None:
    batch = PipelineBatch(LuaScripts(counted, package="taskloom.agents"))
    await counted.hset(f"{prefix}:h", "f", "v")
    await counted.ping()
    writes = CountingConnection.writes

    def incr(pipe: Any) -> None:
        pipe.incr(f"{prefix}:n")

    def two(pipe: Any) -> None:
        pipe.incr(f"{prefix}:n")
        pipe.incr(f"{prefix}:h")  # a hash: this command's error is its caller's alone

    replies = await asyncio.gather(*(batch.send(incr) for _ in range(49)), batch.send(two))
    assert CountingConnection.writes - writes == 1
    assert sorted(r[0] for r in replies) == list(range(1, 51))
    assert [len(r) for r in replies] == [1] * 49 + [2]
    assert isinstance(replies[-1][1], ResponseError)


async def test_a_reservation_sent_twice_holds_once(client: Redis, prefix: str) -> None:
    """A client library sends a command again when the connection drops before the
    reply: the second send of a reservation, keyed or not, finds it held."""
    scripts = LuaScripts(client, package="taskloom.agents")
    budgets = Budgets(client, prefix=prefix, scripts=scripts)
    await budgets.set_limits("run-f", max_tokens=25)
    for key in (None, "run-f/0.1#1"):
        ask = budgets.ask("run-f", est_tokens=10, est_usd="0.1", key=key)

        def twice(pipe: Any, ask: BudgetAsk = ask) -> None:
            budgets.queue(pipe, ask)
            budgets.queue(pipe, ask)

        assert [int(r[0]) for r in await scripts.pipeline(twice)] == [1, 2]
    usage = await budgets.usage("run-f")
    assert usage.held_tokens == 20 and usage.held_usd == Decimal("0.2")
