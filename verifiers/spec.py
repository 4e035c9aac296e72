"""The declarative form of an activity's verification, as the planner (in JSON) and
users write it, and :func:`build`, which turns it into verifiers.

    spec = VerifySpec.model_validate_json('''{
        "schema": true,
        "rules": {"required": ["summary"], "max_length": 4000},
        "pii": "redact",
        "judge": {"rubric": "Faithful to the sources; no speculation.", "threshold": 0.8},
        "custom": ["totals_add_up"],
        "truncation": true, "injection": true, "citations": true,
        "max_retries": 2
    }''')
    verifiers = build(spec, output_type=Report, custom={"totals_add_up": totals_check})
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .base import Verifier
from .citations import Citations
from .compliance import PII, PIIPolicy
from .consensus import Consensus
from .errors import UnknownVerifierError, VerifierConfigError
from .injection import Injection
from .judge import Judge
from .rules import Rules
from .schema import Schema
from .truncation import Truncation

__all__ = ["ConsensusSpec", "JudgeSpec", "RulesSpec", "VerifySpec", "build"]


class RulesSpec(BaseModel):
    """Deterministic rules (see :class:`~taskloom.verifiers.Rules`)."""

    model_config = ConfigDict(extra="forbid")

    required: list[str] = Field(
        default_factory=list, description="Fields that must be present and non-empty."
    )
    min_length: int | None = Field(default=None, ge=0, description="Fewest characters.")
    max_length: int | None = Field(default=None, ge=0, description="Most characters.")
    patterns: dict[str, str] = Field(
        default_factory=dict,
        description='Field -> regex it must contain a match of ("" for the whole text).',
    )
    banned: list[str] = Field(
        default_factory=list, description="Terms that must not appear (case-insensitive)."
    )

    @model_validator(mode="after")
    def _buildable(self) -> RulesSpec:
        """Refuse what :class:`~taskloom.verifiers.Rules` would refuse (a bad regex, a minimum
        over the maximum) here, where a planner gets it back as feedback."""
        try:
            Rules(**self.model_dump())
        except VerifierConfigError as exc:
            raise ValueError(str(exc)) from None
        return self


class _RubricSpec(BaseModel):
    """What a judge's and a consensus's spec share: the rubric and the passing score."""

    model_config = ConfigDict(extra="forbid")

    rubric: str = Field(
        min_length=1, pattern=r"\S", description="What a good output is, criterion by criterion."
    )
    threshold: float = Field(default=0.7, ge=0.0, le=1.0, description="Lowest passing score.")


class JudgeSpec(_RubricSpec):
    """An LLM judge (see :class:`~taskloom.verifiers.Judge`)."""

    model: str | None = Field(default=None, description="provider:model; default: the run's.")


class ConsensusSpec(_RubricSpec):
    """Several judge samples or models voting (see :class:`~taskloom.verifiers.Consensus`)."""

    samples: int = Field(default=3, ge=1, le=10, description="How many times to ask one model.")
    models: list[str] = Field(
        default_factory=list, description="Ask each of these once instead (provider:model)."
    )


class VerifySpec(BaseModel):
    """How one activity's output is verified, and what happens when it fails.

    ``schema`` (in JSON; ``schema_check`` in Python) validates against the activity's
    output type. Verifiers run cheap first, LLM last (see :func:`build`); a failing
    output is retried with the feedback up to ``max_retries`` times (on
    ``fallback_model`` if given), then escalated.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_check: bool = Field(
        default=True, alias="schema", description="Validate against the output type."
    )
    rules: RulesSpec | None = None
    pii: PIIPolicy | None = Field(
        default=None, description="What to do with e-mail addresses, phone and card numbers."
    )
    judge: JudgeSpec | None = None
    consensus: ConsensusSpec | None = None
    custom: list[str] = Field(
        default_factory=list, description="Names of user verifiers registered with build()."
    )
    truncation: bool = Field(
        default=True,
        description="Fail an output the model did not finish (token limit, or a text that "
        "stops mid-sentence when the provider gave no finish reason); it is retried.",
    )
    injection: bool = Field(
        default=True,
        description="Escalate an output carrying instructions aimed at its reviewer, judge "
        "or integrator (ignore previous instructions, approve this, hidden text).",
    )
    citations: bool = Field(
        default=True,
        description="Fail an output whose citations ([1], [^1], (Author, 2020)) point at no "
        "entry of its own reference list; URLs and DOIs are sources of their own.",
    )
    max_retries: int = Field(
        default=2, ge=0, le=10, description="Retries with feedback after a failure."
    )
    fallback_model: str | None = Field(
        default=None, description="provider:model to retry on after a failure."
    )


def build(
    spec: VerifySpec,
    *,
    output_type: type[BaseModel] | None = None,
    custom: Mapping[str, Verifier] | None = None,
) -> list[Verifier]:
    """The verifiers ``spec`` asks for, cheap first: schema, truncation, injection,
    rules, citations, PII, the named custom verifiers (in the spec's order), judge,
    consensus.

    Raises :class:`~taskloom.verifiers.UnknownVerifierError` for a custom name not in ``custom``.
    """
    custom = custom or {}
    unknown = [n for n in spec.custom if n not in custom]
    if unknown:
        known = ", ".join(sorted(custom)) or "none were given"
        raise UnknownVerifierError(
            f"the verify spec names custom verifier(s) {', '.join(map(repr, unknown))} that "
            f"build() was not given (known: {known}); pass them as "
            "build(spec, custom={name: verifier}) or remove them from the spec"
        )
    verifiers: list[Verifier] = []
    if spec.schema_check:
        verifiers.append(Schema(model=output_type))
    if spec.truncation:
        verifiers.append(Truncation())
    if spec.injection:
        verifiers.append(Injection())
    if spec.rules is not None:
        verifiers.append(Rules(**spec.rules.model_dump()))  # as _buildable checked it
    if spec.citations:
        verifiers.append(Citations())
    if spec.pii is not None:
        verifiers.append(PII(policy=spec.pii))
    verifiers += (custom[n] for n in spec.custom)
    if spec.judge is not None:
        j = spec.judge
        verifiers.append(Judge(j.rubric, threshold=j.threshold, model=j.model))
    if spec.consensus is not None:
        c = spec.consensus
        verifiers.append(
            Consensus(c.rubric, threshold=c.threshold, samples=c.samples, models=c.models)
        )
    return verifiers
