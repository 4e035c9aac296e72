"""verifiers: check a subagent's output before anything builds on it.

A verifier returns a typed :class:`Verdict`: ``pass``, ``fail`` (with feedback a retry
can use), ``uncertain`` (a person decides), or ``error`` (the verifier itself broke,
which never burns the output's retries). Built in: a pydantic :class:`Schema`,
:class:`Rules`, :class:`PII` policies, :class:`Totals` (sum rows add up), an LLM
:class:`Judge` with a rubric, :class:`Consensus` across samples or models, and any
Python callable (:func:`verifier`); and, on by default for every output,
:class:`Truncation` (an answer cut off before its end), :class:`Injection` (instructions
aimed at the reviewer, judge or integrator: escalated) and :class:`Citations` (citations
that point at nothing); cross-activity checks (:class:`References`, :class:`Agreement`)
look at several outputs together (:class:`Figures`: figures stated for one quantity
in text or JSON must agree). A :class:`VerifySpec` declares them in JSON.

::

    from taskloom.verifiers import Check, PII, Judge, Rules, Tools, run_verifiers

    outcome = await run_verifiers(
        [Rules(required=("summary",)), PII(policy="redact"),
         Judge("Faithful to the sources; every figure cited.")],
        Check(output=output, goal=goal, activity="a3", instructions=task),
        tools=Tools(runner=runner, budget=run_id, model="openai:gpt-4.1-mini"),
    )
    if outcome.status == "fail":
        ...  # retry the activity with feedback=outcome.feedback

This package uses :mod:`agents` (for the judge's model calls) and knows nothing of runs
or workflows.
"""

from .base import Check, Tools, Verifier, run_verifiers
from .citations import Citations
from .compliance import PII
from .consensus import Consensus
from .cross import Agreement, CrossCheck, References, run_cross_checks
from .custom import FunctionVerifier, verifier
from .errors import MissingRunnerError, UnknownVerifierError, VerifierConfigError
from .figures import Figures
from .injection import Injection
from .judge import Judge, JudgeScore
from .rules import Rules
from .schema import Schema
from .spec import ConsensusSpec, JudgeSpec, PIISpec, RulesSpec, VerifySpec, build
from .totals import Totals
from .truncation import Truncation
from .verdict import Outcome, Status, Verdict, combine

__all__ = [
    "PII",
    "Agreement",
    "Check",
    "Citations",
    "Consensus",
    "ConsensusSpec",
    "CrossCheck",
    "Figures",
    "FunctionVerifier",
    "Injection",
    "Judge",
    "JudgeScore",
    "JudgeSpec",
    "MissingRunnerError",
    "Outcome",
    "PIISpec",
    "References",
    "Rules",
    "RulesSpec",
    "Schema",
    "Status",
    "Tools",
    "Totals",
    "Truncation",
    "UnknownVerifierError",
    "Verdict",
    "Verifier",
    "VerifierConfigError",
    "VerifySpec",
    "build",
    "combine",
    "run_cross_checks",
    "run_verifiers",
    "verifier",
]
