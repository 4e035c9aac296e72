"""Agents: a spec (role, model, instructions, tools, output type) and the runner that
calls the model under shared rate limits, a run's budget and a price table.

    summarizer = Agent(name="summarizer", role="a careful analyst",
                       model="openai:gpt-4.1-mini", output=Summary)
    runner = AgentRunner(redis=client, prefix="tl")
    result = await runner.run(summarizer, "Summarize the findings", inputs={"notes": text},
                              budget="run-17")
    result.output     # a Summary, as JSON-ready data
    result.cost_usd   # from the price table

This module knows nothing of runs and workflows: the engine wraps :meth:`AgentRunner.run`
in an activity, so its result is recorded and a replay never calls the model again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from taskloom.luascripts import LuaScripts

from .admission import admit, settle
from .batching import PipelineBatch, PipelineStep
from .budget import BudgetReservation, Budgets
from .errors import LLMRateLimitedError, UserError
from .limits import RateLimiters, RateLimits, RateReservation
from .llm import LLMRequest, Message, Provider, TokenSink, Usage
from .metering import MeteredProvider
from .pricing import PriceTable
from .prompts import Prompts
from .providers import default_model, open_provider, split_model
from .telemetry import Pricer

if TYPE_CHECKING:  # pydantic, and what is built on it, loads with an agent that needs it
    from pydantic import BaseModel

    from .structured import RefusedModes
    from .tools import Tool

__all__ = ["Agent", "AgentResult", "AgentRunner", "CallObserver", "Finisher", "LimitObserver"]

log = logging.getLogger("taskloom.agents")

CLIENT_SHARDS = 8
"""The most provider clients (each with its connection pool) an :class:`AgentRunner`
spreads its calls over; fewer where a client says so (its ``shards``: one for the
SDKs' aiohttp clients)."""
CallObserver = Callable[[str, str, float, Usage, Decimal], None]
"""Told of every finished model call: ``(provider, model, seconds, usage, cost)``."""
LimitObserver = Callable[[str, str], None]
"""Told of every 429: ``(provider, model)``."""
Finisher = Callable[["AgentResult"], Awaitable[PipelineStep | None]]
"""Given a call's result before its holds are settled; may return commands for the
settle's pipeline (:meth:`AgentRunner.run`'s ``finish``)."""


def _is_model_class(value: object) -> bool:
    """Whether ``value`` is a pydantic model class (pydantic is imported if it is one: a
    process without it holds none, and a worker of plain agents need not load it)."""
    pydantic = sys.modules.get("pydantic")
    return (
        pydantic is not None and isinstance(value, type) and issubclass(value, pydantic.BaseModel)
    )


@dataclass(frozen=True, kw_only=True)
class Agent:
    """What a subagent is: its role, model, instructions, tools and output type."""

    name: str
    role: str = "a capable assistant"
    model: str | None = None
    """``provider:model``; ``None``: ``TASKLOOM_MODEL``."""
    instructions: str = "subagent.j2"
    """The template (in ``prompts/``, or the runner's override directory)."""
    tools: tuple[Tool, ...] = ()
    output: type[BaseModel] | None = None
    """A pydantic model the answer must validate against; ``None``: text."""
    temperature: float | None = None
    max_tokens: int = 1024
    timeout: float = 60.0
    max_turns: int = 8
    stream: bool = False
    """Stream tokens as they arrive (inside a workflow: to the activity's live stream)."""

    def __post_init__(self) -> None:
        if not self.name:
            raise UserError("an Agent needs a name")
        if self.output is not None and not _is_model_class(self.output):
            raise UserError(f"agent {self.name!r}: output= takes a pydantic model class")
        if self.max_tokens < 1 or self.max_turns < 1:
            raise UserError(f"agent {self.name!r}: max_tokens and max_turns must be >= 1")


@dataclass(frozen=True)
class AgentResult:
    """What one run of an agent produced, and what it cost."""

    output: Any
    """The validated output as JSON data (a dict for a pydantic output), or the text."""
    text: str
    model: str
    usage: Usage
    cost_usd: float
    calls: int
    seconds: float
    messages: list[dict[str, Any]] = field(default_factory=list)
    """The conversation (system prompt first), for the record."""
    endpoint: str = ""
    """Who served the calls: provider and base URL (``"openai http://127.0.0.1:8000/v1"``),
    never a key."""
    finish: str = ""
    """Why the model stopped its final answer, as the provider said: ``"stop"``,
    ``"length"`` (cut off at the token limit), ``"tool_calls"``, ``"other"`` (a reason it
    did not give or that has no name here); ``""`` for a result recorded before this was
    kept."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form (what an activity records)."""
        return {
            "output": self.output,
            "text": self.text,
            "model": self.model,
            "usage": {"input": self.usage.input_tokens, "output": self.usage.output_tokens},
            "cost_usd": self.cost_usd,
            "calls": self.calls,
            "seconds": self.seconds,
            "messages": self.messages,
            "endpoint": self.endpoint,
            "finish": self.finish,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgentResult:
        """The inverse of :meth:`to_dict` (what a workflow gets back from the record)."""
        usage = data.get("usage") or {}
        return cls(
            output=data.get("output"),
            text=data.get("text", ""),
            model=data.get("model", ""),
            usage=Usage(int(usage.get("input", 0)), int(usage.get("output", 0))),
            cost_usd=float(data.get("cost_usd", 0.0)),
            calls=int(data.get("calls", 0)),
            seconds=float(data.get("seconds", 0.0)),
            messages=list(data.get("messages") or []),
            endpoint=str(data.get("endpoint", "")),
            finish=str(data.get("finish") or ""),
        )


class AgentRunner:
    """Runs agents: one provider client per provider, shared limits, budgets, prices.

    ``redis`` (a redis-py asyncio client) enables the shared rate limits and the run
    budgets; without it calls are neither limited nor budgeted. ``provider_options``
    per provider (``{"openai": {"base_url": ..., "api_key": ...}}``) win over the
    SDKs' environment variables.
    """

    def __init__(
        self,
        *,
        redis: Any = None,
        prefix: str = "tl",
        prices: PriceTable | None = None,
        prompts: Prompts | None = None,
        limits: Mapping[str, RateLimits] | None = None,
        provider_options: Mapping[str, Mapping[str, Any]] | None = None,
        env: Mapping[str, str] | None = None,
        observe: CallObserver | None = None,
        observe_rate_limit: LimitObserver | None = None,
    ) -> None:
        self.prices = prices or PriceTable.builtin()
        self.prompts = prompts or Prompts()
        self.env = dict(os.environ if env is None else env)
        # One set of scripts for both, so a call's holds go in one pipeline.
        self._scripts = LuaScripts(redis, package="taskloom.agents") if redis else None
        # The holds of the calls of one event-loop tick go to Redis in one round trip.
        self._batch = PipelineBatch(self._scripts) if self._scripts is not None else None
        self.limiters = (
            RateLimiters(redis, prefix=prefix, limits=limits, scripts=self._scripts)
            if redis
            else None
        )
        self.budgets = Budgets(redis, prefix=prefix, scripts=self._scripts) if redis else None
        self._options = {k: dict(v) for k, v in (provider_options or {}).items()}
        self._providers: dict[str, list[Provider]] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._turn = 0
        self._observe = observe
        self._observe_limit = observe_rate_limit
        self._refused: RefusedModes = {}  # JSON modes servers refused, for this runner

    def provider(self, name: str) -> Provider:
        """A client of provider ``name``: up to :data:`CLIENT_SHARDS` made on demand and
        taken in turn, as many as the first says are worth it (httpx's connection pool
        scans all its connections on every request: with a hundred calls in flight, that
        scan cost more than the call; aiohttp's does not, and one client serves them).

        Making one blocks: the first imports the provider's SDK (one to several seconds),
        each builds an SSL context (tens of milliseconds). On an event loop, use
        :meth:`client`, which does that work in a thread.
        """
        shards = self._providers.setdefault(name, [])
        self._turn += 1
        if len(shards) < _wanted(shards):
            shards.append(self._open(name))
            return shards[-1]
        return shards[self._turn % len(shards)]

    async def client(self, name: str) -> Provider:
        """:meth:`provider` without blocking the event loop: a new client (and, the first
        time, its SDK's import) is made in a thread, one at a time per provider; calls
        meanwhile take a client already made, or wait for the first one."""
        shards = self._providers.setdefault(name, [])
        self._turn += 1
        lock = self._opening.setdefault(name, asyncio.Lock())
        if not shards:
            async with lock:  # the first one: everyone waits for it
                if not shards:
                    shards.append(await asyncio.to_thread(self._open, name))
        elif len(shards) < _wanted(shards) and not lock.locked():
            async with lock:  # free: taken at once, so ``shards`` is as just seen
                shards.append(await asyncio.to_thread(self._open, name))
                return shards[-1]
        return shards[self._turn % len(shards)]

    async def warm(self, models: Iterable[str]) -> list[str]:
        """Import the SDKs of ``models``' providers and make a client of each, and load
        Jinja2 and compile the prompt templates, in a thread, so that no call pays for
        it; returns the providers made ready.

        A worker calls this when it starts. A model that cannot be used here (an
        unknown provider, no API key) is skipped: its calls fail as they would have.
        """
        ready: list[str] = []
        await asyncio.to_thread(self.prompts.warm)  # Jinja2 and the templates, compiled
        for provider in dict.fromkeys(_provider_of(m) for m in models):
            if provider is None:
                continue
            try:
                if not self._providers.get(provider):
                    await self.client(provider)
            except UserError as exc:  # no key, an unknown provider: its calls say so
                log.debug("not warming provider %s: %s", provider, exc)
                continue
            ready.append(provider)
        return ready

    def _open(self, name: str) -> Provider:
        return open_provider(name, env=self.env, **self._options.get(name, {}))

    async def aclose(self) -> None:
        """Close every provider client."""
        for shards in self._providers.values():
            for provider in shards:
                await provider.aclose()
        self._providers.clear()

    async def run(
        self,
        agent: Agent,
        task: str,
        *,
        inputs: Mapping[str, Any] | None = None,
        goal: str | None = None,
        feedback: str | None = None,
        budget: str | None = None,
        model: str | None = None,
        stream: TokenSink | None = None,
        key: str | None = None,
        finish: Finisher | None = None,
    ) -> AgentResult:
        """Run ``agent`` on ``task`` once (one activity attempt).

        ``budget`` names the budget (a run id) each call reserves against before it is
        sent; ``model`` overrides the agent's. ``key`` (an activity attempt's
        idempotency key) names the budget hold, so that a re-execution after a crash
        takes over the hold of the one that died. ``finish`` is given the result before
        the call's holds are settled and may return commands to send in the same
        pipeline (it needs the runner's ``redis``).
        """
        if finish is not None and self._scripts is None:
            raise UserError("AgentRunner.run(finish=...) needs a runner made with redis=")
        ref = model or agent.model or default_model(self.env)
        provider_name, model_name = split_model(ref)
        self.prices.price(ref)  # an unpriced model fails before anything is spent
        system = self._instructions(agent, task, inputs, goal, feedback)
        request = LLMRequest(
            model=model_name,
            messages=(Message(role="user", content=task),),
            system=system,
            max_tokens=agent.max_tokens,
            temperature=agent.temperature,
            timeout=agent.timeout,
        )
        started = time.monotonic()
        prompt, answer_max = self._estimate(agent, system, task)
        rate, held = await self._reserve(ref, prompt, answer_max, budget, key)
        calls, text, messages = 0, "", list(request.messages)
        finish_reason = "other"
        output: Any = None
        metered: MeteredProvider | None = None
        try:
            # After the reservation: calls started together reserve together, before
            # any waits for a client (the first is made in a thread).
            client = await self.client(provider_name)
            metered = provider = MeteredProvider(client, price=self._pricer(ref))
            if agent.tools:
                from .tools import run_tool_loop  # loaded already: its Tools were made

                looped = await run_tool_loop(
                    provider, request, agent.tools, max_turns=agent.max_turns, stream=stream
                )
                calls, text = looped.turns, looped.response.text
                finish_reason = looped.response.finish
                messages = [*looped.messages, Message(role="assistant", content=text)]
                request = LLMRequest(**{**request.__dict__, "messages": tuple(messages)})
            if agent.output is not None:
                from .structured import complete_structured  # pydantic: loaded (the output's)

                shaped = await complete_structured(
                    provider, request, agent.output, stream=stream, refused=self._refused
                )
                calls += shaped.calls
                text, output = shaped.text, shaped.value.model_dump(mode="json")
                finish_reason = "stop"  # a cut-off structured answer raised (LLMOutputError)
            elif not agent.tools:
                answer = await provider.complete(request, stream=stream)
                calls, text, finish_reason = 1, answer.text, answer.finish
                messages.append(Message(role="assistant", content=text))
            else:
                output = text
        except BaseException as exc:
            if isinstance(exc, LLMRateLimitedError):
                if self._observe_limit is not None:
                    self._observe_limit(provider_name, model_name)
                if self.limiters is not None and exc.retry_after:
                    await self.limiters.for_model(ref).penalize(exc.retry_after)
            # What was served before the failure was billed: charge it (see agents.metering).
            await self._charge(ref, metered, rate, held, started)
            raise
        usage = provider.usage
        cost = self.prices.cost(ref, usage.input_tokens, usage.output_tokens)
        result = AgentResult(
            output=text if output is None else output,
            text=text,
            model=ref,
            usage=usage,
            cost_usd=float(cost),
            calls=calls,
            seconds=time.monotonic() - started,
            messages=[{"role": "system", "content": system}, *map(_message_dict, messages)],
            endpoint=str(getattr(provider, "endpoint", provider_name)),
            finish=finish_reason,
        )
        try:
            also = await finish(result) if finish is not None else None
        except BaseException:
            await self._charge(ref, provider, rate, held, started)
            raise
        await self._charge(ref, provider, rate, held, started, also=also)
        return result

    def _pricer(self, ref: str) -> Pricer:
        """The cost of a usage of model ``ref`` (for model-call spans)."""
        prices = self.prices
        return lambda usage: prices.cost(ref, usage.input_tokens, usage.output_tokens)

    def estimate(
        self,
        agent: Agent,
        task: str,
        *,
        inputs: Mapping[str, Any] | None = None,
        goal: str | None = None,
    ) -> tuple[int, int]:
        """The most a run of ``agent`` may use: ``(prompt tokens, answer tokens)``, what
        is held against limits and budgets before the call (a plan's cost estimate)."""
        system = self._instructions(agent, task, inputs, goal, None)
        return self._estimate(agent, system, task)

    def _estimate(self, agent: Agent, system: str, task: str) -> tuple[int, int]:
        turns = agent.max_turns if agent.tools else 1
        prompt = ((len(system) + len(task)) // 4 + 1) * turns  # about 4 characters a token
        return prompt, agent.max_tokens * turns

    def _instructions(
        self,
        agent: Agent,
        task: str,
        inputs: Mapping[str, Any] | None,
        goal: str | None,
        feedback: str | None,
    ) -> str:
        variables: dict[str, Any] = {"role": agent.role, "task": task, "name": agent.name}
        if inputs:
            variables["inputs"] = {
                k: v if isinstance(v, str) else json.dumps(v, indent=2) for k, v in inputs.items()
            }
        if goal:
            variables["goal"] = goal
        if feedback:
            variables["feedback"] = feedback
        if agent.tools:
            variables["tools"] = [
                {"name": t.name, "description": t.description} for t in agent.tools
            ]
        if agent.output is not None:
            from .structured import json_schema_text

            variables["output_schema"] = json_schema_text(agent.output)
        return self.prompts.render(agent.instructions, **variables)

    async def _reserve(
        self, ref: str, prompt: int, answer: int, budget: str | None, key: str | None
    ) -> tuple[RateReservation | None, BudgetReservation | None]:
        """Hold the most a call may use, before it is sent: tokens against the shared
        rate limit, tokens and USD against the run's budget (one round trip)."""
        if self._batch is None:
            return None, None
        budgeted = budget is not None and self.budgets is not None
        return await admit(
            self._batch.send,
            self.limiters.for_model(ref) if self.limiters is not None else None,
            self.budgets,
            run_id=budget if budgeted else None,
            tokens=prompt + answer,
            usd=self.prices.cost(ref, prompt, answer) if budgeted else Decimal(0),
            key=key,
        )

    async def _charge(
        self,
        ref: str,
        provider: MeteredProvider | None,
        rate: RateReservation | None,
        held: BudgetReservation | None,
        started: float,
        *,
        also: PipelineStep | None = None,
    ) -> Decimal:
        """Settle the run's holds with what ``provider`` was served, failed or not (None:
        no client could be made, nothing was sent), with ``also``'s commands, and tell
        the observer of it; returns the cost."""
        usage = provider.usage if provider is not None else Usage()
        cost = self.prices.cost(ref, usage.input_tokens, usage.output_tokens)
        if self._batch is not None and (rate is not None or held is not None or also):
            await settle(
                self._batch.send,
                self.limiters.for_model(ref) if self.limiters is not None else None,
                self.budgets,
                rate=rate,
                held=held,
                tokens=usage.total,
                usd=cost,
                also=also,
            )
        if self._observe is not None and provider is not None and provider.requests:
            provider_name, model_name = split_model(ref)
            self._observe(provider_name, model_name, time.monotonic() - started, usage, cost)
        return cost


def _wanted(shards: list[Provider]) -> int:
    """How many clients of one provider to make, given those made so far."""
    if not shards:
        return 1
    return min(CLIENT_SHARDS, int(getattr(shards[0], "shards", CLIENT_SHARDS)))


def _message_dict(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "name": c.name, "arguments": c.arguments} for c in m.tool_calls
        ]
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    return out


def _provider_of(model: str) -> str | None:
    """The provider of ``provider:model``; ``None`` for a model that names none."""
    provider, sep, _ = model.partition(":")
    return provider if sep else None
