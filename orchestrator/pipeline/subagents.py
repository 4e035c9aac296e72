"""Subagents inside workflows: ``ctx.agent(...)`` runs an :class:`~taskloom.agents.agent.Agent`
as a recorded activity, ``taskloom.agent``.

Its output, usage and cost are recorded like any activity result, so a replay never
calls the model again; each call reserves against the run's budget (set with
``orch.start(..., budget_usd=, budget_tokens=)``) and the model's shared rate limit
before it is sent. The conversation's messages stay in the log, except those larger
than the payload threshold (``TASKLOOM_PAYLOAD_THRESHOLD``), which are stored
content-addressed in the blob store (when the worker has one; a long system prompt
shared by a hundred subagents is stored once) and referenced.

An agent with ``stream=True`` sends its tokens, as they arrive, to a short-lived stream
of its own (:meth:`LiveTokens.follow`, ``orch.live_tokens(run_id, step)``); only the
final output enters the log.

The engine knows nothing of agents and does not import this module: it is a worker
extension (:class:`Subagents`, :mod:`taskloom.engine.extensions`) that
:meth:`Orchestrator.worker <taskloom.client.Orchestrator.worker>` installs on the
workers it makes. It registers :data:`AGENT_ACTIVITY`, keeps the worker's agents,
gives its workflows the :class:`Context` that has ``ctx.agent``, and keeps the model
clients in the worker's ``resources``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Iterable, Mapping
from decimal import Decimal
from types import ModuleType
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from taskloom.agents.agent import Agent, AgentResult, AgentRunner, CallObserver
from taskloom.agents.batching import PipelineStep
from taskloom.agents.llm import Usage
from taskloom.engine.attempt import current
from taskloom.engine.context import Context as EngineContext
from taskloom.engine.definitions import ActivityDef
from taskloom.engine.execution import Host
from taskloom.engine.extensions import WorkerExtension
from taskloom.engine.retries import RetryPolicy
from taskloom.engine.worker import Worker
from taskloom.errors import UserError
from taskloom.pipeline.livetokens import LiveTokens
from taskloom.settings import Settings

if TYPE_CHECKING:  # a worker's metrics come with it; prometheus_client loads only then
    from taskloom.engine.metrics import Metrics

__all__ = [
    "AGENT_ACTIVITY",
    "AGENT_ACTIVITY_NAME",
    "Context",
    "LiveTokens",
    "Subagents",
    "agent_runner",
    "install",
]

AGENT_ACTIVITY_NAME = "taskloom.agent"
"""The activity that runs a subagent (``ctx.agent``)."""

AGENT_RETRY = RetryPolicy(max_attempts=4, initial_interval=2.0, max_interval=60.0)
"""Model calls fail in passing (429, 5xx, a bad answer): a few tries, backing off."""
_RUNNER = "taskloom.agent_runner"
_WARMUP = "taskloom.agent_warmup"
log = logging.getLogger("taskloom.engine.worker")


class Context(EngineContext):
    """What a workflow receives on a worker that serves subagents (every worker made by
    ``orch.worker``): the engine's :class:`~taskloom.engine.context.Context`, and
    :meth:`agent`."""

    async def agent(
        self,
        agent: Agent,
        task: str,
        *,
        inputs: Mapping[str, Any] | None = None,
        goal: str | None = None,
        feedback: str | None = None,
        model: str | None = None,
        budget: str | None = None,
    ) -> AgentResult:
        """Run a subagent as a recorded activity (a replay never calls the model again).

        ``inputs`` (JSON) go into its instructions; ``feedback`` tells a retry what was
        wrong; ``model`` overrides the agent's. Each call is held against the run's
        budget (``budget``: another run's, e.g. the parent's of a child run) and the
        model's shared rate limit before it is sent.
        """
        Subagents.of(self).add(agent)
        data = await self.run(
            AGENT_ACTIVITY_NAME,
            agent.name,
            task,
            inputs=dict(inputs) if inputs else None,
            goal=goal,
            feedback=feedback,
            model=model,
            budget=budget,
        )
        return AgentResult.from_dict(data)


class Subagents(WorkerExtension):
    """The worker extension that serves subagents: registers :data:`AGENT_ACTIVITY`,
    keeps the worker's agents (given, found in the modules it imports, or met in a
    ``ctx.agent`` call) and gives its workflows the :class:`Context` with ``ctx.agent``.

    Example::

        worker = Worker(store, modules=["myapp.flows"])
        worker.extend(Subagents(settings, agents=[fact_finder]))
    """

    context = Context

    def __init__(self, settings: Settings, *, agents: Iterable[Agent] = ()) -> None:
        self.settings = settings
        self._agents: dict[str, Agent] = {}
        for agent in agents:
            self.add(agent)
        self._runner: AgentRunner | None = None

    @classmethod
    def of(cls, where: Host | EngineContext) -> Subagents:
        """The extension on a worker, or on the worker running a workflow's context."""
        found = where.extension(cls)
        if found is None:
            raise UserError(
                "this worker serves no subagents: make it with orch.worker(...), or call "
                "taskloom.pipeline.subagents.install(worker, settings)"
            )
        return found

    def install(self, worker: Worker) -> None:
        """Serve subagents on ``worker``: the agents of its modules, an
        :class:`AgentRunner` (closed when the worker stops) with the settings' rate
        limits and prices, shared limits and run budgets on its Redis, and model calls
        counted in its metrics."""
        for module in worker.registry.modules:
            self.add_module(module)
        runner = AgentRunner(
            redis=worker.store.raw,
            prefix=worker.store.keys.prefix,
            prices=self.settings.price_table(),
            limits=self.settings.rate_limit_table(),
            observe=_observer(worker.metrics),
            observe_rate_limit=worker.metrics.llm_rate_limited if worker.metrics else None,
        )
        worker.registry.add(AGENT_ACTIVITY)
        # Closed in this order: a warm-up cut short leaves no client the runner would miss.
        worker.resources[_WARMUP] = _Warmup(self, runner, default=self.settings.model)
        worker.resources[_RUNNER] = runner
        self._runner = runner

    @property
    def runner(self) -> AgentRunner:
        """The :class:`AgentRunner` that makes this worker's model calls."""
        if self._runner is None:
            raise UserError("Subagents serve no worker yet: install them with worker.extend()")
        return self._runner

    def add(self, agent: Agent) -> None:
        """Register a subagent spec; another spec under a taken name is an error."""
        known = self._agents.get(agent.name)
        if known is not None and known is not agent and known != agent:
            raise UserError(f"two different agents are named {agent.name!r}; rename one")
        self._agents[agent.name] = agent

    def add_module(self, module: ModuleType) -> None:
        """Register every agent defined at the top level of ``module``."""
        for value in vars(module).values():
            if isinstance(value, Agent):
                self.add(value)

    def agent(self, name: str) -> Agent:
        """The agent called ``name``."""
        try:
            return self._agents[name]
        except KeyError:
            raise UserError(
                f"agent {name!r} is not registered with this worker (known: "
                f"{sorted(self._agents) or 'none'}); pass it in agents=[...] or define it at "
                f"the top level of a module the worker imports"
            ) from None

    @property
    def agents(self) -> dict[str, Agent]:
        """Registered agents by name (a copy)."""
        return dict(self._agents)


