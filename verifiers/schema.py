"""The schema verifier: the output validates against a pydantic model."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from .base import Check, Tools, Verifier
from .errors import VerifierConfigError
from .verdict import Verdict

__all__ = ["Schema"]

_MAX_ERRORS = 20


class Schema(Verifier):
    """Validates the output against ``model``, or else the activity's output type.

    Fails with the validation errors as feedback, one line per error with its field
    path (``items[2].price: Input should be a valid number``). A text output with no
    model passes (there is nothing to check); a text output with a model is parsed as
    JSON first.

    Example::

        Schema(model=Invoice)
    """

    def __init__(
        self, *, model: type[BaseModel] | None = None, name: str = "schema", timeout: float = 30.0
    ) -> None:
        if model is not None and not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise VerifierConfigError(
                f"Schema(model=...) takes a pydantic model class, got {model!r}"
            )
        self.model = model
        self.name = name
        self.timeout = timeout

    async def verify(self, check: Check, tools: Tools) -> Verdict:
        """Validate; see the class docstring."""
        model = self.model or check.output_type
        if model is None:
            return Verdict(verifier=self.name, status="pass", reasons=["no schema to check"])
        try:
            if isinstance(check.output, str | bytes):
                model.model_validate_json(check.output)
            else:
                model.model_validate(check.output)
        except ValidationError as exc:
            problems = [_describe(e) for e in exc.errors()]
            lines = "\n".join(f"- {p}" for p in problems[:_MAX_ERRORS])
            if len(problems) > _MAX_ERRORS:
                lines += f"\n- ... and {len(problems) - _MAX_ERRORS} more"
            return Verdict(
                verifier=self.name,
                status="fail",
                reasons=[f"the output does not validate against {model.__name__}"],
                evidence=problems,
                feedback=(
                    f"The output does not match the required {model.__name__} schema. "
                    f"Fix these fields:\n{lines}"
                ),
            )
        return Verdict(
            verifier=self.name, status="pass", reasons=[f"validates against {model.__name__}"]
        )


def _describe(error: ErrorDetails) -> str:
    """``items[2].price: Input should be a valid number`` (``(root)`` for the whole)."""
    path = ""
    for part in error["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return f"{path or '(root)'}: {error['msg']}"
