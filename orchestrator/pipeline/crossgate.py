"""Cross-checks as soon as their activities are accepted, before anything consumes them.

Activities that state figures for the same quantity (a plan's ``facts``, else the
quantity words of their instructions: revenue, headcount, ...) are **peers**. Each pair
of peers is checked (:class:`~taskloom.verifiers.Figures`, and any
:class:`~taskloom.verifiers.Agreement` the workers have) by one of the two, its
**owner**, as soon as both are accepted; neither is *released* to the activities that
take it as input before that check passed or a person settled it. So a contradiction
cannot flow downstream.

- The owner of a pair where one activity is upstream of the other is the downstream
  one (the upstream one was released before it started). Otherwise it is the later of
  the two in the plan, and both wait for its check.
- A pair whose waiting would deadlock the plan (a release waiting, through inputs, on
  itself) is left to the check before integration.
- A contradiction goes to a person with both outputs; the item implicates only the
  activities that disagree. They may approve (keep both), keep one side and re-run
  another (``rerun:<id>``: that activity runs again with the contradiction as
  feedback, then the pair is checked again), reject the implicated outputs, or re-plan.

Every step is taken in the owner's branch of the plan, on recorded values, so a replay
takes the same path.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from taskloom.pipeline.plan import Plan, PlanActivity
from taskloom.pipeline.routing import Escalation
from taskloom.verifiers.figures import fact_terms

if TYPE_CHECKING:
    from taskloom.engine.human import Decision
    from taskloom.pipeline.pipeline import Pipeline

__all__ = [
    "FACT_WORDS",
    "CrossGate",
    "GatePlan",
    "apply_cross",
    "ask_cross",
    "cross_title",
    "declared_facts",
    "final_check",
    "gate_plan",
    "plan_facts",
    "signature",
]

FACT_WORDS = frozenset(
    (
        "revenue",
        "revenues",
        "sales",
        "turnover",
        "profit",
        "profits",
        "income",
        "earnings",
        "ebitda",
        "ebit",
        "margin",
        "cost",
        "costs",
        "expenses",
        "spending",
        "spend",
        "budget",
        "price",
        "prices",
        "headcount",
        "employees",
        "staff",
        "customers",
        "users",
        "subscribers",
        "members",
        "population",
        "valuation",
        "funding",
        "debt",
        "cash",
        "churn",
        "growth",
        "orders",
        "units",
        "shipments",
        "visitors",
        "downloads",
        "students",
        "patients",
        "emissions",
        "capacity",
        "production",
        "inventory",
        "salary",
        "salaries",
        "wages",
        "rent",
        "deficit",
        "gdp",
        "inflation",
        "unemployment",
        "attendance",
        "volume",
    )
)
"""Words of an activity's instructions that name a quantity (when the plan lists no
``facts`` for it)."""

_WORDS = re.compile(r"[a-z]+")


def plan_facts(plan: Plan) -> dict[str, list[str]]:
    """Each activity's facts: the plan's, else the quantity words of its instructions."""
    facts = {}
    for act in plan.activities:
        if act.facts:
            facts[act.id] = list(act.facts)
        else:
            found = {w for w in _WORDS.findall(act.instructions.lower()) if _fact_word(w)}
            facts[act.id] = sorted(found)
    return facts


def _fact_word(word: str) -> str | None:
    """The quantity ``word`` names, singular or plural ("visitor", "visitors")."""
    for form in (word, word + "s", word.removesuffix("s")):
        if form in FACT_WORDS:
            return form
    return None


def declared_facts(plan: Plan) -> dict[str, list[str]] | None:
    """The facts the plan itself lists, or ``None`` when it lists none: the check
    before integration then compares every quantity two outputs both state (the
    instructions' words only decide, earlier, who waits for whose check)."""
    if not any(a.facts for a in plan.activities):
        return None
    return plan_facts(plan)


@dataclass(frozen=True)
class GatePlan:
    """Which activity checks which peers, and who waits for whose check."""

    owns: dict[str, list[str]] = field(default_factory=dict)
    """Owner -> the peers it checks itself against."""
    waits: dict[str, list[str]] = field(default_factory=dict)
    """Activity -> the owners whose check it waits for before its release."""


def gate_plan(plan: Plan, facts: Mapping[str, Sequence[str]]) -> GatePlan:
    """The pairs of peers of ``plan``, given each activity's ``facts``."""
    ids = [a.id for a in plan.activities]
    inputs = {a.id: list(a.inputs) for a in plan.activities}
    terms = {i: {fact_terms(f) for f in facts.get(i, ())} - {frozenset()} for i in ids}
    above = _ancestors(inputs)
    edges = {i: set(inputs[i]) for i in ids}  # release(i) needs release(j)
    owns: dict[str, list[str]] = {}
    waits: dict[str, list[str]] = {}
    for n, a in enumerate(ids):
        for b in ids[n + 1 :]:
            if not terms[a] & terms[b]:
                continue
            if a in above[b] or b in above[a]:  # the downstream one checks
                low, high = (b, a) if a in above[b] else (a, b)
                owns.setdefault(low, []).append(high)
                continue
            trial = {i: set(e) for i, e in edges.items()}
            trial[b] |= set(inputs[a])  # b, the owner, waits for a to settle
            trial[a] |= set(inputs[b])  # a waits for b's check, after b settled
            if _cyclic(trial):
                continue
            edges = trial
            owns.setdefault(b, []).append(a)
            waits.setdefault(a, []).append(b)
    return GatePlan(owns=owns, waits=waits)


def _ancestors(inputs: Mapping[str, list[str]]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}

    def of(node: str) -> set[str]:
        if node not in found:
            found[node] = set()
            for dep in inputs.get(node, []):
                found[node] |= {dep} | of(dep)
        return found[node]

    for node in inputs:
        of(node)
    return found


def _cyclic(edges: Mapping[str, set[str]]) -> bool:
    state: dict[str, int] = {}
    for start in edges:
        if start in state:
            continue
        stack = [(start, iter(edges[start]))]
        state[start] = 1
        while stack:
            node, rest = stack[-1]
            nxt = next(rest, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return True
            elif nxt not in state and nxt in edges:
                state[nxt] = 1
                stack.append((nxt, iter(edges[nxt])))
    return False


def signature(verdict: Mapping[str, Any]) -> str:
    """What makes two cross-check verdicts the same finding."""
    acts = ",".join(sorted(verdict.get("activities", [])))
    return f"{verdict.get('verifier')}|{acts}|{'; '.join(verdict.get('reasons', []))}"


def cross_title(bad: Sequence[Mapping[str, Any]]) -> str:
    """An inbox title that says what the cross-check found."""
    first = bad[0]
    reason = (first.get("reasons") or [f"the {first.get('verifier')} check failed"])[0]
    if first.get("verifier") == "figures":  # the figures themselves are in the item
        reason = reason.partition(": ")[0]
    more = f" (and {len(bad) - 1} more finding(s))" if len(bad) > 1 else ""
    return f"Cross-check {first.get('verifier')}: {reason}"[: 280 - len(more)] + more


class CrossGate:
    """The cross-checks of one plan's execution (see the module docstring)."""

    def __init__(self, pipe: Pipeline, plan: Plan) -> None:
        self.pipe, self.plan = pipe, plan
        self.facts = plan_facts(plan)
        shape = gate_plan(plan, self.facts)
        self.owns, self.waits = shape.owns, shape.waits
        ids = [a.id for a in plan.activities]
        self.settled = {i: asyncio.Event() for i in ids}
        self.checked = {i: asyncio.Event() for i in ids}
        self.changed = {i: asyncio.Event() for i in ids}
        self.reruns: dict[str, str] = {}
        self.released: set[str] = set()

    def finish(self, act_id: str) -> None:
        """``act_id``'s branch ended: nothing may wait on it any more."""
        self.released.add(act_id)
        for events in (self.settled, self.checked):
            events[act_id].set()
        for waiter in self.owns.get(act_id, []):
            self.changed[waiter].set()

    async def release(self, act: PlanActivity) -> None:
        """Hold ``act``'s output until the checks of its pairs passed or were settled;
        re-run it when a check's decision asks for that."""
        while True:
            self.settled[act.id].set()
            feedback = await self._own_checks(act)
            if feedback is None:
                self.checked[act.id].set()
                for peer in self.owns.get(act.id, []):
                    self.changed[peer].set()
                feedback = await self._others_checks(act.id)
                if feedback is None:
                    return
            self.settled[act.id].clear()
            await self.pipe.rerun(act, feedback)

    async def _others_checks(self, act_id: str) -> str | None:
        """Wait for the owners that check ``act_id``; feedback if one asks for a re-run."""
        owners = self.waits.get(act_id, [])
        while True:
            if act_id in self.reruns:
                return self.reruns.pop(act_id)
            if all(self.checked[o].is_set() for o in owners):
                return None
            self.changed[act_id].clear()
            await self.changed[act_id].wait()

    async def _own_checks(self, act: PlanActivity) -> str | None:
        """Check ``act`` against the peers it owns; feedback when it must run again."""
        peers = self.owns.get(act.id, [])
        pipe = self.pipe
        while peers:
            for peer in peers:
                await self.settled[peer].wait()
            works = pipe.works
            if pipe.replan is not None or works[act.id].status != "accepted":
                return None
            outputs = {act.id: works[act.id].output} | {
                p: works[p].output for p in peers if works[p].status == "accepted"
            }
            if len(outputs) < 2:
                return None
            facts = {i: self.facts.get(i, []) for i in outputs}
            verdicts = await pipe.ctx.run("taskloom.cross_check", outputs, facts, True)
            bad = [
                v
                for v in verdicts
                if v["status"] in ("fail", "uncertain")
                and act.id in v.get("activities", [])
                and signature(v) not in pipe.settled_findings
            ]
            if not bad:
                return None
            open_ = [act.id, *(p for p in peers if p not in self.released)]
            decision = await ask_cross(pipe, bad, outputs, rerunnable=open_)
            target = await apply_cross(pipe, decision, bad)
            if target is None:
                return None
            feedback = _feedback(bad, target, decision)
            if target == act.id:
                return feedback
            self.reruns[target] = feedback  # that activity's branch runs it again
            self.settled[target].clear()
            self.changed[target].set()
        return None


def _feedback(bad: list[dict[str, Any]], target: str, decision: Decision | None) -> str:
    lines = [v.get("feedback") or "; ".join(v.get("reasons", [])) for v in bad]
    lines = [line for v, line in zip(bad, lines, strict=True) if target in v["activities"]]
    note = decision.note if decision is not None else ""
    return "\n".join([*lines, *([f"The reviewer adds: {note}"] if note else [])])


async def final_check(pipe: Pipeline, plan: Plan) -> None:
    """Every cross-activity check over the accepted outputs together, before
    integration; findings a person already settled are not asked again."""
    facts = declared_facts(plan)
    used = {d for a in plan.activities for d in a.inputs}
    while pipe.replan is None:
        works = pipe.works
        outputs = {i: w.output for i, w in works.items() if w.status == "accepted"}
        if not outputs:
            return
        found = await pipe.ctx.run("taskloom.cross_check", outputs, facts)
        bad = [
            v
            for v in found
            if v["status"] in ("fail", "uncertain") and signature(v) not in pipe.settled_findings
        ]
        if not bad:
            return
        free = [i for v in bad for i in v.get("activities", []) if i not in used]
        decision = await ask_cross(pipe, bad, outputs, rerunnable=free)
        target = await apply_cross(pipe, decision, bad)
        if target is None:
            return
        note = decision.note if decision is not None else ""
        feedback = "\n".join(
            [v.get("feedback") or "; ".join(v["reasons"]) for v in bad]
            + ([f"The reviewer adds: {note}"] if note else [])
        )
        await pipe.rerun(plan.activity(target), feedback)


async def ask_cross(
    pipe: Pipeline, bad: list[dict[str, Any]], outputs: Mapping[str, Any], *, rerunnable: list[str]
) -> Decision | None:
    """Ask a person about cross-check findings, with both sides' context."""
    implicated = sorted({i for v in bad for i in v.get("activities", [])})
    pipe.emit("cross_check", verdicts=bad, activities=implicated)
    reruns = [f"rerun:{i}" for i in dict.fromkeys(rerunnable) if i in implicated]
    decisions = ("approve", *reruns, "reject", *(("replan",) if pipe.can_replan() else ()))
    plan = pipe.plan
    specs = {
        i: plan.activity(i).model_dump(mode="json", by_alias=True)
        for i in implicated
        if plan is not None and any(a.id == i for a in plan.activities)
    }
    reasons = [r for v in bad for r in v.get("reasons", [])]
    about = Escalation(
        activities=tuple(implicated),
        roles=tuple(sorted({s["role"] for s in specs.values()})),
        verifiers=tuple(sorted({v["verifier"] for v in bad})),
        severity="fail" if any(v["status"] == "fail" for v in bad) else "uncertain",
    )
    return await pipe.ask(
        cross_title(bad),
        {
            "goal": pipe.req.goal,
            "reason": "; ".join(reasons),
            "why": "the accepted outputs were checked against each other before "
            "anything used them, and do not agree",
            "activities": specs,
            "outputs": {i: outputs.get(i) for i in implicated},
            "verdicts": bad,
            "history": {i: pipe.histories.get(i, []) for i in implicated},
            "decisions_help": {
                "approve": "keep every output as it is",
                **{r: f"keep the others, run {r[6:]!r} again" for r in reruns},
                "reject": "reject the implicated outputs",
                **({"replan": "plan the run again, with your note"} if pipe.can_replan() else {}),
            },
        },
        decisions,
        about,
    )


async def apply_cross(
    pipe: Pipeline, decision: Decision | None, bad: list[dict[str, Any]]
) -> str | None:
    """Apply a decision on cross-check findings: the activity to run again, if any."""
    if decision is None or decision.decision == "approve":
        pipe.settled_findings |= {signature(v) for v in bad}
        return None
    if decision.decision.startswith("rerun:"):
        return decision.decision.removeprefix("rerun:")
    if decision.decision == "replan":
        await pipe.ask_replan(
            decision.note
            or "the outputs contradict each other: "
            + "; ".join(r for v in bad for r in v.get("reasons", []))
        )
        return None
    for i in sorted({i for v in bad for i in v.get("activities", [])}):
        if i in pipe.works:
            pipe.works[i].status = "rejected"
            pipe.works[i].decided_by = decision.by
    return None
