"""The dynamic pipeline: a goal planned into a DAG, run in parallel, verified, escalated
where needed, and integrated. It is an ordinary workflow (named ``taskloom.pipeline``) built on
the engine's primitives, so a crash anywhere resumes by replay without a second model
call for anything recorded.

::

    handle = await orch.submit("A market report on heat pumps", template="research_report",
                               budget_usd=2.0)
    result = await handle.result()
    result["answer"], result["activities"]["pricing"]["verdicts"], result["cost_usd"]

What happens, in order:

1. **Plan.** The planner agent proposes a :class:`~taskloom.pipeline.plan.Plan`; an invalid
   one goes back to it with the problems (``max_plan_attempts`` turns), then to a person
   (:mod:`taskloom.pipeline.planner`).
2. **Execute.** Each activity starts as soon as its inputs are accepted, at most
   ``max_parallel`` model calls at once. Its output is verified; a ``fail`` is retried
   with the verifier's feedback (on the fallback model if one is set), up to
   ``max_retries``; still failing, ``uncertain``, broken verifiers, a failed subagent
   or an exhausted budget escalate to the inbox with the whole context. The person may
   approve, edit (the edit becomes the output), reject, retry with a note, or re-plan.
   An activity marked ``split`` may answer that it needs its own plan: it becomes a
   child run, down to ``max_depth``.
3. **Re-plan.** A re-plan asked for by a person (or by exhausted retries with
   ``replan_on_failure``) stops new work, withdraws the run's other open questions,
   asks the planner for a new version, and reuses every accepted activity whose spec
   (and upstream specs) did not change; the others are cancelled.
4. **Integrate.** Activities that state figures for the same quantity are checked
   against each other as soon as both are accepted, before anything uses them
   (:mod:`taskloom.pipeline.crossgate`); every cross-activity check looks at the accepted
   outputs together once more; then the integrator (or the user's reducer activity)
   combines them, and the answer is verified with the same policy. Only accepted
   outputs reach the integrator.

Every decision is in the run's log as a ``value_recorded`` event named ``pipeline.*``
(:func:`pipeline_events` reads them): the plans, each activity's start, verdicts,
retries, escalations and outcome, the re-plan diffs and the integration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from taskloom.agents.agent import Agent
from taskloom.engine.definitions import ActivityDef, workflow
from taskloom.engine.human import Decision
from taskloom.errors import ActivityError, HumanTaskExpiredError, WorkflowError
from taskloom.pipeline.crossgate import CrossGate, final_check
from taskloom.pipeline.entries import PIPELINE_NAME, pipeline_entry, pipeline_events
from taskloom.pipeline.plan import Plan, PlanActivity, diff_plans, spec_keys
from taskloom.pipeline.planner import Planner
from taskloom.pipeline.policy import ActivityRun, Work, edited, problem_of
from taskloom.pipeline.rerun import downstream, previous_run
from taskloom.pipeline.roles import BUILTIN_ROLES, INTEGRATOR, PLANNER
from taskloom.pipeline.routing import Escalation, FallbackStep, Route, Routing, check_reviewer
from taskloom.pipeline.subagents import Context, Subagents
from taskloom.pipeline.verification import CustomVerifiers, install_verifiers
from taskloom.verifiers import VerifySpec

if TYPE_CHECKING:
    from taskloom.engine.worker import Worker
    from taskloom.verifiers import CrossCheck

__all__ = [
    "PIPELINE_NAME",
    "PipelineRequest",
    "add_builtin_roles",
    "install",
    "pipeline",
    "pipeline_entry",
    "pipeline_events",
]

SUPERSEDED = "superseded by a re-plan"


class PipelineRequest(BaseModel):
    """What one pipeline run was asked to do (its recorded input)."""

    model_config = ConfigDict(extra="forbid")

    goal: str = Field(min_length=1)
    template: dict[str, Any] | None = None
    roles: list[str] | None = None
    verifiers: list[str] = Field(default_factory=list)
    """User verifiers (by the name the workers know them) for every output."""
    model: str | None = None
    """For roles that name no model, the planner and the integrator."""
    planner_model: str | None = None
    judge_model: str | None = None
    max_parallel: int = Field(default=16, ge=1)
    max_depth: int = Field(default=2, ge=0)
    depth: int = Field(default=0, ge=0)
    max_plan_attempts: int = Field(default=3, ge=1)
    max_replans: int = Field(default=2, ge=0)
    max_activities: int = Field(default=100, ge=1)
    max_width: int = Field(default=64, ge=1)
    max_chain: int = Field(default=10, ge=1)
    budget_usd: float | None = Field(default=None, gt=0)
    budget: str | None = None
    """The run whose budget model calls are held against (a child's root run)."""
    assignee: str | None = None
    """Who gets the escalations no route takes (the run-level default)."""
    sla: float | None = Field(default=None, gt=0)
    """Seconds the default assignee has to decide; then ``fallback`` applies."""
    fallback: list[FallbackStep] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    """Escalations by activity, role, verifier kind or severity to their reviewers
    (:mod:`taskloom.pipeline.routing`), before the template's and the plan's."""
    reducer: str | None = None
    """An activity that combines the accepted outputs instead of the integrator."""
    replan_on_failure: bool = False
    plan: dict[str, Any] | None = None
    """A plan given up front: the planner is not asked (it is for re-plans)."""
    previous: str | None = None
    """An ended pipeline run this one follows up: its plan is the planner's starting
    point, and its accepted activities whose spec did not change are reused."""
    rerun: list[str] = Field(default_factory=list)
    """Activities of ``previous`` to do again, with everything built on them."""

    @field_validator("assignee")
    @classmethod
    def _reviewer(cls, value: str | None) -> str | None:
        return None if value is None else check_reviewer(value)


@dataclass
class Spend:
    """Tokens and USD by where they went."""

    tokens: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("planning", "work", "verification", "integration"), 0
        )
    )
    cost_usd: float = 0.0

    def add(self, kind: str, tokens: int, cost: float) -> None:
        self.tokens[kind] += tokens
        self.cost_usd += cost


