"""Errors of the verifiers package, under taskloom's one root::

    TaskloomError
    └── UserError
        └── VerifierConfigError    a verifier or spec has options it cannot use
            ├── UnknownVerifierError   a spec names a custom verifier build() was not given
            └── MissingRunnerError     an LLM verifier ran without an AgentRunner

A verifier that raises while checking an output does not fail the output:
:func:`~taskloom.verifiers.run_verifiers` turns the exception into an ``"error"`` verdict.
"""

from __future__ import annotations

from taskloom.agents.errors import UserError

__all__ = ["MissingRunnerError", "UnknownVerifierError", "VerifierConfigError"]


class VerifierConfigError(UserError):
    """A verifier was built with options it cannot use (a regex that does not compile,
    a threshold outside 0..1, ...); the message names the option and the fix."""

    code = "verifier_config"


class UnknownVerifierError(VerifierConfigError):
    """A :class:`~taskloom.verifiers.VerifySpec` names a custom verifier that was not given to
    :func:`~taskloom.verifiers.build`; the message lists the ones that were."""

    code = "unknown_verifier"


class MissingRunnerError(VerifierConfigError):
    """An LLM-backed verifier (a judge) ran without ``Tools(runner=...)``."""

    code = "missing_runner"
