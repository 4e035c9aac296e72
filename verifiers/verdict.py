"""Verdicts: what one verifier says about one output, and how an output's verdicts
combine into an :class:`Outcome`.

    verdicts = [Verdict(verifier="rules", status="pass"),
                Verdict(verifier="judge", status="fail", score=0.3,
                        feedback="Cite a source for each figure.")]
    outcome = combine(verdicts, output)
    outcome.status      # "fail"
    outcome.feedback    # "Cite a source for each figure." (for the retry)

``"error"`` means the verifier itself broke (a judge call timed out, a checker raised),
not that the output is wrong: it must never burn the output's retries.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, TypeAlias

from pydantic import BaseModel, Field

__all__ = ["Outcome", "Status", "Verdict", "combine"]

Status: TypeAlias = Literal["pass", "fail", "uncertain", "error"]
"""``pass`` accept; ``fail`` retry with feedback; ``uncertain`` ask a human; ``error``
the verifier broke (the output was not judged)."""

# The most severe status wins; "error" ranks below "uncertain" because a verifier that
# broke says nothing about the output, while an uncertain one flagged something.
_SEVERITY: dict[Status, int] = {"pass": 0, "error": 1, "uncertain": 2, "fail": 3}


class Verdict(BaseModel):
    """What one verifier said about one output (or, from a cross-activity check, about
    several: ``activities`` names them).

    Example::

        Verdict(verifier="rules", status="fail", reasons=["'summary' is empty"],
                feedback="Fill in the 'summary' field.")
    """

    verifier: str
    """The name of the verifier that said it."""
    status: Status
    score: float | None = Field(default=None, ge=0.0, le=1.0)
    """0..1 where meaningful (a judge's score), else ``None``."""
    reasons: list[str] = []
    """Why, in a sentence each (for people and the record)."""
    evidence: list[str] = []
    """What was found: quotes, masked values, the contradicting values."""
    feedback: str = ""
    """For ``fail``: what a retry should fix (given to the model)."""
    revised: bool = False
    """The verifier replaced the output (PII redaction); the replacement is ``output``."""
    output: Any = None
    """The replacement output when ``revised``."""
    activities: list[str] = []
    """For cross-activity verdicts: the activity ids implicated."""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    """What an LLM verifier spent on this verdict."""
    endpoints: list[str] = []
    """Who served an LLM verifier's calls (provider and base URL, never a key)."""

    @property
    def tokens(self) -> int:
        """Input plus output tokens spent."""
        return self.input_tokens + self.output_tokens


class Outcome(BaseModel):
    """The verdicts on one output, combined (see :func:`combine`)."""

    status: Status
    verdicts: list[Verdict]
    output: Any
    """The output after any redactions (what should be accepted, if anything)."""
    feedback: str
    """The failing verdicts' feedback, joined: what the retry is told."""

    @property
    def tokens(self) -> int:
        """Tokens the verifiers spent (input plus output)."""
        return sum(v.tokens for v in self.verdicts)

    @property
    def cost_usd(self) -> float:
        """USD the verifiers spent."""
        return sum(v.cost_usd for v in self.verdicts)

    @property
    def revised(self) -> bool:
        """Whether a verifier replaced the output."""
        return any(v.revised for v in self.verdicts)


def combine(verdicts: Iterable[Verdict], output: Any) -> Outcome:
    """Combine one output's verdicts: ``fail`` if any failed, else ``uncertain`` if any
    was uncertain, else ``error`` if any verifier broke, else ``pass`` (also when there
    are no verdicts). ``output`` is the output after redactions."""
    verdicts = list(verdicts)
    status: Status = max((v.status for v in verdicts), key=_SEVERITY.__getitem__, default="pass")
    feedback = "\n".join(_feedback(v) for v in verdicts if v.status == "fail")
    return Outcome(status=status, verdicts=verdicts, output=output, feedback=feedback)


def _feedback(verdict: Verdict) -> str:
    if verdict.feedback:
        return verdict.feedback
    if verdict.reasons:
        return "; ".join(verdict.reasons)
    return f"the {verdict.verifier} check rejected the output"