@workflow(name=PIPELINE_NAME)
async def pipeline(ctx: Context, request: dict[str, Any]) -> dict[str, Any]:
    """Plan ``request["goal"]``, run the plan, verify, escalate, integrate."""
    return await Pipeline(ctx, PipelineRequest.model_validate(request)).run()


PREVIOUS_RUN_ACTIVITY = ActivityDef(name="taskloom.previous_run", fn=previous_run, is_async=True)


def install(
    worker: Worker,
    *,
    verifiers: CustomVerifiers | None = None,
    cross_checks: Iterable[CrossCheck] | None = None,
) -> None:
    """Make ``worker`` run pipelines: the workflow, the planner and integrator, the
    built-in roles (where no agent of the worker has the name), the verification
    activities with the user's named ``verifiers`` (a verifier, or ``(verifier,
    description)``: the planner is told what each checks) and ``cross_checks``."""
    worker.registry.add(pipeline)
    worker.registry.add(PREVIOUS_RUN_ACTIVITY)
    add_builtin_roles(Subagents.of(worker))
    install_verifiers(worker, verifiers=verifiers, cross_checks=cross_checks)


def add_builtin_roles(subagents: Subagents) -> None:
    """Give ``subagents`` the planner, the integrator and the built-in roles, where none
    of its own agents has the name."""
    known = subagents.agents
    for agent in (PLANNER, INTEGRATOR, *BUILTIN_ROLES):
        if agent.name not in known:
            subagents.add(agent)


