"""Plans (taskloom.pipeline.plan), roles (taskloom.pipeline.roles) and workflow templates
(taskloom.pipeline.templates): parsing, validation, cost estimates, spec keys and diffs.

No Redis and no network: everything here is pure computation over plans and agents.
"""

from __future__ import annotations

import itertools
import re
import time
from typing import Any

import pytest
from pydantic import BaseModel, Field

from taskloom.agents.agent import Agent
from taskloom.agents.errors import PriceTableError
from taskloom.agents.pricing import PriceTable
from taskloom.agents.tools import tool
from taskloom.errors import PlanError, UserError
from taskloom.pipeline.plan import (
    Plan,
    PlanActivity,
    PlanLimits,
    RoleInfo,
    diff_plans,
    estimate_usd,
    parse_plan,
    spec_keys,
    validate_plan,
)
from taskloom.pipeline.roles import BUILTIN_ROLES, INTEGRATOR, PLANNER, catalog
from taskloom.pipeline.templates import BUILTIN_TEMPLATES, Template, get_template, template_names
from taskloom.verifiers import VerifySpec

PRICED = "openai:gpt-4.1-mini"
UNPRICED = "openai:no-such-model-anywhere"


# -- factories ------------------------------------------------------------------------


def act(
    activity_id: str,
    *inputs: str,
    role: str = "writer",
    instructions: str | None = None,
    **fields: Any,
) -> PlanActivity:
    """An activity ``activity_id`` needing ``inputs``."""
    return PlanActivity(
        id=activity_id,
        role=role,
        instructions=instructions or f"Write the part called {activity_id}.",
        inputs=list(inputs),
        **fields,
    )


def plan(*activities: PlanActivity, **fields: Any) -> Plan:
    return Plan(activities=list(activities), **fields)


def chain(n: int, *, downstream_first: bool = False) -> Plan:
    """``n`` activities, each needing the one before it."""
    acts = [act(f"s{i}", *([f"s{i - 1}"] if i else [])) for i in range(n)]
    return plan(*(reversed(acts) if downstream_first else acts))


def independent(n: int) -> Plan:
    return plan(*(act(f"p{i}") for i in range(n)))


def roles(**models: str | None) -> dict[str, RoleInfo]:
    """A researcher (tools: search, fetch), a writer and a reviewer; ``models`` gives
    a role's model (default: the priced one)."""
    return {
        "researcher": RoleInfo(
            name="researcher",
            description="gathers facts",
            tools=("search", "fetch"),
            model=models.get("researcher", PRICED),
        ),
        "writer": RoleInfo(name="writer", description="writes", model=models.get("writer", PRICED)),
        "reviewer": RoleInfo(
            name="reviewer", description="reviews", model=models.get("reviewer", PRICED)
        ),
    }


def problems_of(p: Plan, **kwargs: Any) -> list[str]:
    kwargs.setdefault("roles", roles())
    with pytest.raises(PlanError) as info:
        validate_plan(p, **kwargs)
    assert info.value.problems, "a PlanError lists its problems"
    return info.value.problems


def parse_problems(data: Any) -> list[str]:
    with pytest.raises(PlanError) as info:
        parse_plan(data)
    return info.value.problems


# -- parse_plan -----------------------------------------------------------------------

PLANNER_OUTPUT: dict[str, Any] = {
    "rationale": "one section each, then a summary",
    "integrate": "Join the sections in order.",
    "activities": [
        {
            "id": "pricing",
            "role": "researcher",
            "instructions": "Find the prices.",
            "tools": ["search"],
            "verify": {"schema": False, "pii": "redact", "max_retries": 1},
        },
        {
            "id": "summary.v2",
            "role": "writer",
            "instructions": "Summarize.",
            "inputs": ["pricing"],
            "model": PRICED,
            "max_usd": 0.5,
            "split": True,
        },
    ],
    "final": {"judge": {"rubric": "complete", "threshold": 0.9}},
}


def test_parse_plan_builds_the_plan_from_planner_json() -> None:
    p = parse_plan(PLANNER_OUTPUT)
    assert isinstance(p, Plan)
    assert [a.id for a in p.activities] == ["pricing", "summary.v2"]
    assert p.rationale == "one section each, then a summary"
    assert p.integrate == "Join the sections in order."
    assert p.version == 1
    pricing, summary = p.activity("pricing"), p.activity("summary.v2")
    assert pricing.tools == ["search"] and pricing.inputs == [] and pricing.split is False
    assert pricing.verify.schema_check is False  # the JSON key "schema" is the alias
    assert pricing.verify.pii == "redact" and pricing.verify.max_retries == 1
    assert summary.inputs == ["pricing"] and summary.model == PRICED
    assert summary.max_usd == 0.5 and summary.split is True
    assert summary.verify == VerifySpec() and summary.verify.schema_check is True
    assert p.final.judge is not None and p.final.judge.threshold == 0.9
    with pytest.raises(KeyError):
        p.activity("nope")


