"""Building on an ended pipeline run: a follow-up (``orch.submit(goal, previous=RUN)``)
and a re-run from one activity (``orch.rerun(RUN, from_activity="pricing")``).

A run's log is immutable once it ends, so a re-run is a new run: its plan is the old
run's latest plan, given up front (no planner call), and every activity the old run
accepted is reused by its spec key (see :func:`~taskloom.pipeline.plan.spec_keys`)
except the chosen one and everything built on it, which run again::

    handle = await orch.rerun(old.run_id, from_activity="summary")
    result = await handle.result()
    result["activities"]["market"]["reused"]      # True: accepted in the old run

What the new run reuses comes from the old run's record:

* a **completed** run's result lists every activity with its output;
* a **failed or cancelled** run has no result, so its accepted outputs are read back
  from its log, the way the pipeline reached them: the output of the activity's last
  verification (accepted by the verifiers, or approved by a person), or a person's
  edit, validated again by the role's output model.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from taskloom.engine import serde
from taskloom.engine.attempt import current
from taskloom.engine.keys import TERMINAL_STATUSES
from taskloom.engine.store import Event, Store
from taskloom.errors import UserError
from taskloom.pipeline.entries import PIPELINE_NAME, pipeline_entry
from taskloom.pipeline.plan import Plan, spec_keys
from taskloom.pipeline.policy import edited
from taskloom.pipeline.subagents import Subagents

if TYPE_CHECKING:
    from taskloom.agents.agent import Agent
    from taskloom.engine.payloads import Payloads

__all__ = ["downstream", "latest_plan", "previous_run", "read_request", "works_from_log"]


def latest_plan(events: Iterable[Event]) -> Plan | None:
    """The last plan a run's log adopted (``None``: it never had one)."""
    plan = None
    for event in events:
        entry = pipeline_entry(event)
        if entry is not None and entry["event"] == "planned":
            plan = Plan.model_validate(entry.get("plan"))
    return plan


def downstream(plan: Plan, ids: Collection[str]) -> set[str]:
    """``ids`` and every activity of ``plan`` that needs one of them, directly or
    through others; an id the plan does not have is a :class:`UserError`."""
    known = {a.id for a in plan.activities}
    unknown = sorted(set(ids) - known)
    if unknown:
        raise UserError(
            f"the plan has no activity {', '.join(map(repr, unknown))}; its activities are: "
            f"{', '.join(sorted(known))}"
        )
    stale = set(ids)
    grew = True
    while grew:  # plans are small; a fixed point is simpler than a topological walk
        grew = False
        for act in plan.activities:
            if act.id not in stale and stale.intersection(act.inputs):
                stale.add(act.id)
                grew = True
    return stale


async def read_request(store: Store, payloads: Payloads, run_id: str) -> dict[str, Any]:
    """The request a pipeline run was started with (its recorded input); a
    :class:`UserError` for a run of another workflow."""
    meta = await store.get_meta(run_id)
    if meta.get("workflow") != PIPELINE_NAME:
        raise UserError(
            f"run {run_id} is a run of workflow {meta.get('workflow')!r}, not a pipeline run "
            f"of orch.submit: only those can be re-run from an activity"
        )
    value = await payloads.unpack(serde.loads(meta.get("input") or "{}"))
    args = value.get("args") if isinstance(value, dict) else None
    if not args or not isinstance(args[0], dict):
        raise UserError(f"run {run_id} has no pipeline request in its input")
    return dict(args[0])


async def previous_run(run_id: str) -> dict[str, Any]:
    """What a follow-up takes over from an ended pipeline run: its latest ``plan`` and
    its ``activities`` (the summaries of the pipeline's work). The activity
    ``taskloom.previous_run`` runs it, so a replay sees what the first execution saw."""
    host = current().host
    info = await host.store.run_info(run_id)
    if info.status not in TERMINAL_STATUSES:
        raise UserError(
            f"run {run_id} is still {info.status}; a follow-up or a re-run builds on an "
            f"ended run: wait for it, or cancel it first"
        )
    if info.status == "completed":
        result = await host.payloads.unpack(info.result)  # a big one is in the blob store
        if isinstance(result, dict) and "plan" in result:
            return result
    elif info.workflow == PIPELINE_NAME:
        events = await host.store.read_log(run_id)
        agents = Subagents.of(host).agents
        taken = await works_from_log(events, payloads=host.payloads, agents=agents)
        if taken["plan"] is not None:
            return taken
    raise UserError(
        f"run {run_id} is not a pipeline run with a plan (status {info.status}); a follow-up "
        f"builds on a run of orch.submit that got as far as a plan"
    )


