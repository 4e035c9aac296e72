"""Verification as recorded activities: one output's checks (``taskloom.verify``), the
checks across a plan's outputs (``taskloom.cross_check``), and closing a run's open
escalations when a re-plan supersedes them (``taskloom.supersede``).

Verifiers run on a worker, inside an activity, so an LLM judge's verdict is recorded
like any model call: a replay never asks the judge again. A verifier that breaks (a
judge that timed out, a checker that raised) gives an ``error`` verdict, which the
pipeline treats apart from a ``fail``. User verifiers are registered on the worker by
name (``orch.worker(verifiers={"house_style": ...}, cross_checks=[...])``); a plan or a
submit names them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from taskloom import tracing
from taskloom.engine.attempt import current
from taskloom.engine.definitions import ActivityDef
from taskloom.engine.retries import RetryPolicy
from taskloom.engine.worker import Worker
from taskloom.errors import HumanTaskClosedError
from taskloom.pipeline.subagents import agent_runner
from taskloom.verifiers import (
    Check,
    CrossCheck,
    References,
    Tools,
    Verifier,
    VerifierConfigError,
    VerifySpec,
    build,
    combine,
    run_cross_checks,
    run_verifiers,
)
from taskloom.verifiers.base import error_verdict, verifier_name

__all__ = [
    "CROSS_CHECK_ACTIVITY",
    "SUPERSEDE_ACTIVITY",
    "VERIFY_ACTIVITY",
    "install_verifiers",
]

_VERIFIERS = "taskloom.verifiers"
_CROSS = "taskloom.cross_checks"
VERIFY_RETRY = RetryPolicy(max_attempts=3, initial_interval=1.0, max_interval=10.0)


def install_verifiers(
    worker: Worker,
    *,
    verifiers: Mapping[str, Verifier] | None = None,
    cross_checks: Iterable[CrossCheck] | None = None,
) -> None:
    """Register the verification activities on ``worker``, with the user's named
    ``verifiers`` and the ``cross_checks`` run before integration (by default: every
    ``references`` entry must name an activity of the plan)."""
    worker.resources[_VERIFIERS] = dict(verifiers or {})
    worker.resources[_CROSS] = list(cross_checks) if cross_checks is not None else [References()]
    for definition in (VERIFY_ACTIVITY, CROSS_CHECK_ACTIVITY, SUPERSEDE_ACTIVITY):
        worker.registry.add(definition)


async def _verify(request: dict[str, Any]) -> dict[str, Any]:
    """Run one output's verifiers; returns the :class:`~taskloom.verifiers.Outcome` as JSON."""
    attempt = current()
    worker: Worker = attempt.host
    spec = VerifySpec.model_validate(request["spec"])
    role = request.get("role")
    output_type = worker.registry.agent(role).output if role else None
    custom: Mapping[str, Verifier] = worker.resources.get(_VERIFIERS, {})
    check = Check(
        output=request["output"],
        goal=request.get("goal", ""),
        activity=request.get("activity", ""),
        instructions=request.get("instructions", ""),
        output_type=output_type,
        inputs=request.get("inputs") or {},
        finish=request.get("finish"),
    )
    try:
        checks = build(spec, output_type=output_type, custom=custom)
    except VerifierConfigError as exc:  # the output was not judged: the checker broke
        return combine([error_verdict("build", str(exc))], check.output).model_dump(mode="json")
    tools = Tools(
        runner=agent_runner(worker), budget=request.get("budget"), model=request.get("model")
    )
    if not tracing.enabled():
        outcome = await run_verifiers(checks, check, tools=tools)
        return outcome.model_dump(mode="json")
    names = [verifier_name(c) for c in checks]
    with tracing.verification_span(activity=check.activity, verifiers=names) as span:
        outcome = await run_verifiers(checks, check, tools=tools)
        tracing.verdict(span, outcome.status, [(v.verifier, v.status) for v in outcome.verdicts])
    return outcome.model_dump(mode="json")


async def _cross_check(outputs: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the worker's cross-activity checks over the accepted outputs."""
    worker: Worker = current().host
    checks: list[CrossCheck] = worker.resources.get(_CROSS, [])
    verdicts = await run_cross_checks(checks, outputs)
    return [v.model_dump(mode="json") for v in verdicts]


async def _supersede(run_id: str, reason: str) -> list[str]:
    """Close the run's open escalations (its child runs' too): a re-plan made their
    questions moot."""
    worker: Worker = current().host
    inbox = worker.human_tasks
    closed = []
    for task in await inbox.list(run_id=run_id, children=True, limit=10_000):
        try:
            await inbox.withdraw(task.id, reason=reason)
        except HumanTaskClosedError:
            continue  # decided meanwhile; the pipeline reads that decision
        closed.append(task.id)
    return closed


VERIFY_ACTIVITY = ActivityDef(name="taskloom.verify", fn=_verify, is_async=True, retry=VERIFY_RETRY)
CROSS_CHECK_ACTIVITY = ActivityDef(
    name="taskloom.cross_check", fn=_cross_check, is_async=True, retry=VERIFY_RETRY
)
SUPERSEDE_ACTIVITY = ActivityDef(
    name="taskloom.supersede", fn=_supersede, is_async=True, retry=VERIFY_RETRY
)