def test_planner_ids_are_normalised_not_refused() -> None:
    """Issue 16: a provider that wrote ids like "item 1a2b3c" cost 24 planner calls and
    an escalation; the ids and the inputs naming them are now normalised alike."""
    data = {
        "activities": [
            {"id": "item 1a2b3c", "role": "researcher", "instructions": "find"},
            {
                "id": "  #Step 2: write!",
                "role": "writer",
                "instructions": "write",
                "inputs": ["item 1a2b3c"],
            },
            {
                "id": "x" * 80 + " y",
                "role": "writer",
                "instructions": "long",
                "inputs": ["#Step 2: write!"],
            },
        ]
    }
    p = parse_plan(data)
    assert [a.id for a in p.activities] == ["item-1a2b3c", "Step-2-write", "x" * 64]
    assert p.activities[1].inputs == ["item-1a2b3c"]
    assert p.activities[2].inputs == ["Step-2-write"]
    validate_plan(p, roles=roles())  # a plan that runs as it is
    # what no normalising can fix is still refused, saying why
    twice = {"activities": [{**data["activities"][0], "id": i} for i in ("a b", "a-b")]}
    assert any("used twice" in m for m in problems_of(parse_plan(twice)))
    assert parse_problems({"activities": [{**data["activities"][0], "id": "!!!"}]})


def test_a_plan_round_trips_through_its_json_form() -> None:
    p = parse_plan(PLANNER_OUTPUT)
    data = p.model_dump(mode="json", by_alias=True)
    assert data["activities"][0]["verify"]["schema"] is False
    assert "schema_check" not in data["activities"][0]["verify"]
    assert parse_plan(data) == p


@pytest.mark.parametrize(
    ("data", "path", "words"),
    [
        ({}, "activities", "Field required"),
        ({"activities": []}, "activities", "at least 1"),
        (
            {"activities": [{"id": "a", "role": "writer", "instructions": "x"}], "owner": 1},
            "owner",
            "Extra inputs",
        ),
        (
            {"activities": [{"id": "a", "role": "writer", "instructions": "x", "owner": 1}]},
            "activities.0.owner",
            "Extra inputs",
        ),
        (
            {"activities": [{"id": "!!!", "role": "writer", "instructions": "x"}]},
            "activities.0.id",
            "pattern",
        ),
        (
            {"activities": [{"id": "", "role": "writer", "instructions": "x"}]},
            "activities.0.id",
            "pattern",
        ),
        (
            {"activities": [{"id": 7, "role": "writer", "instructions": "x"}]},
            "activities.0.id",
            "string",
        ),
        (
            {"activities": [{"id": "a", "role": "writer", "instructions": ""}]},
            "activities.0.instructions",
            "at least 1",
        ),
        ({"activities": [{"id": "a", "instructions": "x"}]}, "activities.0.role", "required"),
        (
            {"activities": [{"id": "a", "role": "w", "instructions": "x", "max_usd": 0}]},
            "activities.0.max_usd",
            "greater than 0",
        ),
        (
            {
                "activities": [
                    {"id": "a", "role": "w", "instructions": "x", "verify": {"pii": "shout"}}
                ]
            },
            "activities.0.verify.pii",
            "",
        ),
        (
            {
                "activities": [
                    {"id": "a", "role": "w", "instructions": "x", "verify": {"sql": True}}
                ]
            },
            "activities.0.verify.sql",
            "Extra inputs",
        ),
        ([{"id": "a"}], "plan", "dictionary"),
    ],
    ids=[
        "missing-activities",
        "empty-activities",
        "unknown-plan-field",
        "unknown-activity-field",
        "id-of-punctuation-only",
        "empty-id",
        "id-not-a-string",
        "empty-instructions",
        "missing-role",
        "zero-max-usd",
        "bad-pii-policy",
        "unknown-verify-field",
        "not-an-object",
    ],
)
def test_malformed_plans_name_the_field(data: Any, path: str, words: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_plan(data)
    problems = info.value.problems
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}: "), problems
    assert words in problems[0]
    assert isinstance(info.value, UserError)
    assert problems[0] in str(info.value)


