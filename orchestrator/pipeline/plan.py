"""The plan: a versioned DAG of subagent activities, validated before anything runs.

A planner (an LLM) proposes a :class:`Plan`; :func:`validate_plan` checks it against
the run's roles, limits and budget and lists every problem in words the planner can act
on (they go back to it as feedback). A re-plan produces a new version;
:func:`diff_plans` says which activities keep their spec (and so their finished work),
which are new, and which were dropped::

    plan = Plan.model_validate(planner_output)
    validate_plan(plan, roles=roles, limits=PlanLimits(max_usd=2.0),
                  verifiers={"house_style"})                          # PlanError
    diff = diff_plans(old, plan)
    diff.reused     # {new id: old id} whose spec (and upstream specs) did not change
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.json_schema import SkipJsonSchema

from taskloom.agents.agent import Agent
from taskloom.agents.errors import PriceTableError, validation_problems
from taskloom.agents.pricing import PriceTable
from taskloom.errors import PlanError
from taskloom.pipeline.routing import Route, route_problems
from taskloom.verifiers import VerifySpec

__all__ = [
    "Plan",
    "PlanActivity",
    "PlanDiff",
    "PlanLimits",
    "RoleInfo",
    "diff_plans",
    "estimate_usd",
    "levels",
    "parse_plan",
    "plan_id",
    "size_problem",
    "spec_keys",
    "starter_plan",
    "validate_plan",
]

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_NOT_ID = re.compile(r"[^A-Za-z0-9_.-]+")


def plan_id(text: str) -> str:
    """``text`` as an activity id: runs of other characters become ``-``, leading
    punctuation goes, at most 64 characters (``"item 1a2b3c"`` -> ``"item-1a2b3c"``).

    Planners write ids as they like ("Step #2", "item 1a2b3c"); refusing them cost a
    re-plan each time, so a plan's ids and the inputs naming them are normalised alike
    and only what no normalising can fix (an empty id, two the same) is refused."""
    slug = _NOT_ID.sub("-", text.strip()).lstrip("-_.")
    return slug[:64].rstrip("-") or text


class PlanActivity(BaseModel):
    """One subagent activity of a plan."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ID_PATTERN, description="unique within the plan, e.g. 'pricing'")
    role: str = Field(description="one of the available roles")
    instructions: str = Field(min_length=1, description="what this subagent must do")
    inputs: list[str] = Field(
        default_factory=list, description="ids of the activities whose outputs it needs"
    )
    tools: list[str] = Field(
        default_factory=list, description="tools it may use (a subset of its role's tools)"
    )
    verify: VerifySpec = Field(default_factory=VerifySpec, description="how to check its output")
    model: str | None = Field(default=None, description="a model other than the role's")
    max_usd: float | None = Field(
        default=None, gt=0, description="the most its attempts may cost before a person decides"
    )
    split: bool = Field(
        default=False, description="the piece may be too big: its subagent may ask for a sub-plan"
    )
    facts: list[str] = Field(
        default_factory=list,
        description=(
            "the quantities whose figures the output states (e.g. 'revenue 2024'); "
            "activities stating the same one are checked against each other before "
            "anything uses them"
        ),
    )

    @field_validator("id", mode="before")
    @classmethod
    def _normal_id(cls, value: Any) -> Any:
        return plan_id(value) if isinstance(value, str) else value

    @field_validator("inputs", mode="before")
    @classmethod
    def _normal_inputs(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return [plan_id(v) if isinstance(v, str) else v for v in value]


class Plan(BaseModel):
    """A DAG of activities, an instruction for integrating their outputs, and checks."""

    model_config = ConfigDict(extra="forbid")

    activities: list[PlanActivity] = Field(min_length=1)
    integrate: str = Field(
        default="Combine the outputs into one complete answer to the goal.",
        description="how the integrator should combine the accepted outputs",
    )
    final: VerifySpec = Field(
        default_factory=VerifySpec, description="checks on the integrated answer"
    )
    rationale: str = Field(default="", description="why the work is split this way")
    routes: SkipJsonSchema[list[Route]] = Field(
        default_factory=list,
        description="who decides escalations, by activity, role, verifier or severity",
    )
    """Set by whoever gives the plan (not shown to the planner: the submit's and the
    template's routes are the usual place)."""
    version: int = Field(default=1, ge=1, description="set by the runtime, not the planner")

    def activity(self, activity_id: str) -> PlanActivity:
        """The activity ``activity_id``."""
        for act in self.activities:
            if act.id == activity_id:
                return act
        raise KeyError(activity_id)


@dataclass(frozen=True, kw_only=True)
class RoleInfo:
    """What a plan may know of a role: its agent's name, description, tools, output."""

    name: str
    description: str
    tools: tuple[str, ...] = ()
    output: str = "text"
    """``text``, or the name of the pydantic model its answers validate against."""
    model: str | None = None
    max_tokens: int = 1024
    fields: tuple[str, ...] | None = None
    """The top-level fields of a typed output (names and aliases); ``None``: not known,
    or the model takes extra fields (rules on any field may pass)."""

    @classmethod
    def of(cls, agent: Agent) -> RoleInfo:
        """The role an :class:`~taskloom.agents.agent.Agent` plays."""
        return cls(
            name=agent.name,
            description=agent.role,
            tools=tuple(t.name for t in agent.tools),
            output=agent.output.__name__ if agent.output is not None else "text",
            model=agent.model,
            max_tokens=agent.max_tokens,
            fields=_fields(agent.output) if agent.output is not None else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """For the planner's prompt."""
        info: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "tools": list(self.tools),
            "output": self.output,
        }
        if self.output != "text" and self.fields is not None:
            info["fields"] = list(self.fields)
        return info


def _fields(model: type[BaseModel]) -> tuple[str, ...] | None:
    """The top-level field names (and aliases) of ``model``; ``None`` if it allows extra."""
    if model.model_config.get("extra") == "allow":
        return None
    names: list[str] = []
    for name, info in model.model_fields.items():
        names.append(name)
        if info.alias and info.alias != name:
            names.append(info.alias)
    return tuple(names)


@dataclass(frozen=True, kw_only=True)
class PlanLimits:
    """How big a plan may be, and what it may cost."""

    max_activities: int = 100
    max_width: int = 64
    """Activities that may be ready at once (at one depth of the DAG)."""
    max_depth: int = 10
    """The longest chain of dependencies."""
    max_usd: float | None = None
    """The run's USD budget; a plan estimated over it is refused."""
    default_model: str | None = None
    """The model of roles that name none (for the cost estimate)."""


def starter_plan(goal: str, roles: Mapping[str, RoleInfo]) -> dict[str, Any]:
    """A one-activity plan for ``goal`` as planner JSON, for a person to edit when the
    planner produced no plan at all (so the edit form is not empty): the goal given
    to the first role that is not the planner's or the integrator's."""
    role = next((r for r in roles if r not in ("planner", "integrator")), next(iter(roles), ""))
    return {
        "rationale": "a starting point: the planner produced no plan; split it as needed",
        "activities": [{"id": "work", "role": role, "instructions": goal, "inputs": []}],
    }


def parse_plan(data: Any) -> Plan:
    """A :class:`Plan` from planner output; a :class:`PlanError` listing what is wrong."""
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc, whole="plan")
        raise PlanError(_summary(problems), problems=problems) from None


