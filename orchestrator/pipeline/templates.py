"""Workflow templates: guidance that pre-shapes the plan of a common kind of job.

A template tells the planner how such a job is usually split, which roles do what, and
what every piece is checked for. Use one by name (``orch.submit(goal,
template="research_report")``, ``taskloom run --template research_report``) or pass
your own :class:`Template` object (``template=Template(name=..., guidance=...)``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import ValidationError

from taskloom.agents.errors import validation_problems
from taskloom.errors import UserError
from taskloom.pipeline.routing import Route

__all__ = ["BUILTIN_TEMPLATES", "Template", "get_template", "template_names"]


@dataclass(frozen=True, kw_only=True)
class Template:
    """How to plan one kind of job."""

    name: str
    description: str
    guidance: str
    """Words for the planner: how to split the job, which roles, what to check."""
    verify: dict[str, Any] = field(default_factory=dict)
    """Checks (a :class:`~taskloom.verifiers.VerifySpec` as JSON) suggested for every activity."""
    routes: list[dict[str, Any]] = field(default_factory=list)
    """Who decides escalations (:class:`~taskloom.pipeline.routing.Route` as JSON), after
    the routes given at submit and before the plan's."""

    def __post_init__(self) -> None:
        if not self.name or not self.guidance:
            raise UserError("a Template needs a name and guidance for the planner")
        for n, route in enumerate(self.routes, 1):
            try:
                Route.model_validate(route)
            except ValidationError as exc:
                raise UserError(
                    f"template {self.name!r}, route {n}: {validation_problems(exc)[0]}"
                ) from None

    def to_dict(self) -> dict[str, Any]:
        """The form a run's input records (``routes`` only when it has some)."""
        data = asdict(self)
        if not self.routes:
            del data["routes"]
        return data


BUILTIN_TEMPLATES = (
    Template(
        name="research_report",
        description="a report in cited sections, researched in parallel",
        guidance=(
            "Split the report into 3 to 8 independent sections, one 'researcher' activity "
            "each, that run in parallel. Each section lists its sources in a 'references' "
            "list when its role returns JSON (URLs or DOIs of external sources, ids of "
            "activities it builds on), or in text as numbered citations [1] with a "
            "numbered reference list at its end, and [ref:ID] markers for another "
            "activity's output. Add a final "
            "'writer' activity only if an introduction or summary needs the sections as "
            "inputs. Check each section with a judge whose rubric asks for accurate, "
            "specific, cited claims."
        ),
        verify={"pii": "redact"},
    ),
    Template(
        name="code_review",
        description="a review of several files, one reviewer per file, then a summary",
        guidance=(
            "One 'reviewer' activity per file or module, in parallel, each listing concrete "
            "problems with their location and a proposed fix. A final 'writer' activity "
            "takes every review as input and orders the findings by severity. Reviews must "
            "not invent code that is not in the inputs."
        ),
    ),
    Template(
        name="data_reconciliation",
        description="records from several sources matched, differences explained",
        guidance=(
            "One 'analyst' activity per source that extracts the records and their totals, "
            "in parallel; then one 'analyst' activity that takes them all as inputs and "
            "lists every mismatch with both values and a likely cause. Totals stated by "
            "different activities must agree."
        ),
    ),
    Template(
        name="onboarding_checklist",
        description="a checklist across parties (legal, IT, finance, the new member)",
        guidance=(
            "One activity per party, in parallel, each producing that party's checklist "
            "items with an owner and a due date; then a 'writer' activity that merges them "
            "into one ordered checklist. Personal data (e-mail addresses, phone numbers) "
            "must not appear in the items."
        ),
        verify={"pii": "redact"},
    ),
)
"""The shipped templates."""


def get_template(name: str) -> Template:
    """The shipped template called ``name``."""
    for template in BUILTIN_TEMPLATES:
        if template.name == name:
            return template
    raise UserError(
        f"no workflow template {name!r}; the templates are: {', '.join(template_names())}; "
        f"or pass your own Template(name=..., description=..., guidance=...)"
    )


def template_names() -> list[str]:
    """The names of the shipped templates."""
    return sorted(t.name for t in BUILTIN_TEMPLATES)