def test_every_field_problem_is_reported_at_once() -> None:
    problems = parse_problems(
        {
            "activities": [
                {"id": "ok", "role": "writer", "instructions": "x"},
                {"id": "!!!", "role": "writer", "instructions": ""},
            ],
            "version": 0,
        }
    )
    assert {p.split(":")[0] for p in problems} == {
        "activities.1.id",
        "activities.1.instructions",
        "version",
    }


# -- validate_plan: one problem at a time ---------------------------------------------


def test_a_sound_plan_is_valid() -> None:
    p = plan(
        act("facts", role="researcher", tools=["search"]),
        act("more", role="researcher", tools=["search", "fetch"]),
        act("draft", "facts", "more"),
        act("review", "draft", role="reviewer"),
    )
    validate_plan(p, roles=roles(), limits=PlanLimits(max_usd=1.0))  # raises nothing


def test_duplicate_ids_are_named_once() -> None:
    p = plan(act("a"), act("a"), act("a"), act("b"))
    assert problems_of(p) == ["activity id 'a' is used twice; ids must be unique"]


def test_an_input_that_is_not_an_activity() -> None:
    p = plan(act("a"), act("b", "a", "ghost"))
    assert problems_of(p) == ["activity 'b' needs 'ghost', which is not an activity of the plan"]


def test_an_activity_that_needs_itself() -> None:
    p = plan(act("a", "a"), act("b", "a"))
    assert problems_of(p) == ["activity 'a' lists itself as an input"]


def test_a_cycle_is_shown_as_its_path() -> None:
    p = plan(act("a", "c"), act("b", "a"), act("c", "b"), act("free"))
    (problem,) = problems_of(p)
    assert "cycle" in problem and "free" not in problem
    path = re.search(r"cycle: ([\w.\- >]+);", problem)
    assert path is not None, problem
    nodes = path.group(1).split(" -> ")
    assert len(nodes) == 4 and nodes[0] == nodes[-1]
    assert set(nodes) == {"a", "b", "c"}
    for here, there in itertools.pairwise(nodes):
        assert there in p.activity(here).inputs, f"{here} does not need {there}"


def test_a_two_node_cycle_and_a_self_input_are_both_reported() -> None:
    p = plan(act("x", "x", "y"), act("y", "x"))
    problems = problems_of(p)
    assert "activity 'x' lists itself as an input" in problems
    cycle = [q for q in problems if "cycle" in q]
    assert len(cycle) == 1 and ("x -> y -> x" in cycle[0] or "y -> x -> y" in cycle[0])


def test_an_unknown_role_lists_the_known_ones() -> None:
    p = plan(act("a", role="poet"))
    assert problems_of(p) == [
        "activity 'a' has the unknown role 'poet'; the roles are: researcher, reviewer, writer"
    ]
    (none,) = problems_of(p, roles={})
    assert none.endswith("the roles are: none")


def test_tools_the_role_does_not_have() -> None:
    p = plan(act("a", role="researcher", tools=["search", "shell"]), act("b", tools=["search"]))
    assert problems_of(p) == [
        "activity 'a' asks for tools ['shell'] that role 'researcher' does not have "
        "(it has: search, fetch)",
        "activity 'b' asks for tools ['search'] that role 'writer' does not have (it has: none)",
    ]


def test_more_activities_than_allowed() -> None:
    assert problems_of(independent(5), limits=PlanLimits(max_activities=4)) == [
        "the plan has 5 activities; at most 4 are allowed: merge related pieces"
    ]
    validate_plan(independent(4), roles=roles(), limits=PlanLimits(max_activities=4))


def test_too_many_activities_side_by_side() -> None:
    limits = PlanLimits(max_width=4)
    assert problems_of(independent(5), limits=limits) == [
        "5 activities would run side by side; at most 4 are allowed: group some of them"
    ]
    validate_plan(independent(4), roles=roles(), limits=limits)
    # width is per depth: one root then four in parallel is fine, five is not
    fan = [act("root"), *(act(f"leaf{i}", "root") for i in range(4))]
    validate_plan(plan(*fan), roles=roles(), limits=limits)
    (problem,) = problems_of(plan(*fan, act("leaf4", "root")), limits=limits)
    assert problem.startswith("5 activities would run side by side")


