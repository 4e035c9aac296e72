"""The Python API: :class:`Orchestrator` to start and find runs, :class:`RunHandle` per run.

Example::

    async with Orchestrator() as orch:                 # embedded Redis by default
        handle = await orch.start(report, "pricing")
        async for event in handle.events():
            print(event.type)
        print(await handle.result())
"""

from __future__ import annotations

import asyncio
import functools
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from taskloom.agents.budget import Budgets, BudgetUsage
from taskloom.agents.errors import validation_problems
from taskloom.engine import serde
from taskloom.engine.blobs import is_ref, open_blob_store
from taskloom.engine.connection import Connection, connect
from taskloom.engine.definitions import ActivityDef, WorkflowDef
from taskloom.engine.dlq import DeadLetters
from taskloom.engine.durability import fsync_mode
from taskloom.engine.events import External, SignalReceived
from taskloom.engine.follow import StreamFollower
from taskloom.engine.human import HumanTasks
from taskloom.engine.keys import STATUSES, TERMINAL_STATUSES
from taskloom.engine.payloads import Payloads
from taskloom.engine.retention import RunDeleter
from taskloom.engine.store import Event, RunInfo, Store, now_ms
from taskloom.engine.worker import Worker
from taskloom.errors import (
    ConfigurationError,
    RunCancelledError,
    RunFailedError,
    RunNotFoundError,
    UserError,
)
from taskloom.settings import Settings
from taskloom.tracing import configure as configure_traces
from taskloom.tracing import new_run

if TYPE_CHECKING:
    from taskloom.agents.agent import Agent
    from taskloom.engine.embedded import EmbeddedRedis
    from taskloom.pipeline.templates import Template

__all__ = ["Orchestrator", "RunHandle"]

MAX_GOAL_CHARS = 20_000
GONE_CHECK_MS = 5_000
"""A followed run with no news for this long is checked for still being in Redis: one
EXISTS per waiter each time, so a process following thousands of runs makes hundreds a
second, not thousands."""


