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
from taskloom.engine.execution import Host
from taskloom.engine.retries import RetryPolicy
from taskloom.engine.worker import Worker
from taskloom.errors import HumanTaskClosedError
from taskloom.pipeline.subagents import Subagents, agent_runner
from taskloom.verifiers import (
    Agreement,
    Check,
    CrossCheck,
    Figures,
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
    "BUILTIN_CHECK_NAMES",
    "CROSS_CHECK_ACTIVITY",
    "SUPERSEDE_ACTIVITY",
    "VERIFY_ACTIVITY",
    "CustomVerifiers",
    "cross_check_catalog",
    "gating_checks",
    "install_verifiers",
    "verifier_catalog",
]

BUILTIN_CHECK_NAMES = frozenset(
    {
        "schema",
        "rules",
        "pii",
        "judge",
        "consensus",
        "totals",
        "truncation",
        "injection",
        "citations",
        "references",
        "agreement",
        "figures",
    }
)
"""The built-in checks' names, which a user verifier may not take: a plan, a verdict
and an inbox item would not say which of the two was meant."""

CustomVerifiers = Mapping[str, Verifier | tuple[Verifier, str]]
"""User verifiers by name: a verifier, or ``(verifier, description)`` where the
description tells the planner what it checks (default: its docstring's first line)."""

_VERIFIERS = "taskloom.verifiers"
_DESCRIPTIONS = "taskloom.verifier_descriptions"
_CROSS = "taskloom.cross_checks"
VERIFY_RETRY = RetryPolicy(max_attempts=3, initial_interval=1.0, max_interval=10.0)


def install_verifiers(
    worker: Worker,
    *,
    verifiers: CustomVerifiers | None = None,
    cross_checks: Iterable[CrossCheck] | None = None,
) -> None:
    """Register the verification activities on ``worker``, with the user's named
    ``verifiers`` and the ``cross_checks`` run across outputs (by default: every
    ``references`` entry must name an activity of the plan, and figures stated for one
    quantity must agree: :class:`~taskloom.verifiers.Figures`).

    Raises :class:`~taskloom.verifiers.VerifierConfigError` for a verifier named like a
    built-in check (:data:`BUILTIN_CHECK_NAMES`)."""
    taken = sorted(n for n in (verifiers or {}) if n.strip().lower() in BUILTIN_CHECK_NAMES)
    if taken:
        raise VerifierConfigError(
            f"custom verifier(s) {', '.join(map(repr, taken))} are named like built-in "
            f"checks ({', '.join(sorted(BUILTIN_CHECK_NAMES))}); register them under "
            "another name, e.g. orch.worker(verifiers={'house_style': ...})"
        )
    checks: dict[str, Verifier] = {}
    descriptions: dict[str, str] = {}
    for name, entry in (verifiers or {}).items():
        check, description = entry if isinstance(entry, tuple) else (entry, None)
        checks[name] = check
        descriptions[name] = description or _first_line(_doc_of(check))
    worker.resources[_VERIFIERS] = checks
    worker.resources[_DESCRIPTIONS] = descriptions
    worker.resources[_CROSS] = (
        list(cross_checks) if cross_checks is not None else [References(), Figures()]
    )
    for definition in (VERIFY_ACTIVITY, CROSS_CHECK_ACTIVITY, SUPERSEDE_ACTIVITY):
        worker.registry.add(definition)


def verifier_catalog(worker: Host) -> dict[str, str]:
    """The custom verifiers ``worker`` has, by name, with what each checks (for the
    planner's prompt and the plan's validation)."""
    descriptions: dict[str, str] = worker.resources.get(_DESCRIPTIONS, {})
    custom: Mapping[str, Verifier] = worker.resources.get(_VERIFIERS, {})
    return {name: descriptions.get(name, "") for name in sorted(custom)}


def cross_check_catalog(worker: Host) -> dict[str, str]:
    """The cross-activity checks ``worker`` runs on the accepted outputs, by name, with
    what each checks (its docstring's first line)."""
    checks: list[CrossCheck] = worker.resources.get(_CROSS, [])
    return {verifier_name(c): _first_line(_doc_of(c)) for c in checks}


def _doc_of(check: object) -> str:
    """A check's own docstring: a wrapped function's, else its class's (not a base's)."""
    fn = getattr(check, "fn", None)
    if callable(fn):  # a FunctionVerifier: the function says what it checks
        return fn.__doc__ or ""
    for cls in type(check).__mro__:
        if cls.__module__.startswith("taskloom.verifiers.") and cls is not type(check):
            break  # a base class's docstring says nothing about this check
        if cls.__doc__:
            return cls.__doc__
    return ""


def _first_line(doc: str) -> str:
    """The first line of a docstring, or a placeholder."""
    for line in doc.strip().splitlines():
        return line.strip()
    return "(no description: pass (verifier, description) at registration)"


async def _verify(request: dict[str, Any]) -> dict[str, Any]:
    """Run one output's verifiers; returns the :class:`~taskloom.verifiers.Outcome` as JSON."""
    attempt = current()
    worker: Worker = attempt.host
    spec = VerifySpec.model_validate(request["spec"])
    role = request.get("role")
    output_type = Subagents.of(worker).agent(role).output if role else None
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


def gating_checks(checks: Iterable[CrossCheck]) -> list[CrossCheck]:
    """The checks that compare figures (:class:`~taskloom.verifiers.Figures`,
    :class:`~taskloom.verifiers.Agreement`): they can run on a few outputs at a time,
    as soon as those are accepted; the others need the whole plan's outputs."""
    return [c for c in checks if isinstance(c, Figures | Agreement)]


async def _cross_check(
    outputs: dict[str, Any],
    facts: dict[str, list[str]] | None = None,
    gate: bool = False,
) -> list[dict[str, Any]]:
    """Run the worker's cross-activity checks over the accepted outputs; ``facts`` (activity
    id -> the quantities it states) narrows :class:`~taskloom.verifiers.Figures`;
    ``gate``: only the checks that compare figures (a few outputs, not the plan's all)."""
    worker: Worker = current().host
    checks: list[CrossCheck] = worker.resources.get(_CROSS, [])
    if gate:
        checks = gating_checks(checks)
    if facts is not None:
        checks = [c.for_plan(facts) if isinstance(c, Figures) else c for c in checks]
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