def validate_plan(
    plan: Plan,
    *,
    roles: Mapping[str, RoleInfo],
    limits: PlanLimits = PlanLimits(),
    prices: PriceTable | None = None,
    verifiers: Collection[str] = (),
    final_output: str | None = "text",
) -> None:
    """Check ``plan`` can run; raise :class:`PlanError` listing every problem found.

    ``verifiers`` are the custom verifiers the workers have (a ``verify.custom`` naming
    another is refused); ``final_output`` is what the integrated answer is (``text`` for
    the integrator's; ``None`` when unknown, e.g. a reducer's), so that a final check
    that can never pass on it is refused too."""
    problems: list[str] = []
    ids = [a.id for a in plan.activities]
    for dup in sorted(i for i, n in Counter(ids).items() if n > 1):
        problems.append(f"activity id {dup!r} is used twice; ids must be unique")
    known = set(ids)
    for act in plan.activities:
        problems.extend(_activity_problems(act, known, roles))
        role = roles.get(act.role)
        if role is not None:
            problems.extend(
                _verify_problems(
                    act.verify,
                    f"activity {act.id!r}",
                    output=role.output,
                    fields=role.fields,
                    whose=f"role {role.name!r}",
                    verifiers=verifiers,
                )
            )
    problems.extend(
        _verify_problems(
            plan.final,
            "the final check",
            output=final_output,
            fields=None,
            whose="the integrator",
            verifiers=verifiers,
        )
    )
    problems.extend(route_problems(plan.routes, activities=known, roles=set(roles)))
    too_big = size_problem(len(plan.activities), limits.max_activities)
    if too_big:
        problems.append(too_big)
    problems.extend(_shape_problems(plan, limits, checked=not problems))
    if not problems and limits.max_usd is not None:
        problems.extend(_budget_problems(plan, roles, limits, prices))
    if problems:
        raise PlanError(_summary(problems), problems=problems)


