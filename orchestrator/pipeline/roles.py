"""The agents of the pipeline: the planner, the integrator, and the built-in roles.

A *role* is an :class:`~taskloom.agents.agent.Agent` registered with the workers (``orch.worker(
agents=[...])`` or a module they import); a plan's activities name roles, and the
planner sees each role's name, description, tools and output type. The built-in roles
below are registered on every worker made by ``Orchestrator.worker`` unless a user agent
already has the name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from taskloom.agents.agent import Agent
from taskloom.errors import UserError
from taskloom.pipeline.plan import Plan, RoleInfo

__all__ = ["BUILTIN_ROLES", "INTEGRATOR", "INTERNAL_PREFIX", "PLANNER", "catalog"]

INTERNAL_PREFIX = "taskloom."
"""Agents named so are the pipeline's own, never a role a plan may use."""

PLANNER = Agent(
    name="taskloom.planner",
    role="the planner of a team of subagents",
    instructions="planner.j2",
    output=Plan,
    max_tokens=8192,
    temperature=0,
)
"""Turns a goal into a :class:`~taskloom.pipeline.plan.Plan`."""

INTEGRATOR = Agent(
    name="taskloom.integrator",
    role="the editor who integrates the team's verified work into one answer",
    instructions="integrator.j2",
    max_tokens=4096,
)
"""Combines the accepted outputs of a plan into the final answer."""

BUILTIN_ROLES = (
    Agent(name="researcher", role="a researcher who gathers and summarizes facts, citing them"),
    Agent(name="analyst", role="an analyst who reasons over data and states the numbers"),
    Agent(name="writer", role="a clear, concise writer of sections and summaries"),
    Agent(name="reviewer", role="a careful reviewer who finds problems and proposes fixes"),
)
"""Text roles every pipeline worker has, so a goal can run before you define your own."""


def catalog(agents: Mapping[str, Agent], names: Iterable[str] | None = None) -> dict[str, RoleInfo]:
    """The roles a run may use: ``names`` (all registered, non-internal agents if
    ``None``), described for the planner and the plan's validation."""
    usable = {n: a for n, a in agents.items() if not n.startswith(INTERNAL_PREFIX)}
    if names is None:
        return {n: RoleInfo.of(a) for n, a in sorted(usable.items())}
    chosen = list(names)
    missing = [n for n in chosen if n not in usable]
    if missing:
        raise UserError(
            f"roles {missing} are not agents the worker knows (it has: "
            f"{', '.join(sorted(usable)) or 'none'}); register them with orch.worker(agents=...)"
        )
    return {n: RoleInfo.of(usable[n]) for n in chosen}
