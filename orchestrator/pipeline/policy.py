"""The policy of one activity of a pipeline run: its attempts (a subagent call, or a
child run for a piece that needs its own plan), verification, retries with the
verifier's feedback, and escalation to a person whose decision it applies.

::

    pass                     -> accepted
    fail, retries left       -> again, with the feedback (on the fallback model)
    fail after its retries,
    uncertain, a broken
    verifier or subagent,
    the budget spent         -> a person: approve, edit, reject, retry with a note, re-plan
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from taskloom.agents.agent import AgentResult
from taskloom.agents.structured import LAST_ANSWER, json_schema
from taskloom.errors import ActivityError, ChildWorkflowError
from taskloom.pipeline.plan import PlanActivity
from taskloom.pipeline.routing import Escalation, Severity

if TYPE_CHECKING:
    from taskloom.pipeline.pipeline import Pipeline

__all__ = ["ACTIVITY_DECISIONS", "ActivityRun", "Work", "decomposition", "edited", "problem_of"]

ACTIVITY_DECISIONS = ("approve", "edit", "reject", "retry", "replan")


_ENGINE_FAILURE = re.compile(
    r"^(?P<who>[^:]*): activity '[^']+' \(step [^)]*\) failed after (?P<n>\d+) attempts?: "
    r"(?:[A-Za-z]+(?:Error|Exception): )?"
)


def headline(problem: str) -> str:
    """``problem`` as an item's title says it: without the engine's step numbers and
    exception class, and without the quote of the model's answer (the item shows it).

    Example::

        headline("the subagent failed: activity 'taskloom.agent' (step 2.0.1) failed "
                 "after 4 attempts: LLMOutputError: m gave no valid Section; the output "
                 "began 'Sorry'")
        # "the subagent failed after 4 attempts: m gave no valid Section"
    """
    short = _ENGINE_FAILURE.sub(lambda m: f"{m['who']} after {m['n']} attempts: ", problem)
    return short.split("; the output began", 1)[0]


@dataclass
class Work:
    """The state of one activity in the run."""

    id: str
    key: str
    status: str = "pending"
    output: Any = None
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    decided_by: str | None = None
    reused: bool = False

    def summary(self) -> dict[str, Any]:
        """What the result reports of it (its values as they are, not copies: the
        result is serialised at once, and a deep copy of fifty outputs and their
        verdicts cost the end of a run some 10 ms)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in out.items() if v not in (None, False) or k == "output"}


