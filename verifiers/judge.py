"""The LLM judge: a model scores the output against a rubric."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from taskloom.agents.agent import Agent

from .base import Check, Tools, Verifier
from .errors import MissingRunnerError, VerifierConfigError
from .verdict import Status, Verdict

__all__ = ["Judge", "JudgeScore"]


class JudgeScore(BaseModel):
    """What the judge model answers (the judge agent's output type)."""

    score: float = Field(
        ge=0.0, le=1.0, description="How well the output meets the rubric, from 0 to 1."
    )
    reasons: list[str] = Field(
        default_factory=list,
        description="One short sentence per rubric criterion that decided the score.",
    )
    evidence: list[str] = Field(
        default_factory=list, description="Short quotes from the output behind the reasons."
    )
    feedback: str = Field(
        default="",
        description="What a rewrite must change to meet the rubric, concretely; "
        "empty if nothing needs to change.",
    )


class Judge(Verifier):
    """An LLM judge: scores the output against ``rubric`` (0..1).

    ``score >= threshold`` passes; ``score < threshold - uncertain_band`` fails, with the
    judge's feedback for the retry; in between is uncertain (a person decides). The
    judge's own failures (no runner, a timeout, a provider error, an answer that does
    not parse) are raised, so :func:`~taskloom.verifiers.run_verifiers` records an ``"error"``
    verdict, never a ``"fail"``. The call's tokens and cost are on the verdict.

    The model is ``model``, else ``Tools.model``, else the runner's default
    (``TASKLOOM_MODEL``); calls reserve against ``Tools.budget``.

    Example::

        Judge("Every claim cites a source from the inputs; no speculation.",
              threshold=0.8, model="openai:gpt-4.1-mini")
    """

    def __init__(
        self,
        rubric: str,
        *,
        threshold: float = 0.7,
        uncertain_band: float = 0.2,
        model: str | None = None,
        name: str = "judge",
        template: str = "judge.j2",
        temperature: float = 0.0,
        timeout: float = 90.0,
        max_tokens: int = 1024,
    ) -> None:
        if not isinstance(rubric, str) or not rubric.strip():
            raise VerifierConfigError(f"{name}: a judge needs a rubric (what a good output is)")
        if not 0.0 <= threshold <= 1.0:
            raise VerifierConfigError(f"{name}: threshold must be in 0..1, got {threshold}")
        if uncertain_band < 0.0:
            raise VerifierConfigError(f"{name}: uncertain_band must be >= 0, got {uncertain_band}")
        self.rubric = rubric
        self.threshold = threshold
        self.uncertain_band = uncertain_band
        self.model = model
        self.name = name
        self.timeout = timeout
        self.agent = Agent(
            name="taskloom.judge",
            role="a strict reviewer",
            instructions=template,
            output=JudgeScore,
            temperature=temperature,
            max_tokens=max_tokens,
            timeout=timeout,
        )

    async def verify(self, check: Check, tools: Tools) -> Verdict:
        """Ask the judge model; see the class docstring."""
        return await self.judge(check, tools, model=self.model or tools.model)

    async def judge(self, check: Check, tools: Tools, *, model: str | None) -> Verdict:
        """One judge call with ``model`` (what :class:`~taskloom.verifiers.Consensus` samples)."""
        if tools.runner is None:
            raise MissingRunnerError(
                f"the {self.name!r} verifier calls an LLM and needs an AgentRunner: pass "
                "tools=Tools(runner=AgentRunner(...), model='provider:model')"
            )
        result = await tools.runner.run(
            self.agent,
            _task(check),
            inputs=_inputs(self.rubric, check),
            goal=check.goal or None,
            budget=tools.budget,
            model=model,
        )
        answer = JudgeScore.model_validate(result.output)
        status = self.status(answer.score)
        feedback = answer.feedback.strip() or "; ".join(answer.reasons)
        if status == "fail" and not feedback:
            feedback = f"The output scored {answer.score:.2f} against the rubric: {self.rubric}"
        return Verdict(
            verifier=self.name,
            status=status,
            score=answer.score,
            reasons=[f"{result.model} scored {answer.score:.2f}", *answer.reasons],
            evidence=answer.evidence,
            feedback="" if status == "pass" else feedback,
            input_tokens=result.usage.input_tokens,
            output_tokens=result.usage.output_tokens,
            cost_usd=result.cost_usd,
            endpoints=[result.endpoint] if result.endpoint else [],
        )

    def status(self, score: float) -> Status:
        """``pass``, ``fail`` or ``uncertain`` for a score."""
        if score >= self.threshold:
            return "pass"
        if score < self.threshold - self.uncertain_band:
            return "fail"
        return "uncertain"


def _task(check: Check) -> str:
    what = f"the output of activity {check.activity!r}" if check.activity else "the output"
    return f"Review {what} against the rubric and score it."


def _inputs(rubric: str, check: Check) -> dict[str, Any]:
    """The judge's inputs: the rubric, the activity's task and inputs, the output."""
    inputs: dict[str, Any] = {"rubric": rubric}
    if check.instructions:
        inputs["activity_task"] = check.instructions
    for title, value in check.inputs.items():
        inputs[f"input: {title}"] = value
    output = check.output
    text = output if isinstance(output, str) else json.dumps(output, indent=2, ensure_ascii=False)
    # The template fences the output between these markers: an output cannot close them.
    inputs["output"] = text.replace("<<<OUTPUT", "<< <OUTPUT").replace("OUTPUT>>>", "OUTPUT> >>")
    return inputs