def test_a_chain_deeper_than_allowed() -> None:
    limits = PlanLimits(max_depth=3)
    assert problems_of(chain(4), limits=limits) == [
        "the longest chain of dependencies is 4 activities; at most 3 are allowed"
    ]
    validate_plan(chain(3), roles=roles(), limits=limits)
    # depth is the longest path, not the number of inputs: a diamond is 3 deep
    diamond = plan(act("a"), act("b", "a"), act("c", "a"), act("d", "b", "c"))
    validate_plan(diamond, roles=roles(), limits=limits)
    assert problems_of(diamond, limits=PlanLimits(max_depth=2))[0].startswith(
        "the longest chain of dependencies is 3 activities"
    )


def test_depth_and_width_are_both_reported() -> None:
    p = plan(*(act(f"p{i}") for i in range(3)), act("d1", "p0"), act("d2", "d1"))
    problems = problems_of(p, limits=PlanLimits(max_width=2, max_depth=2))
    assert len(problems) == 2
    assert problems[0].startswith("the longest chain of dependencies is 3 activities")
    assert problems[1].startswith("3 activities would run side by side")


def test_a_plan_over_the_budget() -> None:
    p = independent(3)
    usd = estimate_usd(p, roles=roles())
    assert usd > 0
    validate_plan(p, roles=roles(), limits=PlanLimits(max_usd=usd))  # at the budget: fine
    (problem,) = problems_of(p, limits=PlanLimits(max_usd=usd / 2))
    assert problem == (
        f"the plan is estimated at ${usd:.4f}, over the budget of ${usd / 2:.4f}: "
        "use fewer or smaller activities"
    )


def test_the_budget_uses_the_default_model_and_an_activitys_own_model() -> None:
    unset = roles(writer=None)
    p = independent(2)
    tiny = PlanLimits(max_usd=1e-9)
    validate_plan(p, roles=unset, limits=tiny)  # no model to price: not counted here
    (problem,) = problems_of(p, roles=unset, limits=PlanLimits(max_usd=1e-9, default_model=PRICED))
    assert "over the budget" in problem
    own = plan(act("a", model=PRICED))
    assert "over the budget" in problems_of(own, roles=unset, limits=tiny)[0]


@pytest.mark.parametrize("where", ["role", "activity", "default"])
def test_an_unpriced_model_with_a_budget_is_a_clear_problem(where: str) -> None:
    if where == "role":
        p, r, limits = independent(1), roles(writer=UNPRICED), PlanLimits(max_usd=5.0)
    elif where == "activity":
        p, r, limits = plan(act("a", model=UNPRICED)), roles(), PlanLimits(max_usd=5.0)
    else:
        p, r = independent(1), roles(writer=None)
        limits = PlanLimits(max_usd=5.0, default_model=UNPRICED)
    (problem,) = problems_of(p, roles=r, limits=limits)
    assert f"no price for model {UNPRICED!r}" in problem
    assert "with_overrides" in problem  # how to add a price
    # without a budget, the model's price does not matter to validation
    validate_plan(p, roles=r, limits=PlanLimits(default_model=limits.default_model))


def test_a_custom_price_table_is_used_for_the_budget() -> None:
    p = plan(act("a", model=UNPRICED))
    table = PriceTable.builtin().with_overrides({UNPRICED: {"input": 1000, "output": 1000}})
    (problem,) = problems_of(p, limits=PlanLimits(max_usd=0.5), prices=table)
    assert "over the budget of $0.5000" in problem


# -- validate_plan: every problem at once ---------------------------------------------


def test_every_problem_is_reported_at_once() -> None:
    p = plan(
        act("a"),
        act("a"),
        act("b", "ghost"),
        act("c", "c"),
        act("d", role="poet"),
        act("e", role="researcher", tools=["shell"]),
    )
    with pytest.raises(PlanError) as info:
        validate_plan(p, roles=roles(), limits=PlanLimits(max_activities=5))
    problems = info.value.problems
    expected = [
        "activity id 'a' is used twice",
        "activity 'b' needs 'ghost'",
        "activity 'c' lists itself as an input",
        "activity 'd' has the unknown role 'poet'",
        "activity 'e' asks for tools ['shell']",
        "the plan has 6 activities; at most 5",
    ]
    assert len(problems) == len(expected)
    for start, problem in zip(expected, problems, strict=True):
        assert problem.startswith(start), problem
    message = str(info.value)
    assert message.startswith(f"the plan is not valid ({len(expected)} problem(s)):")
    for problem in problems:
        assert f"\n- {problem}" in message


def test_a_cycle_is_reported_alongside_other_problems() -> None:
    p = plan(act("a", "b"), act("b", "a"), act("c", role="poet"))
    problems = problems_of(p)
    assert len(problems) == 2
    assert problems[0].startswith("activity 'c' has the unknown role")
    assert "cycle" in problems[1]


