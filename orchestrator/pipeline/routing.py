"""Routing escalations to the right person: by activity, role, verifier kind or
severity, each route with its own SLA and fallback chain, and a run-level default.

::

    orch.submit(goal, assignee="ops",                       # the run-level default
                routes=[
                    {"verifiers": ["pii", "injection"], "assignee": "legal@example.com",
                     "sla": 3600, "fallback": [{"reassign": "counsel", "sla": 1800},
                                               {"decide": "reject"}]},
                    {"verifiers": ["totals", "figures"], "assignee": "cfo"},
                    {"activities": ["contract"], "group": "legal"},
                ])

Routes come from the submit (``routes=``), then the template's, then the plan's; the
first route whose every given criterion matches an escalation takes it, else the run's
``assignee`` (with the run's ``sla`` and ``fallback``). A criterion matches when any of
its values does: ``activities`` (plan ids), ``roles``, ``verifiers`` (the kinds whose
verdict did not pass: ``pii``, ``totals``, ``judge``, ``figures``, a custom name; and
``subagent``, ``integrator``, ``planner``, ``budget`` for what broke), ``severity``
(``fail``: still failing after its retries; ``uncertain``: a check could not decide;
``error``: a verifier, the subagent or the budget broke, nothing was judged).

A fallback step is ``{"reassign": NAME, "sla": SECONDS}``, ``{"decide": DECISION,
"note": ...}`` (applied only to items that offer that decision) or ``{"expire":
REASON}``. A route naming nobody, a malformed reviewer name or address, or a step that
is not exactly one of these is refused at submit (``UserError``) or plan validation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from taskloom.engine.human import Decide, Expire, Fallback, Reassign

__all__ = [
    "Escalation",
    "FallbackStep",
    "Route",
    "Routing",
    "Severity",
    "Target",
    "check_reviewer",
    "route_problems",
]

Severity = Literal["fail", "uncertain", "error"]
_NAME = re.compile(r"^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]{0,62}[^\s\x00-\x1f\x7f])?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]{2,}$")


def check_reviewer(name: str) -> str:
    """``name`` if it is a reviewer's name or e-mail address; ``ValueError`` saying what
    is wrong otherwise."""
    if not _NAME.match(name):
        raise ValueError(
            f"reviewer {name!r} is not a name: give 1-64 characters without control "
            "characters or leading/trailing spaces (e.g. 'ana' or 'legal@example.com')"
        )
    if "@" in name and not _EMAIL.match(name):
        raise ValueError(f"reviewer {name!r} is not a valid e-mail address")
    return name


class FallbackStep(BaseModel):
    """One step of an SLA fallback chain: exactly one of ``reassign``, ``decide``,
    ``expire``."""

    model_config = ConfigDict(extra="forbid")

    reassign: str | None = None
    sla: float | None = Field(default=None, gt=0, description="seconds, with reassign")
    decide: str | None = None
    note: str = "decided by the SLA fallback"
    expire: str | None = None

    @model_validator(mode="after")
    def _one(self) -> FallbackStep:
        given = [k for k in ("reassign", "decide", "expire") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "a fallback step is one of {'reassign': NAME, 'sla': SECONDS}, "
                f"{{'decide': DECISION}}, {{'expire': REASON}}; got {given or 'none'}"
            )
        if self.reassign is not None:
            check_reviewer(self.reassign)
        elif self.sla is not None:
            raise ValueError("'sla' goes with 'reassign' (the new reviewer's time to decide)")
        return self

    def step(self, decisions: Sequence[str]) -> Fallback | None:
        """The engine's step (``None``: a ``decide`` the item does not offer)."""
        if self.reassign is not None:
            return Reassign(self.reassign, sla=self.sla)
        if self.decide is not None:
            return Decide(self.decide, note=self.note) if self.decide in decisions else None
        return Expire(self.expire or "no decision before the SLA")


@dataclass(frozen=True, kw_only=True)
class Escalation:
    """What an escalation is about, for routing."""

    activities: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    verifiers: tuple[str, ...] = ()
    severity: Severity = "error"


class Route(BaseModel):
    """Where escalations matching every given criterion go (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    activities: list[str] = Field(default_factory=list, description="plan activity ids")
    roles: list[str] = Field(default_factory=list, description="role names")
    verifiers: list[str] = Field(
        default_factory=list, description="verifier kinds that did not pass (pii, totals, ...)"
    )
    severity: list[Severity] = Field(default_factory=list, description="fail, uncertain, error")
    assignee: str | None = None
    group: str | None = None
    sla: float | None = Field(default=None, gt=0, description="seconds to decide")
    fallback: list[FallbackStep] = Field(default_factory=list)

    @field_validator("assignee", "group")
    @classmethod
    def _reviewer(cls, value: str | None) -> str | None:
        return None if value is None else check_reviewer(value)

    @model_validator(mode="after")
    def _someone(self) -> Route:
        if self.assignee is None and self.group is None:
            raise ValueError(
                "a route must name who gets its escalations: 'assignee' (a person) or 'group'"
            )
        return self

    def matches(self, about: Escalation) -> bool:
        """Every criterion given has a value in ``about``."""
        pairs: list[tuple[list[str], Iterable[str]]] = [
            (self.activities, about.activities),
            (self.roles, about.roles),
            (self.verifiers, about.verifiers),
            (list(self.severity), (about.severity,)),
        ]
        return all(not want or set(want) & set(have) for want, have in pairs)


@dataclass(frozen=True)
class Target:
    """Who gets one escalation, and its SLA chain."""

    assignee: str | None
    group: str | None
    sla: float | None
    fallback: tuple[FallbackStep, ...]

    def steps(self, decisions: Sequence[str]) -> list[Fallback]:
        """The chain as engine steps for an item offering ``decisions``."""
        return [s for f in self.fallback if (s := f.step(decisions)) is not None]


class Routing:
    """A run's routes, most specific source first, and its default."""

    def __init__(
        self,
        routes: Iterable[Route],
        *,
        assignee: str | None,
        sla: float | None = None,
        fallback: Iterable[FallbackStep] = (),
    ) -> None:
        self.routes = list(routes)
        self.default = Target(assignee, None, sla, tuple(fallback))

    def target(self, about: Escalation) -> Target:
        """Where ``about`` goes."""
        for route in self.routes:
            if route.matches(about):
                return Target(route.assignee, route.group, route.sla, tuple(route.fallback))
        return self.default


def route_problems(routes: Sequence[Route], *, activities: set[str], roles: set[str]) -> list[str]:
    """Routes of a plan naming activities or roles it does not have."""
    problems = []
    for n, route in enumerate(routes, 1):
        unknown = sorted(set(route.activities) - activities)
        if unknown:
            problems.append(
                f"route {n} names activities {unknown} that are not in the plan "
                f"(its activities: {', '.join(sorted(activities))})"
            )
        bad_roles = sorted(set(route.roles) - roles)
        if bad_roles:
            problems.append(
                f"route {n} names roles {bad_roles} that do not exist "
                f"(the roles: {', '.join(sorted(roles))})"
            )
    return problems