class RunHandle:
    """One run: await its result, follow its events, signal or cancel it.

    ``follower``: the :class:`StreamFollower` its waits share with the other handles
    of its :class:`Orchestrator` (a handle made on its own gets one of its own)."""

    def __init__(
        self,
        store: Store,
        run_id: str,
        *,
        follower: StreamFollower | None = None,
        payloads: Callable[[], Payloads] | None = None,
    ) -> None:
        self._store = store
        self.run_id = run_id
        self._follower = follower or StreamFollower(store.client, lanes=1)
        self._payloads = payloads

    def __repr__(self) -> str:
        return f"RunHandle({self.run_id!r})"

    async def info(self) -> RunInfo:
        """The run's current metadata (status, owner, result)."""
        return await self._store.run_info(self.run_id)

    async def status(self) -> str:
        """The run's status (``pending``, ``running``, ``waiting``, ``completed``,
        ``failed`` or ``cancelled``), read from its record, not its log."""
        outcome = await self._store.outcome(self.run_id)
        if outcome is None:
            await self._store.get_meta(self.run_id)  # raises RunNotFoundError
        assert outcome is not None
        return str(outcome[0])

    async def result(self, *, timeout: float | None = None) -> Any:
        """Wait for the run to end; its result, or :class:`RunFailedError` /
        :class:`RunCancelledError`.

        Reads the outcome the run's last write recorded (not its log), and waits on the
        run's ``ended`` stream, which gets one entry when the run ends: a waiter wakes
        once, however many events the run appends meanwhile."""
        ended = self._store.keys.ended(self.run_id)
        seen = False
        async with asyncio.timeout(timeout):
            while True:
                outcome = await self._store.outcome(self.run_id)
                if outcome is None:
                    if not seen:
                        await self._store.get_meta(self.run_id)  # raises RunNotFoundError
                    raise self._gone()
                seen = True
                status, value = outcome
                if status in TERMINAL_STATUSES:
                    return await self._ended(status, value)
                await self._follower.read(ended, after="0-0", block_ms=GONE_CHECK_MS)

    async def _ended(self, status: str, value: Any) -> Any:
        if status == "completed":
            if is_ref(value):  # a big result, kept in the blob store
                if self._payloads is None:
                    raise ConfigurationError(
                        f"run {self.run_id}'s result is in the blob store; read it through "
                        f"an Orchestrator's handle (orch.handle(run_id)), which knows the store"
                    )
                return await self._payloads().unpack(value)
            return value
        if status == "failed":
            err = value if isinstance(value, dict) else {}
            raise RunFailedError(
                f"run {self.run_id} failed: {err.get('type', 'Error')}: {err.get('message', '')}",
                error=err,
            )
        raise RunCancelledError(f"run {self.run_id} was cancelled")

    def _gone(self) -> RunNotFoundError:
        return RunNotFoundError(
            f"run {self.run_id} existed and is gone from Redis: the server lost "
            f"acknowledged writes (a crash under appendfsync everysec loses about the "
            f"last second), or the run was deleted after its retention. Start it "
            f"again; set TASKLOOM_DURABILITY=fsync so a started run survives a crash"
        )

    async def events(self, *, follow: bool = True, after: str = "") -> AsyncIterator[Event]:
        """The run's log, oldest first; with ``follow``, live until the run ends."""
        await self._store.get_meta(self.run_id)  # a clear error for an unknown id
        last = after
        batch = await self._store.read_log(self.run_id, after=last)
        while True:
            for event in batch:
                yield event
                if event.type in ("run_completed", "run_failed", "run_cancelled"):
                    return
            if batch:
                last = batch[-1].id
            if not follow:
                return
            entries = await self._follower.read(
                self._store.keys.log(self.run_id), after=last or "0-0", block_ms=GONE_CHECK_MS
            )
            batch = [Event.parse(entry_id, fields) for entry_id, fields in entries]
            if not batch and not await self._store.raw.exists(self._store.keys.meta(self.run_id)):
                raise self._gone()

    async def signal(
        self, name: str, payload: Any = None, *, request_id: str | None = None
    ) -> None:
        """Send a signal; a run waiting in ``ctx.wait_for_signal(name)`` resumes with it.

        ``request_id``: the signal is delivered once per id, so a caller that retries
        after an error (did the first one arrive?) passes the same id each time. Without
        one, only a call the Redis client itself sent again is dropped."""
        event: SignalReceived = {
            "type": "signal_received",
            "name": name,
            "payload": serde.loads(serde.dumps(payload, what=f"payload of signal {name!r}")),
            "ts": now_ms(),
        }
        await self._external(event, request_id=request_id)

    async def cancel(self) -> None:
        """Ask the run to stop; its child runs are cancelled with it."""
        await self._external({"type": "cancel_requested", "ts": now_ms()})

    async def _external(self, event: External, *, request_id: str | None = None) -> None:
        routing = await self._store.external(self.run_id, event, request_id=request_id)
        if routing.status == "missing":
            await self._store.get_meta(self.run_id)  # raises RunNotFoundError
        if routing.status == "terminal":
            what = "cancel" if event["type"] == "cancel_requested" else "signal"
            raise UserError(f"run {self.run_id} has already ended; nothing to {what}")
        await self._store.wake(self.run_id, routing)