def size_problem(count: int, limit: int, setting: str = "") -> str | None:
    """What is wrong with a plan of ``count`` activities under a limit of ``limit``
    (``None``: nothing); ``setting`` names where the limit is set, for the message."""
    if count <= limit:
        return None
    where = f" ({setting})" if setting else ""
    return (
        f"the plan has {count} activities; at most {limit} are allowed{where}: merge related pieces"
    )


def _shape_problems(plan: Plan, limits: PlanLimits, *, checked: bool) -> list[str]:
    """A cycle; else (when ids and roles are fine) depth and width over the limits."""
    cycle = _find_cycle(plan)
    if cycle:
        return [
            f"the inputs form a cycle: {' -> '.join(cycle)}; an activity cannot need "
            f"its own output, directly or through others"
        ]
    if not checked:
        return []
    problems = []
    by_id = levels(plan)
    depth = max(by_id.values()) + 1
    width = max(Counter(by_id.values()).values())
    if depth > limits.max_depth:
        problems.append(
            f"the longest chain of dependencies is {depth} activities; at most "
            f"{limits.max_depth} are allowed"
        )
    if width > limits.max_width:
        problems.append(
            f"{width} activities would run side by side; at most {limits.max_width} "
            f"are allowed: group some of them"
        )
    return problems


def _budget_problems(
    plan: Plan, roles: Mapping[str, RoleInfo], limits: PlanLimits, prices: PriceTable | None
) -> list[str]:
    try:
        usd = estimate_usd(plan, roles=roles, prices=prices, default_model=limits.default_model)
    except PriceTableError as exc:
        return [str(exc)]
    if limits.max_usd is not None and usd > limits.max_usd:
        return [
            f"the plan is estimated at ${usd:.4f}, over the budget of "
            f"${limits.max_usd:.4f}: use fewer or smaller activities"
        ]
    return []


def _summary(problems: Sequence[str]) -> str:
    lines = "\n".join(f"- {p}" for p in problems)
    return f"the plan is not valid ({len(problems)} problem(s)):\n{lines}"


def _activity_problems(
    act: PlanActivity, known: set[str], roles: Mapping[str, RoleInfo]
) -> list[str]:
    problems = []
    for dep in act.inputs:
        if dep == act.id:
            problems.append(f"activity {act.id!r} lists itself as an input")
        elif dep not in known:
            problems.append(
                f"activity {act.id!r} needs {dep!r}, which is not an activity of the plan"
            )
    role = roles.get(act.role)
    if role is None:
        problems.append(
            f"activity {act.id!r} has the unknown role {act.role!r}; the roles are: "
            f"{', '.join(sorted(roles)) or 'none'}"
        )
        return problems
    unknown_tools = [t for t in act.tools if t not in role.tools]
    if unknown_tools:
        problems.append(
            f"activity {act.id!r} asks for tools {unknown_tools} that role {role.name!r} "
            f"does not have (it has: {', '.join(role.tools) or 'none'})"
        )
    return problems


def _verify_problems(
    spec: VerifySpec,
    where: str,
    *,
    output: str | None,
    fields: tuple[str, ...] | None,
    whose: str,
    verifiers: Collection[str],
) -> list[str]:
    """Checks of ``spec`` that cannot run (a custom verifier the workers lack) or can
    never pass on an output of kind ``output`` (``text``, a model's name, ``None``:
    unknown)."""
    problems = []
    unknown = [n for n in spec.custom if n not in verifiers]
    if unknown:
        known = ", ".join(sorted(verifiers)) or "none are registered"
        problems.append(
            f"{where} names custom verifier(s) {', '.join(map(repr, unknown))} that the "
            f"workers do not have (they have: {known}); use only those, or drop them"
        )
    rules = spec.rules
    if output == "text":
        if rules is not None and rules.required:
            problems.append(
                f"{where} requires fields {rules.required} but {whose} answers in plain "
                f"text, which has no fields, so the check can never pass: drop "
                f'"rules.required" (use "rules.patterns" with the key "" to require '
                f"something in the text)"
            )
        named = sorted(f for f in (rules.patterns if rules else {}) if f)
        if named:
            problems.append(
                f"{where} sets patterns on fields {named} but {whose} answers in plain "
                f'text, which has no fields: use the key "" (the whole text) instead'
            )
        # "schema" on text is not refused: it passes (nothing to check), and a planner
        # under strict structured output writes every field, "schema": true included.
    elif output is not None and fields is not None and rules is not None:
        paths = [*rules.required, *(f for f in rules.patterns if f)]
        missing = sorted({p for p in paths if p.split(".")[0] not in fields})
        if missing:
            problems.append(
                f"{where} checks fields {missing} that {whose}'s output {output} does "
                f"not have, so the check can never pass; its fields are: "
                f"{', '.join(fields) or 'none'}"
            )
    return problems