def _observer(metrics: Metrics | None) -> CallObserver | None:
    """Counts each finished model call in ``metrics``."""
    if metrics is None:
        return None

    def observe(provider: str, model: str, seconds: float, usage: Usage, cost: Decimal) -> None:
        metrics.llm_call(
            provider,
            model,
            seconds,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=float(cost),
        )

    return observe


def install(worker: Worker, settings: Settings, *, agents: Iterable[Agent] = ()) -> AgentRunner:
    """Make ``worker`` serve subagents (with ``agents`` and those of its modules): install
    :class:`Subagents` on it; returns their :class:`AgentRunner`."""
    return worker.extend(Subagents(settings, agents=agents)).runner


class _Warmup:
    """Makes the model clients of the worker's agents, in a thread, when it starts.

    A provider's SDK takes one to several seconds to import. Imported on the event loop
    by a worker's first call, it froze the worker past its lease: its runs were taken
    over and the call was sent twice (issue 12). :meth:`AgentRunner.client` makes
    clients in a thread in any case; this makes those of the agents the worker knows
    (and of the default model) before any call waits for them.
    """

    def __init__(self, subagents: Subagents, runner: AgentRunner, *, default: str | None) -> None:
        self._subagents, self._runner, self._default = subagents, runner, default
        self._task: asyncio.Task[None] | None = None

    def models(self) -> list[str]:
        """The models of the worker's registered agents, then the default model."""
        default = self._default or self._runner.env.get("TASKLOOM_MODEL")
        named = [a.model or default for a in self._subagents.agents.values()]
        return [m for m in (*named, default) if m]

    def start(self) -> None:
        """Warm in the background (the worker serves meanwhile)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._warm(), name="warm-up")

    async def _warm(self) -> None:
        started = time.monotonic()
        try:
            ready = await self._runner.warm(self.models())
        except Exception:  # a broken SDK install, say: the calls will say what it is
            log.warning("could not make the model clients ahead of calls", exc_info=True)
            return
        if ready:
            # The SDKs and their clients (~60,000 objects, imported in a thread after the
            # worker froze what it had loaded) live as long as the process too: out of the
            # cyclic GC, as the worker does with what it loads (Worker.load). A full pass
            # over them took 15-30 ms, about one every 500 calls of W5.
            gc.freeze()
            log.info(
                "model clients ready (%s) in %.2fs", ", ".join(ready), time.monotonic() - started
            )

    async def aclose(self) -> None:
        """Stop warming, if still at it."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def agent_runner(worker: Host) -> AgentRunner:
    """The :class:`AgentRunner` :func:`install` gave ``worker``."""
    return Subagents.of(worker).runner