class Pipeline:
    def __init__(self, ctx: Context, request: PipelineRequest) -> None:
        self.ctx, self.req = ctx, request
        self.agents: dict[str, Agent] = Subagents.of(ctx).agents
        self.budget = request.budget or ctx.run_id
        self.slots = asyncio.Semaphore(request.max_parallel)
        self.spend = Spend()
        self.replan: str | None = None
        self.accepted: dict[str, Work] = {}  # spec key -> accepted work, for reuse
        self.works: dict[str, Work] = {}
        self.dropped: list[str] = []
        self.escalations = 0
        self.planner = Planner(self)
        self.plan: Plan | None = None
        self.histories: dict[str, list[dict[str, Any]]] = {}  # activity -> its attempts
        self.settled_findings: set[str] = set()
        """Cross-check findings a person approved: not asked about again."""

    def emit(self, event: str, **data: Any) -> Any:
        return self.ctx.record(f"pipeline.{event}", data)

    # -- the run ------------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        previous = await self.follow_up() if self.req.previous else None
        plan = await self.planner.make_plan(self.req.goal if previous else None, previous)
        while True:
            await self.execute(plan)
            if self.replan is None:
                await self.cross_check(plan)
            if self.replan is None:
                break
            note, self.replan = self.replan, None
            new = await self.planner.make_plan(note, plan)
            diff = diff_plans(plan, new)
            self.dropped.extend(f"v{plan.version}:{i}" for i in diff.dropped)
            self.emit(
                "replanned",
                version=new.version,
                reused=diff.reused,
                added=diff.added,
                dropped=diff.dropped,
            )
            plan = new
        answer = await self.integrate(plan)
        return {
            "goal": self.req.goal,
            "answer": answer,
            "plan_version": plan.version,
            "plan": plan.model_dump(mode="json", by_alias=True),
            "activities": {i: w.summary() for i, w in self.works.items()},
            "dropped": self.dropped,
            "escalations": self.escalations,
            "tokens": self.spend.tokens | {"total": sum(self.spend.tokens.values())},
            "cost_usd": round(self.spend.cost_usd, 8),
        }

    async def follow_up(self) -> Plan:
        """Take over a finished run's plan and accepted work (read by a recorded
        activity, so a replay sees what the first execution saw)."""
        prev = await self.ctx.run(PREVIOUS_RUN_ACTIVITY.name, self.req.previous)
        plan = Plan.model_validate(prev["plan"])
        stale = downstream(plan, self.req.rerun)
        for act_id, data in prev["activities"].items():
            work = Work(**{k: v for k, v in data.items() if k in Work.__dataclass_fields__})
            self.works[act_id] = work
            if work.status == "accepted" and act_id not in stale:
                self.accepted[work.key] = work
        self.emit(
            "follow_up",
            previous=self.req.previous,
            version=plan.version,
            rerun=sorted(stale),
            reusable=sorted(i for i, w in self.works.items() if w.key in self.accepted),
        )
        return plan

    # -- executing ----------------------------------------------------------------------
    async def execute(self, plan: Plan) -> None:
        keys = spec_keys(plan)
        self.plan = plan
        self.works = {a.id: Work(a.id, keys[a.id]) for a in plan.activities}
        ready = {a.id: asyncio.Event() for a in plan.activities}
        gate = CrossGate(self, plan)

        async def branch(act: PlanActivity) -> None:
            try:
                for dep in act.inputs:
                    await ready[dep].wait()
                await self.activity(act)
                await gate.release(act)  # checked against its peers before any use
            finally:
                gate.finish(act.id)
                ready[act.id].set()

        await self.ctx.gather(*(branch(a) for a in plan.activities))

    async def activity(self, act: PlanActivity) -> None:
        work = self.works[act.id]
        reused = self.accepted.get(work.key)
        if reused is not None:
            self.works[act.id] = replace(reused, id=act.id, reused=True)
            self.emit("activity", id=act.id, state="reused", key=work.key)
            return
        blocked = [d for d in act.inputs if self.works[d].status != "accepted"]
        if blocked:
            work.status = "blocked"
            self.emit("activity", id=act.id, state="blocked", by=blocked)
            return
        await ActivityRun(self, act, work).run()
        if work.status == "accepted":
            self.accepted[work.key] = work

    async def rerun(self, act: PlanActivity, feedback: str) -> None:
        """Run an accepted activity again (a cross-check's decision kept another side)."""
        work = self.works[act.id]
        work.status = "pending"
        self.emit("activity", id=act.id, state="rerun", feedback=feedback)
        await ActivityRun(self, act, work).run(feedback=feedback)
        if work.status == "accepted":
            self.accepted[work.key] = work

    def go(self, act_id: str, state: str, **data: Any) -> bool:
        """Record a step of an activity; False when a re-plan stopped new work (the
        recorded answer, so a replay takes the same path)."""
        return bool(
            self.emit("activity", id=act_id, state=state, go=self.replan is None, **data)["go"]
        )

    def routing(self) -> Routing:
        """The run's routes: the submit's, the template's, the current plan's."""
        req = self.req
        template = [Route.model_validate(r) for r in (req.template or {}).get("routes", [])]
        planned = self.plan.routes if self.plan is not None else []
        return Routing(
            [*req.routes, *template, *planned],
            assignee=req.assignee,
            sla=req.sla,
            fallback=req.fallback,
        )

    async def ask(
        self,
        title: str,
        context: dict[str, Any],
        decisions: tuple[str, ...],
        about: Escalation | None = None,
    ) -> Decision | None:
        """Escalate to a person (the one its route names); ``None`` when a re-plan
        withdrew the question."""
        self.escalations += 1
        to = self.routing().target(about or Escalation())
        if isinstance(context, dict):
            context = {**context, "routed_to": to.assignee or to.group}
        try:
            return await self.ctx.escalate(
                title,
                context=context,
                decisions=decisions,
                assignee=to.assignee,
                group=to.group,
                sla=to.sla,
                fallback=to.steps(decisions),
            )
        except HumanTaskExpiredError as exc:
            if SUPERSEDED in str(exc):
                return None
            raise

    async def ask_replan(self, note: str) -> None:
        """Stop new work and withdraw the run's other open questions; the main loop
        re-plans once every branch has stopped."""
        self.replan = note or "re-plan"
        await self.ctx.run("taskloom.supersede", self.ctx.run_id, SUPERSEDED)

    async def verify(
        self,
        spec: VerifySpec,
        output: Any,
        *,
        role: str | None,
        act: PlanActivity | None,
        inputs: Mapping[str, Any] | None = None,
        finish: str | None = None,
    ) -> dict[str, Any]:
        """Run the checks (again once if a verifier broke: that never burns a retry).

        ``finish`` is why the model stopped the output (its provider's finish reason);
        ``None`` for an output no model wrote (a reducer's, a child run's answer)."""
        spec = spec.model_copy(update={"custom": [*spec.custom, *self.req.verifiers]})
        request = {
            "spec": spec.model_dump(mode="json", by_alias=True),
            "output": output,
            "role": role,
            "goal": self.req.goal,
            "activity": act.id if act else "final",
            "instructions": act.instructions if act else "",
            "inputs": dict(inputs or {}),  # what the activity was given
            "finish": finish,
            "budget": self.budget,
            "model": self.req.judge_model or self.req.model,
        }
        outcome: dict[str, Any] = {}
        for _ in range(2):
            outcome = await self.ctx.run("taskloom.verify", request)
            tokens = sum(v["input_tokens"] + v["output_tokens"] for v in outcome["verdicts"])
            self.spend.add("verification", tokens, sum(v["cost_usd"] for v in outcome["verdicts"]))
            if outcome["status"] != "error":
                break
        return outcome

    # -- across activities, and integration ---------------------------------------------
    async def cross_check(self, plan: Plan) -> None:
        """Every cross-activity check over the accepted outputs together, before
        integration (:func:`~taskloom.pipeline.crossgate.final_check`)."""
        await final_check(self, plan)

    def can_replan(self) -> bool:
        return self.planner.version - 1 < self.req.max_replans  # each re-plan adopts a new version

    async def integrate(self, plan: Plan) -> Any:
        accepted = {i: w.output for i, w in self.works.items() if w.status == "accepted"}
        if not accepted:
            states = ", ".join(f"{i}: {w.status}" for i, w in self.works.items())
            raise WorkflowError(f"no activity output was accepted ({states}); nothing to integrate")
        feedback: str | None = None
        retries = plan.final.max_retries
        while True:
            answer, outcome = await self.combine(plan, accepted, feedback)
            if outcome["status"] == "pass":
                return outcome["output"]
            if outcome["status"] == "fail" and retries > 0:
                retries -= 1
                feedback = outcome["feedback"]
                continue
            decisions = (
                ("approve", "edit", "reject", "retry")
                if answer is not None
                else ("edit", "reject", "retry")
            )
            decision = await self.ask(
                "The integrated answer needs a decision",
                {
                    "goal": self.req.goal,
                    "answer": answer,
                    "verdicts": outcome["verdicts"],
                    "reason": problem_of(outcome)
                    if answer is not None
                    else outcome["verdicts"][0]["reasons"][0],
                },
                decisions,
                Escalation(
                    activities=("final",),
                    roles=(INTEGRATOR.name,),
                    verifiers=tuple(
                        sorted(v["verifier"] for v in outcome["verdicts"] if v["status"] != "pass")
                    ),
                    severity=outcome["status"] if outcome["status"] != "pass" else "error",
                ),
            )
            if decision is None or decision.decision == "reject":
                raise WorkflowError("the integrated answer was rejected")
            if decision.decision == "approve":
                return outcome["output"]
            if decision.decision == "edit":
                try:
                    return edited(decision.data, "output")
                except ValueError as exc:  # nothing to take as the answer: ask again
                    feedback, retries = str(exc), 0
                    continue
            feedback, retries = decision.note or outcome["feedback"], 0

    async def combine(
        self, plan: Plan, accepted: dict[str, Any], feedback: str | None
    ) -> tuple[Any, dict[str, Any]]:
        """One integration (integrator or reducer), verified; a failed integrator is an
        ``error`` outcome for a person to settle."""
        finish: str | None = None  # a reducer's answer: no model to have cut it off
        try:
            if self.req.reducer:
                answer = await self.ctx.run(self.req.reducer, accepted)
            else:
                result = await self.ctx.agent(
                    self.agents[INTEGRATOR.name],
                    plan.integrate,
                    inputs=accepted,
                    goal=self.req.goal,
                    feedback=feedback,
                    model=self.req.model,
                    budget=self.budget,
                )
                self.spend.add("integration", result.usage.total, result.cost_usd)
                answer, finish = result.output, result.finish
        except ActivityError as exc:
            broke = {
                "verifier": "integrator",
                "status": "error",
                "reasons": [f"the integrator failed: {exc}"],
            }
            return None, {"status": "error", "verdicts": [broke], "output": None, "feedback": ""}
        outcome = await self.verify(plan.final, answer, role=None, act=None, finish=finish)
        self.emit(
            "integrated",
            status=outcome["status"],
            inputs=sorted(accepted),
            verdicts=outcome["verdicts"],
        )
        return answer, outcome