def _order(plan: Plan) -> tuple[list[str], list[str]]:
    """The activities in dependency order (Kahn's algorithm, no recursion: plans may be
    long chains), and those left over because they sit on or behind a cycle."""
    deps = {a.id: {d for d in a.inputs if d != a.id} for a in plan.activities}
    users: dict[str, list[str]] = {i: [] for i in deps}
    waiting = {}
    for node, needs in deps.items():
        known = [d for d in needs if d in deps]
        waiting[node] = len(known)
        for dep in known:
            users[dep].append(node)
    ready = [n for n, count in waiting.items() if count == 0]
    order: list[str] = []
    while ready:
        node = ready.pop()
        order.append(node)
        for user in users[node]:
            waiting[user] -= 1
            if waiting[user] == 0:
                ready.append(user)
    placed = set(order)
    return order, [n for n in deps if n not in placed]


def _find_cycle(plan: Plan) -> list[str]:
    """One cycle of the input graph, as a path that returns to its start; [] if none."""
    _, left = _order(plan)
    if not left:
        return []
    rest = set(left)
    deps = {a.id: [d for d in a.inputs if d in rest and d != a.id] for a in plan.activities}
    path: list[str] = []
    seen: dict[str, int] = {}
    node = left[0]
    while node not in seen:  # each leftover activity waits on another leftover one
        seen[node] = len(path)
        path.append(node)
        node = deps[node][0]
    return [*path[seen[node] :], node]


def levels(plan: Plan) -> dict[str, int]:
    """Each activity's depth: 0 with no inputs, else one more than its deepest input."""
    deps = {a.id: a.inputs for a in plan.activities}
    levels: dict[str, int] = {}
    for node in _order(plan)[0]:
        levels[node] = 1 + max((levels[d] for d in deps[node]), default=-1)
    return levels


def estimate_usd(
    plan: Plan,
    *,
    roles: Mapping[str, RoleInfo],
    prices: PriceTable | None = None,
    default_model: str | None = None,
) -> float:
    """What one attempt of every activity may cost: its prompt (about four characters a
    token, plus room for its inputs) and its role's answer limit, at the model's price."""
    table = prices if prices is not None else PriceTable.builtin()
    total = 0.0
    for act in plan.activities:
        role = roles[act.role]
        model = act.model or role.model or default_model
        if model is None:
            continue  # nothing to price it by; the call itself will say so
        prompt = (len(act.instructions) + 2000) // 4 + 400 * len(act.inputs)
        total += float(table.cost(model, prompt, role.max_tokens))
    return total


def spec_keys(plan: Plan) -> dict[str, str]:
    """A key per activity that changes when its spec, or any upstream spec, changes.

    Two activities of two plan versions with the same key would do the same work on the
    same inputs: a re-plan reuses the finished one instead of paying for it again.
    """
    keys: dict[str, str] = {}
    by_id = {a.id: a for a in plan.activities}
    for activity_id in _order(plan)[0]:
        act = by_id[activity_id]
        spec = act.model_dump(mode="json", exclude={"id", "inputs"}, by_alias=True)
        spec["inputs"] = sorted(keys[d] for d in act.inputs)
        if not spec.get("facts"):
            spec.pop("facts", None)  # keys of plans made before facts existed stay the same
        text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
        keys[activity_id] = hashlib.sha256(text.encode()).hexdigest()[:24]
    return {a.id: keys[a.id] for a in plan.activities if a.id in keys}


@dataclass(frozen=True)
class PlanDiff:
    """What changed from one plan version to the next."""

    reused: dict[str, str] = field(default_factory=dict)
    """New activity id -> old activity id with the same spec key."""
    added: list[str] = field(default_factory=list)
    """New activities with no counterpart in the old plan."""
    dropped: list[str] = field(default_factory=list)
    """Old activities the new plan no longer has (by spec)."""


def diff_plans(old: Plan, new: Plan) -> PlanDiff:
    """Match the activities of ``new`` to those of ``old`` by spec key."""
    old_keys, new_keys = spec_keys(old), spec_keys(new)
    by_key: dict[str, list[str]] = {}
    for old_id, key in old_keys.items():
        by_key.setdefault(key, []).append(old_id)
    reused = {}
    for new_id, key in new_keys.items():
        if by_key.get(key):  # twins with one spec each keep a counterpart of their own
            reused[new_id] = by_key[key].pop(0)
    kept = set(reused.values())
    return PlanDiff(
        reused=reused,
        added=[i for i in new_keys if i not in reused],
        dropped=[i for i in old_keys if i not in kept],
    )