async def _run_agent(
    agent: str,
    task: str,
    inputs: dict[str, Any] | None = None,
    goal: str | None = None,
    feedback: str | None = None,
    model: str | None = None,
    budget: str | None = None,
) -> dict[str, Any]:
    attempt = current()
    worker = attempt.host
    subagents = Subagents.of(worker)
    spec = subagents.agent(agent)
    run_id, step = attempt.task.run_id, attempt.task.seq
    live = LiveTokens(worker.store) if spec.stream else None
    sink = live.sink(run_id, step, attempt.info.attempt) if live is not None else None
    payloads = worker.payloads
    stored: list[Any] = []

    async def keep(result: AgentResult) -> PipelineStep:
        # Large messages once, by content; the run remembers them in the settle's round trip.
        stored[:] = await payloads.put_each(result.messages, what=f"a message of agent {agent!r}")
        return lambda pipe: payloads.queue_remember(pipe, run_id, stored)

    try:
        result = await subagents.runner.run(
            spec,
            task,
            inputs=inputs,
            goal=goal,
            feedback=feedback,
            model=model,
            budget=budget or run_id,
            stream=sink,
            # a re-execution after a crash takes over this attempt's budget hold
            key=f"{attempt.info.idempotency_key}#{attempt.info.attempt}",
            finish=keep,
        )
    except BaseException:
        if live is not None:  # followers look at whether another attempt comes
            with contextlib.suppress(RedisError):
                await live.finish(run_id, step, attempt.info.attempt, failed=True)
        raise
    if live is not None:
        await live.finish(run_id, step, attempt.info.attempt)
    out: dict[str, Any] = result.to_dict()
    out["messages"] = list(stored)
    return out


AGENT_ACTIVITY = ActivityDef(
    name=AGENT_ACTIVITY_NAME, fn=_run_agent, is_async=True, retry=AGENT_RETRY
)
"""The built-in activity that workers made by ``Orchestrator.worker`` serve: one run of
a registered agent."""
