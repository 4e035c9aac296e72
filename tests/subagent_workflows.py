"""Workflows with subagents, served in-process and by worker subprocesses in
tests/test_subagents.py (the fake LLM server's URL comes from ``OPENAI_BASE_URL``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from taskloom import ActivityError, Context, workflow
from taskloom.agents import Agent

MODEL = "openai:gpt-4.1-mini"

writer = Agent(name="writer", role="a concise technical writer", model=MODEL)
streamer = Agent(name="streamer", role="a storyteller", model=MODEL, stream=True)


class Fact(BaseModel):
    claim: str
    confidence: float


checker = Agent(name="checker", role="a fact checker", model=MODEL, output=Fact)


@workflow(name="write_parts")
async def write_parts(ctx: Context, n: int, brief: str = "") -> list[str]:
    """Fan out ``n`` writer subagents, one per part (``brief`` after its number); fan in
    their texts."""
    results = await ctx.gather(*(ctx.agent(writer, f"part {i}{brief}") for i in range(n)))
    return [r.text for r in results]


@workflow(name="check_then_wait")
async def check_then_wait(ctx: Context, claim: str) -> dict[str, Any]:
    """One structured subagent, then a signal: a new worker replays the first step."""
    fact = await ctx.agent(checker, claim, inputs={"source": "an encyclopedia"})
    who = await ctx.wait_for_signal("go")
    return {"fact": fact.output, "cost": fact.cost_usd, "tokens": fact.usage.total, "by": who}


@workflow(name="check_until_stopped")
async def check_until_stopped(ctx: Context, claim: str, tries: int) -> str:
    """A runaway loop: ask the checker again whenever it gives no valid answer; only
    something else (the run's budget) stops it before ``tries``."""
    for _ in range(tries):
        try:
            await ctx.agent(checker, claim)
        except ActivityError as exc:
            if exc.error_type != "LLMOutputError":
                raise
    return f"never stopped in {tries} tries"


@workflow(name="budgeted_parts")
async def budgeted_parts(ctx: Context, n: int) -> dict[str, Any]:
    """Fan out ``n`` subagents under the run's budget; count those refused."""
    results = await ctx.gather(
        *(ctx.agent(writer, f"part {i}") for i in range(n)), return_exceptions=True
    )
    done = [r.text for r in results if not isinstance(r, BaseException)]
    refused = [
        r.error_type if isinstance(r, ActivityError) else repr(r)
        for r in results
        if isinstance(r, BaseException)
    ]
    return {"done": done, "refused": refused}


@workflow(name="stream_story")
async def stream_story(ctx: Context) -> str:
    """A streaming subagent."""
    return (await ctx.agent(streamer, "tell a story")).text
