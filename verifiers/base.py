"""The verifier interface, and running an output's verifiers in order.

    outcome = await run_verifiers(
        [Schema(), Rules(required=("summary",)), PII(policy="redact"), Judge(rubric)],
        Check(output=output, goal=goal, activity="a3", instructions=task,
              output_type=Summary),
        tools=Tools(runner=runner, budget=run_id, model="openai:gpt-4.1-mini"),
    )
    outcome.status, outcome.feedback, outcome.output

Each verifier runs under its own timeout. One that raises or times out gives an
``"error"`` verdict (it broke; the output was not judged) and the rest still run. A
verdict with ``revised=True`` replaces the output the following verifiers see and the
:class:`~taskloom.verifiers.Outcome` carries. Cancellation always propagates.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import anyio
from pydantic import BaseModel

from taskloom.agents.agent import AgentRunner

from .verdict import Outcome, Verdict, combine

__all__ = ["Check", "Tools", "Verifier", "run_verifiers"]

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class Check:
    """What a verifier sees: the output and the activity it came from."""

    output: Any
    """JSON data: a dict for a structured output, a str for text."""
    goal: str = ""
    """The whole run's goal."""
    activity: str = ""
    """The activity id."""
    instructions: str = ""
    """The activity's task (what the output was asked to do)."""
    output_type: type[BaseModel] | None = None
    """The pydantic model the output should validate against, if any."""
    inputs: Mapping[str, Any] = field(default_factory=dict)
    """The activity's inputs (title -> text or JSON data), e.g. the sources it used."""
    finish: str | None = None
    """Why the model stopped the answer, as its provider said (``"stop"``, ``"length"``:
    cut off at the token limit, ``"tool_calls"``, ``"other"`` or ``""``: not said);
    ``None`` when the output is not a model's answer (a person's edit, a reducer's)."""


@dataclass(frozen=True, kw_only=True)
class Tools:
    """What LLM-backed verifiers may use."""

    runner: AgentRunner | None = None
    budget: str | None = None
    """The budget name (a run id) judge calls reserve against."""
    model: str | None = None
    """The default judge model (``provider:model``)."""


class Verifier(ABC):
    """Checks one output. Subclasses set ``name`` and implement :meth:`verify`.

    Example::

        class NoTodo(Verifier):
            name = "no-todo"

            async def verify(self, check: Check, tools: Tools) -> Verdict:
                if "TODO" in str(check.output):
                    return Verdict(verifier=self.name, status="fail",
                                   feedback="Finish the parts marked TODO.")
                return Verdict(verifier=self.name, status="pass")
    """

    name: str
    timeout: float = 30.0
    """Seconds :func:`run_verifiers` allows :meth:`verify` before an ``"error"``."""

    @abstractmethod
    async def verify(self, check: Check, tools: Tools) -> Verdict:
        """Judge ``check.output``. Raise if the verifier itself cannot work (that is an
        ``"error"`` verdict, not a ``"fail"``)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={verifier_name(self)!r})"


async def run_verifiers(
    verifiers: Sequence[Verifier], check: Check, *, tools: Tools | None = None
) -> Outcome:
    """Run ``verifiers`` on ``check.output`` in order and combine their verdicts (see
    the module docstring). Never raises for a broken verifier."""
    tools = Tools() if tools is None else tools
    verdicts: list[Verdict] = []
    for verifier in verifiers:
        verdict = await _verify_one(verifier, check, tools)
        verdicts.append(verdict)
        if verdict.revised:
            check = replace(check, output=verdict.output)
    return combine(verdicts, check.output)


async def _verify_one(verifier: Verifier, check: Check, tools: Tools) -> Verdict:
    name = verifier_name(verifier)
    verdict, broke = await guarded(verifier.timeout, lambda: verifier.verify(check, tools))
    if broke:
        return error_verdict(name, broke)
    if not isinstance(verdict, Verdict):
        return error_verdict(name, f"verify() returned {type(verdict).__name__}, not a Verdict")
    return verdict


def verifier_name(verifier: object) -> str:
    """A verifier's name, or its class name when it has none."""
    name = getattr(verifier, "name", None)
    return name if isinstance(name, str) and name else type(verifier).__name__


def error_verdict(name: str, reason: str) -> Verdict:
    """The verdict of a verifier that broke."""
    return Verdict(verifier=name, status="error", reasons=[reason])


async def guarded(timeout: float, call: Callable[[], Awaitable[T]]) -> tuple[T | None, str]:
    """``call()`` under ``timeout``: ``(result, "")``, or ``(None, why it broke)`` if it
    raised or timed out. Cancellation from outside propagates."""
    try:
        with anyio.fail_after(timeout) as scope:
            return await call(), ""
    except TimeoutError as exc:
        if scope.cancel_called:
            return None, f"timed out after {timeout:g} s"
        return None, f"raised TimeoutError: {exc}"
    except Exception as exc:
        return None, f"raised {type(exc).__name__}: {exc}"