def test_ten_thousand_activities_are_refused_by_the_count_quickly() -> None:
    p = independent(10_000)
    started = time.perf_counter()
    problems = problems_of(p)
    assert time.perf_counter() - started < 2.0
    assert problems == [
        "the plan has 10000 activities; at most 100 are allowed: merge related pieces"
    ]


def test_a_long_chain_listed_upstream_first_validates() -> None:
    limits = PlanLimits(max_activities=5_000, max_depth=5_000)
    validate_plan(chain(2_000), roles=roles(), limits=limits)
    assert problems_of(chain(2_000), limits=PlanLimits(max_activities=5_000))[0].startswith(
        "the longest chain of dependencies is 2000 activities"
    )


def test_a_long_chain_listed_downstream_first_validates() -> None:
    limits = PlanLimits(max_activities=5_000, max_depth=5_000)
    validate_plan(chain(2_000, downstream_first=True), roles=roles(), limits=limits)


def test_a_deep_chain_listed_downstream_first_is_refused_by_the_depth() -> None:
    problems = problems_of(chain(500, downstream_first=True), limits=PlanLimits(max_activities=500))
    assert problems == [
        "the longest chain of dependencies is 500 activities; at most 10 are allowed"
    ]


def test_an_oversized_chain_is_refused_by_the_count() -> None:
    problems = problems_of(chain(10_000, downstream_first=True))
    assert problems[0].startswith("the plan has 10000 activities; at most 100")


# -- RoleInfo -------------------------------------------------------------------------


class Finding(BaseModel):
    claim: str
    source: str


@tool
def search(query: str) -> str:
    """Search the web."""
    return query


@tool(name="fetch_page")
def fetch(url: str) -> str:
    """Fetch a page."""
    return url


def test_role_info_of_a_text_agent() -> None:
    agent = Agent(name="writer", role="a concise writer", model=PRICED, max_tokens=300)
    info = RoleInfo.of(agent)
    assert info == RoleInfo(
        name="writer",
        description="a concise writer",
        tools=(),
        output="text",
        model=PRICED,
        max_tokens=300,
    )
    assert info.to_dict() == {
        "name": "writer",
        "description": "a concise writer",
        "tools": [],
        "output": "text",
    }


def test_role_info_of_a_structured_agent_with_tools() -> None:
    agent = Agent(name="scout", role="finds facts", tools=(search, fetch), output=Finding)
    info = RoleInfo.of(agent)
    assert info.output == "Finding"
    assert info.tools == ("search", "fetch_page")
    assert info.model is None and info.max_tokens == 1024
    assert info.to_dict()["tools"] == ["search", "fetch_page"]
    assert info.to_dict()["output"] == "Finding"


def test_role_info_of_a_structured_agent_lists_its_fields_for_the_planner() -> None:
    class Aliased(BaseModel):
        total_usd: float = Field(alias="totalUSD")

    info = RoleInfo.of(Agent(name="scout", role="finds facts", output=Finding))
    assert info.fields == ("claim", "source")
    assert info.to_dict()["fields"] == ["claim", "source"]
    assert RoleInfo.of(Agent(name="a", role="r", output=Aliased)).fields == (
        "total_usd",
        "totalUSD",
    )
    assert RoleInfo.of(Agent(name="w", role="writes")).fields is None


# -- checks a plan may ask for --------------------------------------------------------


def typed_roles() -> dict[str, RoleInfo]:
    """The text roles of :func:`roles`, and a ``scout`` answering a ``Finding``."""
    return roles() | {"scout": RoleInfo.of(Agent(name="scout", role="finds", output=Finding))}


def test_a_custom_verifier_the_workers_lack_is_refused_with_the_ones_they_have() -> None:
    p = plan(
        act("a", verify={"custom": ["house_style", "fact_check"]}),
        act("b", verify={"custom": ["house_style"]}),
        final={"custom": ["tone"]},
    )
    problems = problems_of(p, verifiers={"house_style": "matches the style guide"})
    assert problems == [
        "activity 'a' names custom verifier(s) 'fact_check' that the workers do not have "
        "(they have: house_style); use only those, or drop them",
        "the final check names custom verifier(s) 'tone' that the workers do not have "
        "(they have: house_style); use only those, or drop them",
    ]
    assert "none are registered" in problems_of(plan(act("a", verify={"custom": ["x"]})))[0]
    validate_plan(
        plan(act("a", verify={"custom": ["house_style"]})), roles=roles(), verifiers={"house_style"}
    )  # a registered one is fine