class ActivityRun:
    """One activity through its attempts, verification and escalations."""

    def __init__(self, pipe: Pipeline, act: PlanActivity, work: Work) -> None:
        self.pipe, self.act, self.work = pipe, act, work
        self.agent = pipe.agents[act.role]
        self.spec = act.verify
        self.model = act.model or (None if self.agent.model else pipe.req.model)
        self.inputs = {d: pipe.works[d].output for d in act.inputs}
        self.history: list[dict[str, Any]] = pipe.histories.setdefault(act.id, [])
        self.finish: str | None = None
        """Why the model stopped the last attempt's output (``None``: no model wrote it)."""
        self.about = Escalation(activities=(act.id,), roles=(act.role,))
        """What the next escalation is about (for its route)."""
        self.raw: str | None = None
        """What the model last answered when no output validated (for the person)."""

    async def run(self, *, feedback: str | None = None) -> None:
        """Attempt, verify, retry, escalate until the activity is settled; ``feedback``
        goes with the first attempt (a re-run asked for by a cross-check)."""
        pipe, act, work = self.pipe, self.act, self.work
        retries = self.spec.max_retries
        while True:
            if not pipe.go(act.id, "started", attempt=work.attempts + 1):
                self.cancel()
                return
            work.attempts += 1
            output, problem = await self.attempt(feedback)
            outcome: dict[str, Any] | None = None
            if problem is not None:
                broke = "budget" if problem.startswith("the run's budget") else "subagent"
                self.about = Escalation(activities=(act.id,), roles=(act.role,), verifiers=(broke,))
                self.history.append(
                    {
                        "attempt": work.attempts,
                        "output": self.raw,
                        "status": "error",
                        "feedback": problem,
                    }
                )
            if problem is None:
                async with pipe.slots:
                    outcome = await pipe.verify(
                        self.spec,
                        output,
                        role=act.role,
                        act=act,
                        inputs=self.inputs,
                        finish=self.finish,
                    )
                work.verdicts = outcome["verdicts"]
                output = outcome["output"]
                self.history.append(
                    {
                        "attempt": work.attempts,
                        "output": output,
                        "status": outcome["status"],
                        "feedback": outcome["feedback"],
                    }
                )
                if outcome["status"] == "pass":  # one record says both: verified, accepted
                    self.accept(output, "verifiers", status="pass", attempt=work.attempts)
                    return
                pipe.emit(
                    "activity",
                    id=act.id,
                    state="verified",
                    status=outcome["status"],
                    attempt=work.attempts,
                )
                over = act.max_usd is not None and work.cost_usd > act.max_usd
                if outcome["status"] == "fail" and retries > 0 and not over:
                    retries -= 1
                    feedback = outcome["feedback"]
                    if self.spec.fallback_model:
                        self.model = self.spec.fallback_model
                    pipe.emit("activity", id=act.id, state="retrying", feedback=feedback)
                    continue
                problem = problem_of(outcome)
                status: Severity = outcome["status"]
                kinds = {v["verifier"] for v in outcome["verdicts"] if v["status"] != "pass"}
                self.about = Escalation(
                    activities=(act.id,),
                    roles=(act.role,),
                    verifiers=tuple(sorted(kinds | ({"budget"} if over else set()))),
                    severity=status,
                )
                if over:
                    problem += f" (its attempts cost ${work.cost_usd:.4f}, over its ${act.max_usd})"
            if pipe.req.replan_on_failure and pipe.can_replan() and outcome is not None:
                await pipe.ask_replan(f"activity {act.id!r} kept failing: {problem}")
                work.status = "replan"
                return
            step = await self.escalate(output, problem)
            if step is None:
                return
            feedback, retries = step, 0

    async def attempt(self, feedback: str | None) -> tuple[Any, str | None]:
        """One subagent call (or child run): its output, or why there is none."""
        pipe, act = self.pipe, self.act
        task = act.instructions
        self.finish, self.raw = None, None
        if act.split and pipe.req.depth < pipe.req.max_depth and self.agent.output is None:
            task += (
                "\n\nIf this piece is too big to do well in one answer, reply with only "
                'this JSON instead: {"decompose": "<what a sub-plan for it must achieve>"}'
            )
        try:
            async with pipe.slots:
                result = await pipe.ctx.agent(
                    self.agent,
                    task,
                    inputs=self.inputs or None,
                    goal=pipe.req.goal,
                    feedback=feedback,
                    model=self.model,
                    budget=pipe.budget,
                )
        except ActivityError as exc:
            budget = exc.error_type == "BudgetExceededError"
            text, _, self.raw = str(exc).partition(LAST_ANSWER)
            return None, ("the run's budget is spent: " if budget else "the subagent failed: ") + (
                text if self.raw else str(exc)
            )
        self.add(result.usage.total, result.cost_usd)
        why = decomposition(result) if self.agent.output is None else None
        if why is None:
            self.finish = result.finish
            return result.output, None
        if pipe.req.depth >= pipe.req.max_depth or not act.split:
            return None, f"asked to decompose ({why}) past the depth limit {pipe.req.max_depth}"
        return await self.child(why)

    async def child(self, why: str) -> tuple[Any, str | None]:
        pipe, act = self.pipe, self.act
        request = pipe.req.model_copy(
            update={
                "goal": f"{act.instructions}\n\n(Part of: {pipe.req.goal})\nWhat it needs: {why}",
                "depth": pipe.req.depth + 1,
                "plan": None,
                "template": None,
                "previous": None,
                "budget": pipe.budget,
                "budget_usd": None,
            }
        )
        pipe.emit("activity", id=act.id, state="decomposed", why=why)
        try:
            child = await pipe.ctx.child(pipe.ctx.workflow, request.model_dump(mode="json"))
        except ChildWorkflowError as exc:
            return None, f"its sub-plan failed: {exc}"
        self.add(int(child["tokens"]["total"]), float(child["cost_usd"]))
        return child["answer"], None

    def add(self, tokens: int, cost_usd: float) -> None:
        """Count spending on this activity's work, and on the run's."""
        self.work.tokens += tokens
        self.work.cost_usd += cost_usd
        self.pipe.spend.add("work", tokens, cost_usd)

    def cancel(self) -> None:
        """A re-plan stopped this activity before its next step."""
        self.work.status = "cancelled"
        self.pipe.emit("activity", id=self.act.id, state="cancelled")

    def accept(self, output: Any, by: str, **verified: Any) -> None:
        """Record the activity accepted ``by`` a person or the verifiers; ``verified``
        (``status``, ``attempt``) is the passing verification that accepted it, which
        then has no ``verified`` record of its own (one log entry instead of two)."""
        self.work.status, self.work.output, self.work.decided_by = "accepted", output, by
        self.pipe.emit(
            "activity",
            id=self.act.id,
            state="accepted",
            by=by,
            tokens=self.work.tokens,
            cost_usd=round(self.work.cost_usd, 8),
            **verified,
        )

    async def escalate(self, output: Any, problem: str) -> str | None:
        """Ask a person; apply the decision. Returns feedback for another attempt, or
        ``None`` when the activity is settled."""
        pipe, act, work = self.pipe, self.act, self.work
        while True:
            if not pipe.go(act.id, "escalated", reason=problem):
                self.cancel()
                return None
            decisions = tuple(
                d
                for d in ACTIVITY_DECISIONS
                if (d != "replan" or pipe.can_replan()) and (d != "approve" or output is not None)
            )
            decision = await pipe.ask(
                f"Activity {act.id!r} needs a decision: {headline(problem)}"[:300],
                {
                    "goal": pipe.req.goal,
                    "activity": act.model_dump(mode="json", by_alias=True),
                    "output": output,
                    "verdicts": work.verdicts,
                    "history": self.history,
                    "reason": problem,
                    "output_schema": self.output_schema(),
                    **({"last_output": self.raw} if output is None and self.raw else {}),
                },
                decisions,
                self.about,
            )
            if decision is None:
                self.cancel()
                return None
            pipe.emit(
                "activity", id=act.id, state="decided", decision=decision.decision, by=decision.by
            )
            if decision.decision == "approve":
                self.accept(output, decision.by)
                return None
            if decision.decision == "edit":
                try:
                    self.accept(self.validated(edited(decision.data, "output")), decision.by)
                    return None
                except (ValidationError, ValueError) as exc:
                    problem = f"the edited output is not valid: {exc}"
                    continue
            if decision.decision == "reject":
                work.status, work.decided_by = "rejected", decision.by
                return None
            if decision.decision == "replan":
                await pipe.ask_replan(decision.note or f"re-plan asked at activity {act.id!r}")
                work.status = "replan"
                return None
            return decision.note or "try again"

    def output_schema(self) -> dict[str, Any]:
        """The JSON Schema an edited output must meet (for the inbox's edit forms)."""
        if self.agent.output is not None:
            return json_schema(self.agent.output)
        return {"type": "string"}

    def validated(self, output: Any) -> Any:
        if self.agent.output is not None:
            return self.agent.output.model_validate(output).model_dump(mode="json")
        if not isinstance(output, str):
            raise ValueError("this activity's output is text: give a string")
        return output


def edited(data: Any, field_name: str) -> Any:
    """The edited value a decision carries (``{"output": ...}`` or the value itself)."""
    if isinstance(data, Mapping) and field_name in data:
        return data[field_name]
    if data is None:
        raise ValueError(f"an edit decision must carry the edited {field_name} in its data")
    return data


def problem_of(outcome: dict[str, Any]) -> str:
    status = outcome["status"]
    reasons = "; ".join(
        r for v in outcome["verdicts"] if v.get("status") != "pass" for r in v.get("reasons", [])
    )
    if status == "fail":
        return f"verification still fails after its retries: {outcome['feedback'] or reasons}"
    if status == "error":
        return f"a verifier could not check the output: {reasons}"
    return f"verification is uncertain: {reasons}"


def decomposition(result: AgentResult) -> str | None:
    """The reason a subagent gave for needing its own plan, if that is its answer."""
    text = result.text.strip()
    if not (text.startswith("{") and "decompose" in text):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, dict) and set(data) == {"decompose"} and isinstance(data["decompose"], str):
        return data["decompose"] or "no reason given"
    return None