@dataclass
class _Branch:
    """What one activity's steps (a seq prefix) have recorded so far."""

    act_id: str
    verified: Any = None
    """The last verification's outcome (``{"status", "output", ...}``)."""
    decision: dict[str, Any] = field(default_factory=dict)
    """The last person's decision on it."""


async def works_from_log(
    events: Iterable[Event], *, payloads: Payloads, agents: dict[str, Agent]
) -> dict[str, Any]:
    """A failed or cancelled pipeline run's latest ``plan`` and the ``activities`` it
    accepted, read back from its log (outputs as the pipeline accepted them; an edited
    output is validated again by its role's model from ``agents``, and left out if the
    role is unknown or the edit no longer validates)."""
    plan: Plan | None = None
    keys: dict[str, str] = {}
    branches: dict[str, _Branch] = {}
    by_key: dict[str, dict[str, Any]] = {}
    works: dict[str, dict[str, Any]] = {}
    for event in events:
        prefix = (event.seq or "").rpartition(".")[0]
        entry = pipeline_entry(event)
        if entry is None:
            branch = branches.get(prefix)
            if branch is None:
                continue
            if event.type == "activity_completed" and event.data.get("name") == "taskloom.verify":
                branch.verified = await payloads.unpack(event.data.get("result"))
            elif event.type == "human_decided":
                branch.decision = dict(event.data.get("result") or {})
            continue
        if entry["event"] == "planned":
            plan = Plan.model_validate(entry.get("plan"))
            keys, works = spec_keys(plan), {}
        elif entry["event"] == "activity" and plan is not None and entry.get("id") in keys:
            act_id = str(entry["id"])
            branch = branches.setdefault(prefix, _Branch(act_id))
            work = _settled(entry, branch, plan, keys[act_id], agents)
            if entry.get("state") == "reused" and entry.get("key") in by_key:
                works[act_id] = by_key[entry["key"]] | {"id": act_id, "reused": True}
            elif work is not None:
                works[act_id] = by_key[work["key"]] = work
    return {
        "plan": plan.model_dump(mode="json", by_alias=True) if plan is not None else None,
        "activities": works,
    }


def _settled(
    entry: dict[str, Any], branch: _Branch, plan: Plan, key: str, agents: dict[str, Agent]
) -> dict[str, Any] | None:
    """The work an ``accepted`` entry settled, with its output; else ``None``."""
    if entry.get("state") != "accepted":
        return None
    by = str(entry.get("by") or "")
    if by != "verifiers" and branch.decision.get("decision") == "edit":
        output = _edited(branch.decision.get("data"), agents.get(plan.activity(branch.act_id).role))
        if output is _INVALID:
            return None
    elif isinstance(branch.verified, dict) and "output" in branch.verified:
        output = branch.verified["output"]
    else:
        return None
    return {
        "id": branch.act_id,
        "key": key,
        "status": "accepted",
        "output": output,
        "verdicts": list(branch.verified.get("verdicts") or [])
        if isinstance(branch.verified, dict)
        else [],
        "tokens": int(entry.get("tokens") or 0),
        "cost_usd": float(entry.get("cost_usd") or 0.0),
        "decided_by": by,
    }


_INVALID = object()


def _edited(data: Any, agent: Agent | None) -> Any:
    """A person's edited output as the pipeline accepted it (``_INVALID`` if it cannot
    be told again)."""
    if agent is None:
        return _INVALID
    try:
        output = edited(data, "output")
        if agent.output is not None:
            return agent.output.model_validate(output).model_dump(mode="json")
    except (ValidationError, ValueError):
        return _INVALID
    return output if isinstance(output, str) else _INVALID