def test_required_fields_on_a_text_role_can_never_pass_and_are_refused() -> None:
    p = plan(act("a", role="writer", verify={"rules": {"required": ["summary"]}}))
    [problem] = problems_of(p)
    assert "activity 'a' requires fields ['summary']" in problem
    assert "role 'writer' answers in plain text" in problem
    assert 'drop "rules.required"' in problem and '"rules.patterns" with the key ""' in problem


def test_field_patterns_on_a_text_role_are_refused() -> None:
    p = plan(act("a", verify={"rules": {"patterns": {"date": "\\d{4}", "": "^#"}}}))
    [problem] = problems_of(p)
    assert "activity 'a' sets patterns on fields ['date']" in problem
    assert 'use the key ""' in problem


def test_checks_that_can_pass_on_text_are_accepted() -> None:
    p = plan(
        act("a", verify={"rules": {"patterns": {"": "^#"}, "max_length": 900}, "pii": "redact"}),
        act("b", verify={"schema": False, "judge": {"rubric": "clear"}}),
        act("c", verify={"schema": True}),  # passes on text: a strict planner writes it
    )
    validate_plan(p, roles=roles())


def test_rules_on_fields_a_typed_output_lacks_are_refused() -> None:
    bad = plan(
        act(
            "f",
            role="scout",
            verify={"rules": {"required": ["claim", "url"], "patterns": {"sources.0": "x"}}},
        )
    )
    [problem] = problems_of(bad, roles=typed_roles())
    assert "activity 'f' checks fields ['sources.0', 'url']" in problem
    assert "role 'scout''s output Finding" in problem and "claim, source" in problem
    good = plan(
        act(
            "f",
            role="scout",
            verify={"schema": True, "rules": {"required": ["claim", "source.title"]}},
        )
    )
    validate_plan(good, roles=typed_roles())


def test_a_final_check_is_judged_by_what_the_integrated_answer_is() -> None:
    p = plan(act("a"), final={"rules": {"required": ["answer"]}})
    [problem] = problems_of(p)
    assert "the final check requires fields ['answer']" in problem
    assert "the integrator answers in plain text" in problem
    validate_plan(p, roles=roles(), final_output=None)  # a reducer's answer: may be JSON


# -- estimate_usd ---------------------------------------------------------------------


def test_the_estimate_is_the_prompt_and_answer_at_the_models_price() -> None:
    table = PriceTable.builtin()
    r = roles()
    one = plan(act("a", instructions="x" * 400))
    prompt_tokens = (400 + 2000) // 4
    assert estimate_usd(one, roles=r) == pytest.approx(
        float(table.cost(PRICED, prompt_tokens, 1024))
    )
    with_inputs = plan(act("a"), act("b"), act("c", "a", "b", instructions="x" * 400))
    third = estimate_usd(with_inputs, roles=r) - estimate_usd(plan(act("a"), act("b")), roles=r)
    assert third == pytest.approx(float(table.cost(PRICED, prompt_tokens + 800, 1024)))


def test_the_estimate_grows_with_activities_and_max_tokens() -> None:
    r = roles()
    one, three = estimate_usd(independent(1), roles=r), estimate_usd(independent(3), roles=r)
    assert 0 < one < three
    assert three == pytest.approx(3 * one)
    big = RoleInfo(name="writer", description="w", model=PRICED, max_tokens=8192)
    bigger = {**r, "writer": big}
    assert estimate_usd(independent(3), roles=bigger) > three
    longer = plan(*(act(f"p{i}", instructions="y" * 8000) for i in range(3)))
    assert estimate_usd(longer, roles=r) > three


def test_the_estimate_picks_the_activity_then_role_then_default_model() -> None:
    pricey = "openai:gpt-4o"
    r = roles(writer=None)
    assert estimate_usd(independent(1), roles=r) == 0.0
    cheap = estimate_usd(independent(1), roles=r, default_model=PRICED)
    assert cheap > 0
    assert estimate_usd(independent(1), roles=roles(), default_model=pricey) == cheap
    assert estimate_usd(plan(act("a", model=pricey)), roles=roles()) > cheap


def test_the_estimate_uses_the_table_it_is_given_even_when_empty() -> None:
    with pytest.raises(PriceTableError):
        estimate_usd(independent(1), roles=roles(), prices=PriceTable({}))


# -- spec_keys ------------------------------------------------------------------------