class Orchestrator:
    """Connects to Redis (embedded by default) and starts, finds and lists runs.

    Keyword options override the environment (``TASKLOOM_*``); pass ``client`` to use a
    Redis client you made yourself.
    """

    def __init__(
        self, *, settings: Settings | None = None, client: Redis | None = None, **overrides: Any
    ) -> None:
        self.settings = settings or Settings.from_env(**overrides)
        self._client = client
        self._conn: Connection | None = None
        self._store: Store | None = None
        self._follower: StreamFollower | None = None

    async def __aenter__(self) -> Orchestrator:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the connection (starting the embedded Redis if no URL is set)."""
        if self._store is not None:
            return
        configure_traces(self.settings.traces)
        if self._client is None:
            self._conn = await connect(self.settings)
            client = self._conn.client
        else:
            client = self._client
        store = Store(client, prefix=self.settings.key_prefix)
        if self.settings.durability == "fsync":
            try:
                store.waitaof = await fsync_mode(client) == "waitaof"
            except ConfigurationError:
                await self.close()
                raise
        self._store = store
        self._follower = StreamFollower(client)

    async def close(self) -> None:
        """Close the connection; an embedded Redis this process started is shut down,
        unless it is kept (``embedded_keep``)."""
        if self._follower is not None:
            await self._follower.aclose()
        if self._conn is not None:
            await self._conn.close()
        self._conn, self._store, self._follower = None, None, None
        self.__dict__.pop("budgets", None)  # made on the closed client: made anew

    @property
    def embedded(self) -> EmbeddedRedis | None:
        """The embedded Redis this orchestrator is connected to, or ``None`` (a Redis URL,
        an injected client, or not connected)."""
        return None if self._conn is None else self._conn.embedded

    @property
    def store(self) -> Store:
        """The underlying :class:`Store` (after :meth:`connect`)."""
        if self._store is None:
            raise _not_connected()
        return self._store

    @property
    def follower(self) -> StreamFollower:
        """Where this Orchestrator's waits on Redis streams share their connections
        (results, followed events, live tokens; see :mod:`taskloom.engine.follow`)."""
        if self._follower is None:
            raise _not_connected()
        return self._follower

    async def start(
        self,
        workflow: WorkflowDef | str,
        *args: Any,
        run_id: str | None = None,
        timeout: float | None = None,
        budget_usd: float | str | None = None,
        budget_tokens: int | None = None,
    ) -> RunHandle:
        """Start ``workflow(*args)``; returns at once with a :class:`RunHandle`.

        ``run_id`` is an idempotency key: starting again with the same id and the same
        input returns the existing run; with a different input it is an error.
        ``timeout``: seconds the whole run may take; past it, the run fails with a
        :class:`RunTimeoutError`, its activities and children are stopped and its
        compensations run.
        ``budget_usd`` / ``budget_tokens``: the most the run's subagents may spend; each
        model call reserves against them before it is sent, and a call that would pass
        them fails with :class:`~taskloom.agents.errors.BudgetExceededError` instead.
        """
        if timeout is not None and not timeout > 0:
            raise UserError(f"timeout= must be a positive number of seconds (got {timeout!r})")
        name = workflow.name if isinstance(workflow, WorkflowDef) else workflow
        if not isinstance(name, str) or not name:
            raise UserError("start() needs a @workflow function or a workflow name")
        if run_id is not None and (not run_id or any(c in run_id for c in "{}/ \n")):
            raise UserError(
                f"run id {run_id!r} must be non-empty, without braces, slashes or spaces"
            )
        rid = run_id or uuid.uuid4().hex
        value = {"args": list(args), "kwargs": {}}
        input_json = serde.dumps(value, what=f"input of workflow {name!r}")
        if len(input_json) > self.settings.payload_threshold:  # by reference, like results
            packed = await self.payloads().pack(rid, value, what=f"the input of workflow {name!r}")
            input_json = serde.dumps(packed)
        deadline = now_ms() + int(timeout * 1000) if timeout is not None else 0
        Budgets.check_limits(max_tokens=budget_tokens, max_usd=budget_usd)
        created, status = await self.store.create_run(
            rid, workflow=name, input_json=input_json, deadline_ms=deadline, trace=new_run()
        )
        # "pending", not created: the same start sent again after a lost reply
        if (created or status == "pending") and (budget_usd, budget_tokens) != (None, None):
            await self.budgets.write_limits(rid, max_tokens=budget_tokens, max_usd=budget_usd)
        if created or status == "pending":
            await self.store.enqueue_run(rid, "new")
        return RunHandle(self.store, rid, follower=self.follower, payloads=self.payloads)

    async def submit(
        self,
        goal: str,
        *,
        template: str | Template | None = None,
        budget_usd: float | None = None,
        budget_tokens: int | None = None,
        roles: Iterable[str] | None = None,
        verifiers: Iterable[str] = (),
        model: str | None = None,
        max_parallel: int = 16,
        max_depth: int = 2,
        plan: Mapping[str, Any] | None = None,
        reducer: ActivityDef | str | None = None,
        assignee: str | None = None,
        replan_on_failure: bool = False,
        run_id: str | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> RunHandle:
        """Hand taskloom a goal: it is planned, run in parallel, verified, escalated where
        it must be, and integrated (see :mod:`taskloom.pipeline.pipeline`). Returns at once.

        ``template``: a shipped template name or a :class:`~taskloom.pipeline.templates.Template`.
        ``roles``: the agent names the plan may use (default: every agent the workers
        know). ``verifiers``: names of user verifiers (``orch.worker(verifiers=...)``)
        applied to every output. ``plan``: a plan given up front (the planner is then
        only asked for re-plans). ``reducer``: an activity that combines the accepted
        outputs instead of the integrator agent. ``assignee``: who gets escalations.
        Other options (``max_replans``, ``max_plan_attempts``, ``max_activities``,
        ``max_width``, ``max_chain``, ``planner_model``, ``judge_model``) go to
        :class:`~taskloom.pipeline.pipeline.PipelineRequest`.
        """
        from taskloom.pipeline import pipeline  # the layers above the engine: on first use
        from taskloom.pipeline.plan import parse_plan, size_problem
        from taskloom.pipeline.templates import get_template

        if not isinstance(goal, str) or not goal.strip():
            raise UserError("submit() needs a goal: a sentence saying what you want done")
        if len(goal) > MAX_GOAL_CHARS:
            raise UserError(
                f"the goal is {len(goal)} characters; keep it under {MAX_GOAL_CHARS} and pass "
                f"long material as a file the roles can read, or as a plan's instructions"
            )
        if budget_usd is not None and not float(budget_usd) > 0:
            raise UserError(
                f"budget_usd={budget_usd!r} allows no model call; give a positive amount or "
                f"leave it unset for no USD limit"
            )
        if budget_tokens is not None and not budget_tokens > 0:
            raise UserError(f"budget_tokens={budget_tokens!r} must be a positive number")
        if isinstance(template, str):
            template = get_template(template)
        fields: dict[str, Any] = {
            "goal": goal.strip(),
            "template": template.to_dict() if template is not None else None,
            "roles": list(roles) if roles is not None else None,
            "verifiers": list(verifiers),
            "model": model or self.settings.model,
            "max_parallel": max_parallel,
            "max_depth": max_depth,
            "budget_usd": float(budget_usd) if budget_usd is not None else None,
            "plan": parse_plan(dict(plan)).model_dump(mode="json", by_alias=True)
            if plan is not None
            else None,
            "reducer": reducer.name if isinstance(reducer, ActivityDef) else reducer,
            "assignee": assignee,
            "replan_on_failure": replan_on_failure,
            **options,
        }
        from pydantic import ValidationError  # loaded with the pipeline above

        try:
            request = pipeline.PipelineRequest.model_validate(fields)
        except ValidationError as exc:
            raise UserError(f"submit(): {validation_problems(exc)[0]}") from None
        if request.plan is not None:
            too_big = size_problem(
                len(request.plan["activities"]), request.max_activities, "max_activities="
            )
            if too_big:
                raise UserError(too_big)
        return await self.start(
            pipeline.PIPELINE_NAME,
            request.model_dump(mode="json", exclude_none=True),
            run_id=run_id,
            timeout=timeout,
            budget_usd=budget_usd,
            budget_tokens=budget_tokens,
        )

    async def rerun(
        self, run_id: str, *, from_activity: str, new_run_id: str | None = None
    ) -> RunHandle:
        """Run an ended pipeline run (completed, failed or cancelled) again from one
        activity: a new run with the old run's latest plan, given up front, which reuses
        every output the old run accepted except ``from_activity``'s and those of the
        activities built on it (see :mod:`taskloom.pipeline.rerun`). The old run is left
        as it was; the new one names it in its ``follow_up`` record. Returns at once.

        ``new_run_id`` is the new run's id (an idempotency key, as for :meth:`start`)."""
        from taskloom.pipeline import pipeline, rerun

        info = await self.store.run_info(run_id)
        if info.status not in TERMINAL_STATUSES:
            raise UserError(
                f"run {run_id} is still {info.status}: a re-run starts from an ended run "
                f"(wait for it, or cancel it first)"
            )
        request = await rerun.read_request(self.store, self.payloads(), run_id)
        plan = rerun.latest_plan(await self.store.read_log(run_id))
        if plan is None:
            raise UserError(
                f"run {run_id} ended before it had a plan: there is no activity to re-run "
                f"from; submit its goal again"
            )
        rerun.downstream(plan, [from_activity])  # an unknown activity, said now
        request.update(
            previous=run_id,
            rerun=[from_activity],
            plan=plan.model_dump(mode="json", by_alias=True, exclude={"version"}),
            budget=None,  # its own budget, not a parent's
        )
        usage = await self.budget(run_id)
        return await self.start(
            pipeline.PIPELINE_NAME,
            pipeline.PipelineRequest.model_validate(request).model_dump(
                mode="json", exclude_none=True
            ),
            run_id=new_run_id,
            budget_usd=None if usage.max_usd is None else str(usage.max_usd),
            budget_tokens=usage.max_tokens,
        )

    @property
    def dead_letters(self) -> DeadLetters:
        """The dead-letter queue: list, inspect, redrive and purge failed activities."""
        return DeadLetters(self.store)

    def payloads(self) -> Payloads:
        """Where big values go, by the settings (``blob_url``, thresholds)."""
        s = self.settings
        blobs = open_blob_store(s.blob_url or s.data_dir / "blobs")
        return Payloads(
            self.store, blobs, threshold=s.payload_threshold, hard_limit=s.payload_hard_limit
        )

    @functools.cached_property
    def budgets(self) -> Budgets:
        """The runs' budgets: limits, spent and held tokens and USD (made once: its
        scripts are read from the package on creation)."""
        return Budgets(self.store.raw, prefix=self.store.keys.prefix)

    async def budget(self, run_id: str) -> BudgetUsage:
        """What run ``run_id``'s subagents have spent and hold, against its limits."""
        return await self.budgets.usage(run_id)

    def live_tokens(
        self, run_id: str, step: str, *, timeout: float | None = None
    ) -> AsyncIterator[str]:
        """The text of a streaming subagent (``Agent(stream=True)``) at step ``step`` of
        run ``run_id``, as it arrives, until the attempt ends."""
        from taskloom.pipeline.livetokens import LiveTokens

        return LiveTokens(self.store, follower=self.follower).follow(run_id, step, timeout=timeout)

    @property
    def human_tasks(self) -> HumanTasks:
        """The inbox of human tasks across all runs: list them, decide them."""
        return HumanTasks(self.store)

    def handle(self, run_id: str) -> RunHandle:
        """A handle on an existing run."""
        return RunHandle(self.store, run_id, follower=self.follower, payloads=self.payloads)

    async def list_runs(self, status: str | None = None, *, limit: int = 100) -> list[RunInfo]:
        """Runs by status (newest first), read from the status indexes."""
        if status is not None and status not in STATUSES:
            raise UserError(f"unknown status {status!r}; choose one of {', '.join(STATUSES)}")
        return await self.store.list_runs(status, limit=limit)

    async def delete(self, run_id: str) -> None:
        """Delete the ended run ``run_id`` and everything it owns: its log, results and
        state, the blobs no other run references, its budget, its human tasks, its
        dead-letter entries.

        Raises:
            RunNotFoundError: there is no run ``run_id``.
            RunActiveError: it has not ended: cancel it first.
        """
        await RunDeleter(self.store).delete_one(run_id, blobs=self.payloads().blobs)

    def worker(
        self,
        *,
        workflows: Iterable[WorkflowDef] = (),
        activities: Iterable[ActivityDef] = (),
        modules: Iterable[ModuleType | str] = (),
        agents: Iterable[Agent] = (),
        **options: Any,
    ) -> Worker:
        """A :class:`Worker` on this connection, with the settings' defaults; it also
        serves subagents (``ctx.agent``) with ``agents`` and those in ``modules``, and
        runs pipelines (:meth:`submit`) with them as roles, the user ``verifiers=``
        (name -> :class:`~taskloom.verifiers.Verifier`) and ``cross_checks=``."""
        options.setdefault("concurrency", self.settings.concurrency)
        options.setdefault("queue", self.settings.queue)
        options.setdefault("partitions", self.settings.queue_partitions)
        options.setdefault("lease_ttl", self.settings.lease_ttl)
        options.setdefault("prefetch", self.settings.prefetch)
        options.setdefault("retention", self.settings.retention)
        verifiers = options.pop("verifiers", None)
        cross_checks = options.pop("cross_checks", None)
        if "payloads" not in options:
            options["payloads"] = self.payloads()
        worker = Worker(
            self.store,
            workflows=workflows,
            activities=activities,
            modules=modules,
            **options,
        )
        from taskloom.inbox import notify

        notify.install(worker, self.settings)
        # The subagents eagerly when its code may reach ctx.agent (it imported them, for
        # an Agent or for `from taskloom import Context`); the pipeline, its verifiers and
        # templates (and the subagents otherwise) off the loop as it starts, unless the
        # caller gave verifiers or cross-checks of its own, which are checked at once.
        agents = list(agents)
        eager = agents or "taskloom.pipeline.subagents" in sys.modules
        if eager:
            _subagents(worker, self.settings, agents)
        load = functools.partial(
            _pipeline, verifiers, cross_checks, subagents=None if eager else (self.settings, agents)
        )
        if verifiers or cross_checks:  # the user's checks: a mistake in them is said here
            load()(worker)
        else:
            worker.defer(load)
        return worker


def _subagents(worker: Worker, settings: Settings, agents: list[Agent]) -> None:
    from taskloom.pipeline.subagents import install

    install(worker, settings, agents=agents)


def _pipeline(
    verifiers: Any, cross_checks: Any, *, subagents: tuple[Settings, list[Agent]] | None
) -> Callable[[Worker], None]:
    """Import the pipeline (its verifiers, templates, the LLM layer: most of a second)
    and return what installs it on a worker, with the subagents first if ``subagents``
    (``(settings, agents)``) says so."""
    from taskloom.pipeline import pipeline

    def install(worker: Worker) -> None:
        if subagents is not None:
            _subagents(worker, *subagents)
        pipeline.install(worker, verifiers=verifiers, cross_checks=cross_checks)

    return install


def _not_connected() -> UserError:
    return UserError(
        "the Orchestrator is not connected: use `async with "
        "Orchestrator() as orch:` or `await orch.connect()` first"
    )
