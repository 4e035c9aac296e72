"""One subagent call per provider, for tests/test_cold_start.py: the first model call a
fresh worker process makes (its provider's SDK not imported yet)."""

from __future__ import annotations

from taskloom import Context, workflow
from taskloom.agents import Agent

openai_writer = Agent(name="openai_writer", model="openai:gpt-4.1-mini")
anthropic_writer = Agent(name="anthropic_writer", model="anthropic:claude-sonnet-4-5")


@workflow(name="one_openai_call")
async def one_openai_call(ctx: Context, task: str) -> str:
    """One OpenAI subagent call."""
    return (await ctx.agent(openai_writer, task)).text


@workflow(name="one_anthropic_call")
async def one_anthropic_call(ctx: Context, task: str) -> str:
    """One Anthropic subagent call."""
    return (await ctx.agent(anthropic_writer, task)).text
