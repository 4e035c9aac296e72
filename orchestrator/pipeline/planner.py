"""The planning step of a pipeline run: a valid plan for the goal, from the plan given
up front, the planner agent's (an invalid one goes back to it with its problems, up to
``max_plan_attempts`` turns), or a person's; each adopted plan is the run's next version.

A plan is checked against what this run has: its roles, limits, the price table its calls
are priced by and the custom verifiers the workers know
(:func:`~taskloom.pipeline.plan.validate_plan`). A re-plan asks the same way, with the
previous plan and the outcomes so far as the planner's starting point.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskloom.errors import ActivityError, PlanError
from taskloom.pipeline.plan import Plan, PlanLimits, parse_plan, starter_plan, validate_plan
from taskloom.pipeline.policy import edited
from taskloom.pipeline.roles import PLANNER, catalog
from taskloom.pipeline.routing import Escalation
from taskloom.pipeline.subagents import Subagents
from taskloom.pipeline.verification import cross_check_catalog, verifier_catalog

if TYPE_CHECKING:
    from taskloom.pipeline.pipeline import Pipeline

__all__ = ["Planner"]

_SETUP_ERRORS = frozenset(
    {
        "ConfigurationError",
        "MissingAPIKeyError",
        "UnknownProviderError",
        "UnknownModelPriceError",
        "PriceTableError",
        "LLMAuthError",
    }
)
"""Errors of the setup (a key, a model name, a price), not of the plan: the run fails
with them at once instead of asking the planner again."""


class Planner:
    """The plans of one pipeline run: what the planner is told, how its answers are
    checked, and the version count (``version``: 0 until the first plan is adopted)."""

    def __init__(self, pipe: Pipeline) -> None:
        host = pipe.ctx._ex.host
        self.pipe = pipe
        self.roles = catalog(pipe.agents, pipe.req.roles)
        self.custom = verifier_catalog(host)  # name -> what it checks
        self.cross_checks = cross_check_catalog(host)
        self.version = 0

    def limits(self) -> PlanLimits:
        """The run's bounds on a plan."""
        r = self.pipe.req
        return PlanLimits(
            max_activities=r.max_activities,
            max_width=r.max_width,
            max_depth=r.max_chain,
            max_usd=r.budget_usd,
            default_model=r.model,
        )

    def check(self, data: Any) -> Plan:
        """``data`` as a plan valid for this run (:class:`PlanError` with the problems)."""
        pipe = self.pipe
        plan = parse_plan(data)
        prices = Subagents.of(pipe.ctx).runner.prices  # the table the calls are priced by
        validate_plan(
            plan,
            roles=self.roles,
            limits=self.limits(),
            prices=prices,
            verifiers=self.custom,
            final_output=None if pipe.req.reducer else "text",  # a reducer's: any
        )
        return plan

    async def make_plan(self, note: str | None, previous: Plan | None) -> Plan:
        """A valid plan: the given one, or the planner's, or a person's."""
        pipe, req = self.pipe, self.pipe.req
        if self.version == 0 and req.plan is not None:
            return self.adopt(self.check(req.plan), "given")
        feedback, last = note, None
        while True:
            for attempt in range(1, req.max_plan_attempts + 1):
                try:
                    result = await pipe.ctx.agent(
                        pipe.agents[PLANNER.name],  # the worker's, if it replaced ours
                        "Plan the work for the goal."
                        if previous is None
                        else "Revise the previous plan as the feedback asks.",
                        inputs=self.planner_inputs(previous),
                        goal=req.goal,
                        feedback=feedback,
                        model=req.planner_model or req.model,
                        budget=pipe.budget,
                    )
                except ActivityError as exc:
                    if exc.error_type in _SETUP_ERRORS:  # no planner turn can fix these
                        raise
                    feedback = f"the planner failed: {exc}"
                    pipe.emit("plan_invalid", attempt=attempt, problems=[str(exc)])
                    continue
                pipe.spend.add("planning", result.usage.total, result.cost_usd)
                last = result.output
                try:
                    return self.adopt(self.check(result.output), "planner")
                except PlanError as exc:
                    feedback = str(exc)
                    pipe.emit("plan_invalid", attempt=attempt, problems=exc.problems)
            decision = await pipe.ask(
                "The planner could not produce a valid plan",
                {
                    "goal": req.goal,
                    "problems": feedback,
                    # what the person edits: the planner's plan, else one to start from
                    "last_plan": last
                    if isinstance(last, dict)
                    else starter_plan(req.goal, self.roles),
                    "planner_said": last,
                },
                ("retry", "edit", "reject"),
                Escalation(roles=(PLANNER.name,), verifiers=("planner",), severity="error"),
            )
            if decision is None or decision.decision == "reject":
                raise PlanError(f"no valid plan for the goal: {feedback}")
            if decision.decision == "edit":
                try:
                    return self.adopt(self.check(edited(decision.data, "plan")), decision.by)
                except (PlanError, ValueError) as exc:
                    feedback = str(exc)
                    continue
            feedback = decision.note or feedback

    def adopt(self, plan: Plan, by: str) -> Plan:
        """``plan`` as the run's next version, recorded as ``pipeline.planned``."""
        self.version += 1
        plan = plan.model_copy(update={"version": self.version})
        self.pipe.emit("planned", version=self.version, by=by, plan=plan.model_dump(mode="json"))
        return plan

    def planner_inputs(self, previous: Plan | None) -> dict[str, Any]:
        """What the planner is shown beside the goal."""
        r = self.pipe.req
        inputs: dict[str, Any] = {
            "Roles": [role.to_dict() for role in self.roles.values()],
            "Limits": (
                f"at most {r.max_activities} activities, {r.max_width} side by side, chains "
                f"of at most {r.max_chain}; the budget is "
                + (f"${r.budget_usd:.4f}" if r.budget_usd else "not limited")
            ),
        }
        inputs["Custom verifiers (name them in `verify.custom`; there are no others)"] = (
            self.custom or "none: leave `verify.custom` empty"
        )
        if self.cross_checks:
            inputs["Cross-checks (run on the accepted outputs together; nothing to set)"] = (
                self.cross_checks
            )
        if r.template:
            inputs["Template"] = f"{r.template['name']}: {r.template['guidance']}"
            if r.template.get("verify"):
                inputs["Checks the template suggests for every activity"] = r.template["verify"]
        if previous is not None:
            inputs["Previous plan"] = previous.model_dump(mode="json", exclude={"version"})
            inputs["Outcomes so far"] = {i: w.status for i, w in self.pipe.works.items()}
        return inputs
