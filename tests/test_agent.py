"""Agents end to end: the official SDKs against the fake server, limits and budgets on
the real Redis, costs from the price table."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from taskloom.agents.agent import Agent, AgentRunner
from taskloom.agents.errors import (
    BudgetExceededError,
    LLMOutputError,
    LLMRateLimitedError,
    RateLimitDeferredError,
    UnknownModelPriceError,
)
from taskloom.agents.fake_llm import (
    FakeLLM,
    malformed_json,
    rate_limited,
    reply,
    tool_call,
    tool_calls,
    truncated,
)
from taskloom.agents.llm import Usage
from taskloom.agents.pricing import PriceTable
from taskloom.agents.tools import tool

pytestmark = pytest.mark.anyio

MODEL = "openai:gpt-4.1-mini"


class Verdict(BaseModel):
    answer: str
    confidence: float


def runner_for(fake: FakeLLM, client: Any, prefix: str, **options: Any) -> AgentRunner:
    return AgentRunner(
        redis=client,
        prefix=prefix,
        provider_options={"openai": {"base_url": fake.openai_url, "api_key": "test"}},
        env={},
        **options,
    )


async def test_a_structured_agent_and_its_cost_from_the_price_table(client, prefix) -> None:
    agent = Agent(name="judge", role="a strict judge", model=MODEL, output=Verdict)
    fake = FakeLLM(
        [reply(json={"answer": "yes", "confidence": 0.9}, input_tokens=1200, output_tokens=300)]
    )
    async with fake:
        runner = runner_for(fake, client, prefix)
        result = await runner.run(agent, "Is water wet?", inputs={"context": "physics"})
        await runner.aclose()
        fake.assert_complete()
    assert result.output == {"answer": "yes", "confidence": 0.9}
    assert (result.usage.input_tokens, result.usage.output_tokens) == (1200, 300)
    assert Decimal(str(result.cost_usd)) == PriceTable.builtin().cost(MODEL, 1200, 300)
    system = fake.requests[0].body["messages"][0]["content"]
    assert "a strict judge" in system and "Is water wet?" in system and "physics" in system
    assert result.messages[0]["role"] == "system"


async def test_fifty_concurrent_calls_never_spend_past_a_budget_for_twenty(client, prefix):
    agent = Agent(name="worker", model=MODEL, max_tokens=50)
    async with FakeLLM(lambda request: reply("done")) as fake:
        runner = runner_for(fake, client, prefix)
        prompt, answer = runner.estimate(agent, "task")
        assert runner.budgets is not None
        await runner.budgets.set_limits("run-b", max_tokens=20 * (prompt + answer))
        outcomes = await asyncio.gather(
            *(runner.run(agent, "task", budget="run-b") for _ in range(50)),
            return_exceptions=True,
        )
        usage = await runner.budgets.usage("run-b")
        await runner.aclose()
    refused = [o for o in outcomes if isinstance(o, BudgetExceededError)]
    assert len(refused) == 30 and len(fake.requests) == 20, "refused before sending"
    assert usage.spent_tokens <= 20 * (prompt + answer) and usage.held_tokens == 0
    assert "budget" in str(refused[0])


async def test_a_429_blocks_the_shared_limiter_and_is_retryable(client, prefix) -> None:
    agent = Agent(name="a", model=MODEL)
    async with FakeLLM([rate_limited(retry_after=30)]) as fake:
        runner = runner_for(fake, client, prefix)
        with pytest.raises(LLMRateLimitedError) as caught:
            await runner.run(agent, "hi")
        assert caught.value.retry_after == 30
        other = runner_for(fake, client, prefix)  # another process, same Redis
        assert other.limiters is not None
        with pytest.raises(RateLimitDeferredError):
            await other.limiters.for_model(MODEL).reserve(10, max_wait=0.5)
        await runner.aclose()
    assert len(fake.requests) == 1


@tool
def lookup(term: str) -> str:
    """Look a term up."""
    return f"{term}: a thing"


async def test_an_agent_with_tools_runs_the_loop(client, prefix) -> None:
    agent = Agent(name="researcher", model=MODEL, tools=(lookup,))
    script = [
        tool_calls(tool_call("lookup", {"term": "x"}), tool_call("lookup", {"term": "y"})),
        reply("x and y are things"),
    ]
    async with FakeLLM(script) as fake:
        runner = runner_for(fake, client, prefix)
        result = await runner.run(agent, "what are x and y?")
        await runner.aclose()
        fake.assert_complete()
    assert result.output == "x and y are things" and result.calls == 2
    assert [m["role"] for m in result.messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
    ]


async def test_an_unpriced_model_fails_before_any_call(client, prefix) -> None:
    async with FakeLLM([]) as fake:
        runner = runner_for(fake, client, prefix)
        with pytest.raises(UnknownModelPriceError):
            await runner.run(Agent(name="a", model="openai:no-such-model"), "hi")
        await runner.aclose()
    assert fake.requests == []


# -- every token served is charged (issue 12, finding 7) -------------------------------


def spent_by(calls: list[tuple[str, str, float, Usage, Decimal]]) -> int:
    """Tokens the runner's observer (the metrics) was told of."""
    return sum(usage.total for *_, usage, _ in calls)