def pipeline_plan(b_instructions: str = "Write b.", **fields: Any) -> Plan:
    """a -> b -> c, and d on its own."""
    return plan(
        act("a"),
        act("b", "a", instructions=b_instructions),
        act("c", "b"),
        act("d"),
        **fields,
    )


def test_the_same_spec_has_the_same_key_in_any_plan() -> None:
    first = spec_keys(pipeline_plan())
    again = spec_keys(pipeline_plan(version=3, rationale="other", integrate="Glue them."))
    assert first == again
    assert set(first) == {"a", "b", "c", "d"}
    assert all(re.fullmatch(r"[0-9a-f]{24}", k) for k in first.values())
    assert len(set(first.values())) == 4
    reordered = plan(*reversed(pipeline_plan().activities))
    assert spec_keys(reordered) == first


def test_a_changed_spec_changes_its_key_and_everything_downstream() -> None:
    old = spec_keys(pipeline_plan())
    new = spec_keys(pipeline_plan("Write b, more briefly."))
    assert new["a"] == old["a"] and new["d"] == old["d"]
    assert new["b"] != old["b"] and new["c"] != old["c"]


def test_ids_alone_do_not_change_keys() -> None:
    old = spec_keys(pipeline_plan())
    renamed = plan(
        act("first", instructions="Write the part called a."),
        act("second", "first", instructions="Write b."),
        act("third", "second", instructions="Write the part called c."),
        act("other", instructions="Write the part called d."),
    )
    new = spec_keys(renamed)
    assert [new[i] for i in ("first", "second", "third", "other")] == [
        old[i] for i in ("a", "b", "c", "d")
    ]


@pytest.mark.parametrize(
    "change",
    [
        {"role": "reviewer"},
        {"tools": ["search"]},
        {"model": PRICED},
        {"max_usd": 0.1},
        {"split": True},
        {"verify": VerifySpec.model_validate({"schema": False})},
        {"verify": VerifySpec(pii="block")},
    ],
    ids=["role", "tools", "model", "max_usd", "split", "verify-schema", "verify-pii"],
)
def test_every_part_of_the_spec_is_in_the_key(change: dict[str, Any]) -> None:
    base = plan(act("a"), act("b", "a"))
    changed = plan(act("a", **change), act("b", "a"))
    old, new = spec_keys(base), spec_keys(changed)
    assert new["a"] != old["a"] and new["b"] != old["b"]


def test_the_order_of_inputs_does_not_change_the_key() -> None:
    one = spec_keys(plan(act("a"), act("b"), act("c", "a", "b")))
    two = spec_keys(plan(act("a"), act("b"), act("c", "b", "a")))
    assert one == two


def test_spec_keys_of_a_long_chain_listed_downstream_first() -> None:
    assert len(spec_keys(chain(2_000, downstream_first=True))) == 2_000


# -- diff_plans -----------------------------------------------------------------------


def test_an_unchanged_plan_reuses_everything() -> None:
    diff = diff_plans(pipeline_plan(), pipeline_plan(version=2))
    assert diff.reused == {"a": "a", "b": "b", "c": "c", "d": "d"}
    assert diff.added == [] and diff.dropped == []


def test_a_changed_activity_and_its_dependents_are_added_and_dropped() -> None:
    diff = diff_plans(pipeline_plan(), pipeline_plan("Write b, more briefly."))
    assert diff.reused == {"a": "a", "d": "d"}
    assert diff.added == ["b", "c"]
    assert diff.dropped == ["b", "c"]


def test_a_removed_activity_is_dropped() -> None:
    old = pipeline_plan()
    without_d = plan(*(a for a in old.activities if a.id != "d"))
    diff = diff_plans(old, without_d)
    assert diff.reused == {"a": "a", "b": "b", "c": "c"}
    assert diff.added == [] and diff.dropped == ["d"]
    # removing b and feeding c from a changes c's inputs: c is new work
    rewired = plan(act("a"), act("c", "a"), act("d"))
    diff = diff_plans(old, rewired)
    assert diff.reused == {"a": "a", "d": "d"}
    assert diff.added == ["c"] and diff.dropped == ["b", "c"]


def test_renamed_activities_map_to_their_old_ids() -> None:
    old = pipeline_plan()
    new = plan(
        act("intro", instructions="Write the part called a."),
        act("body", "intro", instructions="Write b."),
        act("extra"),
    )
    diff = diff_plans(old, new)
    assert diff.reused == {"intro": "a", "body": "b"}
    assert diff.added == ["extra"] and diff.dropped == ["c", "d"]


