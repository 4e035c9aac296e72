"""A simulated team for the fake LLM server: it plays the planner, the subagents, the
judge and the integrator of a pipeline, so a whole run works offline (the demo, the
benchmarks, tests). Everything it answers is made up, and says so.

::

    team = SimulatedTeam(plans=[plan], work=lambda task, feedback: f"notes on {task}")
    async with FakeLLM() as fake:
        fake.answer_with(team)
        ...                                  # OPENAI_BASE_URL=fake.openai_url
    team.calls["work"]                       # how many subagent calls the server saw

Requests are told apart by their system prompt (the shipped templates' first line).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from taskloom.agents.fake_llm import Request, Step, reply

__all__ = ["SimulatedTeam", "checked_output", "kind_of", "system_prompt", "task_of"]

Work = Callable[[str, str | None], Any]
"""``(task, feedback or None) -> output`` (text, or JSON data for a structured role)."""
Judge = Callable[[str, str], Mapping[str, Any]]
"""``(output text, rubric) -> {"score": ..., "reasons": [...], "feedback": ...}``."""

_KINDS = (
    ("planner", "You are the planner of a team of subagents"),
    ("integrator", "You are the editor who integrates"),
    ("judge", "You are a strict reviewer"),
)


_FENCES = re.compile(r"^(?:<<<PART|PART>>>)\n?", re.M)
"""The integrator prompt's markers around each accepted part (prompts/integrator.j2)."""
_FEEDBACK_LEAD = (
    "Your previous answer was not accepted. Fix what this says, and keep what was right:"
)


def system_prompt(request: Request) -> str:
    """The system prompt of a request, on either protocol."""
    system = request.body.get("system")
    if isinstance(system, list):  # Anthropic's blocks
        return "".join(str(b.get("text", "")) for b in system if isinstance(b, dict))
    if isinstance(system, str):
        return system
    first = request.messages[0] if request.messages else {}
    return str(first.get("content", "")) if first.get("role") == "system" else ""


def kind_of(request: Request) -> str:
    """``planner``, ``integrator``, ``judge`` or ``work`` (a subagent)."""
    return _kind(system_prompt(request))


def _kind(system: str) -> str:
    for kind, opening in _KINDS:
        if system.startswith(opening):
            return kind
    return "work"


def task_of(request: Request) -> str:
    """The task a request gives (its last user message)."""
    for message in reversed(request.messages):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def checked_output(request: Request) -> str:
    """The output a judge's request asks it to check (between the prompt's fences)."""
    system = system_prompt(request)
    return system.split("<<<OUTPUT\n", 1)[-1].rsplit("\nOUTPUT>>>", 1)[0].strip()


def _section(system: str, heading: str) -> str | None:
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", system, re.M | re.S)
    return match.group(1).strip() if match else None


def _default_work(task: str, feedback: str | None) -> str:
    first = task.strip().splitlines()[0] if task.strip() else "the task"
    note = " (revised as the reviewer asked)" if feedback else ""
    return f"[simulated] A short, specific answer to: {first}{note}"


def _default_judge(output: str, rubric: str) -> Mapping[str, Any]:
    return {"score": 0.9, "reasons": ["[simulated] meets the rubric"], "feedback": ""}


@dataclass
class SimulatedTeam:
    """A function of the request for :meth:`FakeLLM.answer_with
    <taskloom.agents.fake_llm.FakeLLM.answer_with>`: scripted planner answers (``plans``, in
    order; the last repeats), subagents (``work``), judge (``judge``), integrator
    (``integrate``), each with its own ``latency`` in seconds."""

    plans: Sequence[Any] = ()
    work: Work = _default_work
    judge: Judge = _default_judge
    integrate: Callable[[str], str] | None = None
    latency: Mapping[str, float] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    requests: dict[str, list[Request]] = field(default_factory=dict)

    def __call__(self, request: Request) -> Step:
        system = system_prompt(request)
        kind = _kind(system)
        self.calls[kind] += 1
        self.requests.setdefault(kind, []).append(request)
        latency = float(self.latency.get(kind, 0.0))
        if kind == "planner":
            if not self.plans:
                raise AssertionError("the simulated team has no plan to answer with")
            plan = self.plans[min(self.calls[kind], len(self.plans)) - 1]
            return reply(json=plan, latency=latency)
        if kind == "judge":
            text = checked_output(request)
            rubric = _section(system, "The rubric") or ""
            rubric = rubric.removeprefix(
                "Judge the output against these criteria, and nothing else:"
            )
            return reply(json=dict(self.judge(text, rubric.strip())), latency=latency)
        if kind == "integrator":
            parts = (_section(system, "The accepted parts") or "").split("\n\n", 1)[-1]
            parts = _FENCES.sub("", parts)  # the prompt's data fences, not the parts' text
            text = (
                self.integrate(parts)
                if self.integrate
                else f"[simulated] Integrated answer.\n{parts}"
            )
            return reply(text, latency=latency)
        feedback = _section(system, "Feedback on your previous attempt")
        if feedback is not None:
            feedback = feedback.removeprefix(_FEEDBACK_LEAD).strip()
        output = self.work(task_of(request), feedback)
        if isinstance(output, str):
            return reply(output, latency=latency)
        return reply(json=output, latency=latency)