@pytest.mark.parametrize(
    ("agent", "script"),
    [
        # invalid, then invalid again after the repair turn
        (Agent(name="j", model=MODEL, output=Verdict), [malformed_json(), malformed_json()]),
        # cut off at the token limit
        (
            Agent(name="j", model=MODEL, output=Verdict),
            [truncated('{"answer": "ye', output_tokens=90)],
        ),
        # still calling tools after max_turns
        (
            Agent(name="r", model=MODEL, tools=(lookup,), max_turns=3),
            [tool_calls(tool_call("lookup", {"term": str(i)})) for i in range(3)],
        ),
    ],
    ids=["invalid-after-repair", "truncated", "tool-loop-exhausted"],
)
async def test_a_failed_call_charges_every_token_it_was_served(
    client: Any, prefix: str, agent: Agent, script: list[Any]
) -> None:
    observed: list[tuple[str, str, float, Usage, Decimal]] = []
    async with FakeLLM(script) as fake:
        runner = runner_for(fake, client, prefix, observe=lambda *call: observed.append(call))
        assert runner.budgets is not None and runner.limiters is not None
        with pytest.raises(LLMOutputError):
            await runner.run(agent, "answer me", budget="run-f")
        usage = await runner.budgets.usage("run-f")
        await runner.aclose()
        fake.assert_complete()
    served = fake.tokens.total()
    assert served > 0 and len(fake.requests) == len(script)
    assert usage.spent_tokens == served and usage.held_tokens == 0
    price = PriceTable.builtin().cost(
        MODEL, fake.tokens.total(kind="input"), fake.tokens.total(kind="output")
    )
    assert usage.spent_usd == price
    assert spent_by(observed) == served  # the token and cost metrics see it too


async def test_a_call_cancelled_before_its_reply_charges_its_estimate(client, prefix) -> None:
    agent = Agent(name="slow", model=MODEL, max_tokens=200)
    async with FakeLLM([reply("late", latency=60)]) as fake:
        runner = runner_for(fake, client, prefix)
        assert runner.budgets is not None
        prompt, answer = runner.estimate(agent, "take your time")
        call = asyncio.ensure_future(runner.run(agent, "take your time", budget="run-c"))
        while not fake.requests:
            await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        usage = await runner.budgets.usage("run-c")
        await runner.aclose()
    # The provider may have generated the answer: the hold (the most it costs) is spent.
    assert usage.spent_tokens == prompt + answer and usage.held_tokens == 0


async def test_calls_share_one_aiohttp_client_and_spread_over_httpx_ones(
    client, prefix, monkeypatch
) -> None:
    # aiohttp's pool serves many calls in flight; httpx's scans every connection per
    # request, so on httpx calls go to several clients in turn.
    import taskloom.agents.providers.openai as openai_provider
    from taskloom.agents.agent import CLIENT_SHARDS

    agent = Agent(name="many", model=MODEL, max_tokens=16)
    async with FakeLLM(lambda request: reply("ok", latency=0.05)) as fake:
        runner = runner_for(fake, client, prefix)
        results = await asyncio.gather(*(runner.run(agent, f"item {i}") for i in range(30)))
        shared = {id(runner.provider("openai")) for _ in range(2 * CLIENT_SHARDS)}
        await runner.aclose()
        monkeypatch.setattr(openai_provider, "http_client", lambda sdk: None)
        runner = runner_for(fake, client, prefix)
        await asyncio.gather(*(runner.run(agent, f"item {i}") for i in range(30)))
        spread = {id(runner.provider("openai")) for _ in range(2 * CLIENT_SHARDS)}
        await runner.aclose()
    assert [r.text for r in results] == ["ok"] * 30
    assert len(shared) == 1
    assert len(spread) == CLIENT_SHARDS