def test_activities_with_the_same_spec_each_keep_their_counterpart() -> None:
    tagline = "Draft a tagline."
    twins = plan(act("a", instructions=tagline), act("b", instructions=tagline))
    diff = diff_plans(twins, twins)
    assert diff.dropped == []
    assert sorted(diff.reused.values()) == ["a", "b"]


# -- roles ----------------------------------------------------------------------------


def registry() -> dict[str, Agent]:
    agents = {a.name: a for a in BUILTIN_ROLES}
    agents["scout"] = Agent(name="scout", role="finds facts", tools=(search,), output=Finding)
    agents[PLANNER.name] = PLANNER
    agents[INTEGRATOR.name] = INTEGRATOR
    return agents


def test_the_builtin_and_internal_agents() -> None:
    assert [a.name for a in BUILTIN_ROLES] == ["researcher", "analyst", "writer", "reviewer"]
    assert all(a.output is None and a.tools == () for a in BUILTIN_ROLES)
    assert PLANNER.name.startswith("taskloom.") and INTEGRATOR.name.startswith("taskloom.")
    assert PLANNER.output is Plan


def test_the_catalog_is_every_non_internal_agent() -> None:
    roles_ = catalog(registry())
    assert list(roles_) == ["analyst", "researcher", "reviewer", "scout", "writer"]
    assert roles_["scout"] == RoleInfo.of(registry()["scout"])
    assert roles_["scout"].output == "Finding" and roles_["scout"].tools == ("search",)
    assert catalog({PLANNER.name: PLANNER}) == {}


def test_the_catalog_of_named_roles() -> None:
    roles_ = catalog(registry(), ["writer", "scout"])
    assert list(roles_) == ["writer", "scout"]
    assert roles_["writer"].description == "a clear, concise writer of sections and summaries"
    assert catalog(registry(), []) == {}


@pytest.mark.parametrize("names", [["writer", "poet"], ["taskloom.planner"]])
def test_an_unknown_role_name_is_a_user_error(names: list[str]) -> None:
    with pytest.raises(UserError) as info:
        catalog(registry(), names)
    message = str(info.value)
    assert repr(names[-1]) in message
    assert "analyst, researcher, reviewer, scout, writer" in message
    assert "orch.worker(agents=" in message


def test_a_catalog_validates_plans() -> None:
    roles_ = catalog(registry())
    validate_plan(plan(act("a", role="scout", tools=["search"]), act("b", "a")), roles=roles_)
    (problem,) = problems_of(plan(act("a", role="taskloom.planner")), roles=roles_)
    assert "unknown role 'taskloom.planner'" in problem


# -- templates ------------------------------------------------------------------------

SHIPPED = ["code_review", "data_reconciliation", "onboarding_checklist", "research_report"]


def test_the_shipped_template_names() -> None:
    assert template_names() == SHIPPED
    assert sorted(t.name for t in BUILTIN_TEMPLATES) == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_template(name: str) -> None:
    template = get_template(name)
    assert template.name == name
    assert template.description and len(template.guidance) > 50
    VerifySpec.model_validate(template.verify)  # its suggested checks are a valid spec
    assert template.to_dict() == {
        "name": name,
        "description": template.description,
        "guidance": template.guidance,
        "verify": template.verify,
    }


def test_an_unknown_template_lists_the_known_ones() -> None:
    with pytest.raises(UserError) as info:
        get_template("essay")
    message = str(info.value)
    assert "'essay'" in message
    assert ", ".join(SHIPPED) in message
    assert "Template(" in message


@pytest.mark.parametrize(("name", "guidance"), [("mine", ""), ("", "Split it in two.")])
def test_a_template_needs_a_name_and_guidance(name: str, guidance: str) -> None:
    with pytest.raises(UserError, match="name and guidance"):
        Template(name=name, description="d", guidance=guidance)


def test_a_custom_template_round_trips_through_to_dict() -> None:
    template = Template(
        name="triage",
        description="sort the tickets",
        guidance="One analyst per queue.",
        verify={"rules": {"required": ["queue"]}},
    )
    assert Template(**template.to_dict()) == template
    assert Template(name="t", description="", guidance="g").to_dict()["verify"] == {}


def test_the_starter_plan_is_a_plan_that_runs() -> None:
    from taskloom.pipeline.plan import starter_plan

    plan = parse_plan(starter_plan("a note on tides", roles()))
    validate_plan(plan, roles=roles())
    assert plan.activities[0].instructions == "a note on tides"
