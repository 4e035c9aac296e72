"""The declarative form of an activity's verification, as the planner (in JSON) and
users write it, and :func:`build`, which turns it into verifiers.

    spec = VerifySpec.model_validate_json('''{
        "schema": true,
        "rules": {"required": ["summary"], "max_length": 4000},
        "pii": "redact",
        "totals": true,
        "judge": {"rubric": "Faithful to the sources; no speculation.", "threshold": 0.8},
        "custom": ["totals_add_up"],
        "truncation": true, "injection": true, "citations": true,
        "max_retries": 2
    }''')
    verifiers = build(spec, output_type=Report, custom={"totals_add_up": totals_check})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from .base import Verifier
from .citations import Citations
from .compliance import DEFAULT_REGIONS, PII, PIIKind, PIIPolicy
from .consensus import Consensus
from .errors import UnknownVerifierError, VerifierConfigError
from .injection import Injection
from .judge import Judge
from .rules import Rules
from .schema import Schema
from .totals import Totals
from .truncation import Truncation

__all__ = ["ConsensusSpec", "JudgeSpec", "PIISpec", "RulesSpec", "VerifySpec", "build"]


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


class PIISpec(BaseModel):
    """The PII policy with its options (see :class:`~taskloom.verifiers.PII`); a plain
    ``"pii": "redact"`` is the policy alone, with every kind and the default regions."""

    model_config = ConfigDict(extra="forbid")

    policy: PIIPolicy = Field(default="block", description="block, redact or escalate.")
    kinds: list[PIIKind] = Field(
        default_factory=lambda: list(get_args(PIIKind)),
        min_length=1,
        description="What to look for: email, phone, card, iban, national_id.",
    )
    regions: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REGIONS),
        description="Countries (ISO codes) whose national phone formats are recognised.",
    )

    @model_validator(mode="after")
    def _buildable(self) -> PIISpec:
        try:
            PII(**self.model_dump())
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
    output type; ``totals`` (on unless set to false) checks that sum rows and total
    fields add up. Verifiers run cheap first, LLM last (see :func:`build`); a failing
    output is retried with the feedback up to ``max_retries`` times (on
    ``fallback_model`` if given), then escalated.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_check: bool = Field(
        default=True, alias="schema", description="Validate against the output type."
    )
    rules: RulesSpec | None = None
    pii: PIIPolicy | PIISpec | None = Field(
        default=None,
        description=(
            "What to do with personal data (e-mail addresses, phone, card and national ID "
            "numbers, IBANs): block, redact or escalate, or {policy, kinds, regions}."
        ),
    )
    totals: bool = Field(
        default=True,
        description=(
            "Check that every table's total or sum row, and every total field next to a "
            "list of parts, equals the sum of its parts (free where there is no table)."
        ),
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

    @field_validator("pii", mode="wrap")
    @classmethod
    def _one_pii_problem(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """One problem for a bad ``pii`` (not one per member of the union), for the
        planner's feedback."""
        if isinstance(value, dict):
            try:
                return PIISpec.model_validate(value)
            except ValidationError as exc:
                raise ValueError("; ".join(map(_problem, exc.errors()))) from None
        if value is None or isinstance(value, PIISpec) or value in get_args(PIIPolicy):
            return handler(value)
        raise ValueError(
            "use one of 'block', 'redact', 'escalate', or an object "
            f"{{policy, kinds, regions}}; got {value!r}"
        )

    fallback_model: str | None = Field(
        default=None, description="provider:model to retry on after a failure."
    )


def _problem(error: Any) -> str:
    """One pydantic error as ``field: message``."""
    where = ".".join(map(str, error["loc"]))
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def build(
    spec: VerifySpec,
    *,
    output_type: type[BaseModel] | None = None,
    custom: Mapping[str, Verifier] | None = None,
) -> list[Verifier]:
    """The verifiers ``spec`` asks for, cheap first: schema, truncation, injection,
    rules, citations, PII, totals, the named custom verifiers (in the spec's order),
    judge, consensus.

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
    if isinstance(spec.pii, PIISpec):
        verifiers.append(PII(**spec.pii.model_dump()))
    elif spec.pii is not None:
        verifiers.append(PII(policy=spec.pii))
    if spec.totals:
        verifiers.append(Totals())
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
