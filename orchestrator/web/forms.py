"""Form bodies and the edit form: read a bounded urlencoded body, and check an edited
output against the JSON Schema its escalation carries (``output_schema``).

The check (:mod:`taskloom.pipeline.edits`, shared with ``taskloom inbox edit``) is what a
person needs to see next to the field before anything is recorded: text must not be
empty; JSON must parse and meet the schema. The pipeline validates the edit once more
with the output's own model.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from taskloom.engine.human import HumanTask
from taskloom.errors import UserError
from taskloom.pipeline.edits import Editable, editable

__all__ = ["FormError", "edit_form", "parse_form"]

MAX_FIELDS = 50


class FormError(Exception):
    """A form body the server will not read; ``status`` is the HTTP answer (400, 413, 415)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_form(content_type: str, body: bytes) -> dict[str, str]:
    """The fields of an ``application/x-www-form-urlencoded`` body (first value wins)."""
    if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise FormError(415, "forms are sent as application/x-www-form-urlencoded")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormError(400, f"the form could not be read: {exc}") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)
    return form


def edit_form(task: HumanTask) -> Editable | None:
    """What the item page's edit form changes, or ``None`` if the task takes no "edit"
    decision (or carries nothing to edit)."""
    if "edit" not in task.decisions:
        return None
    try:
        return editable(task)
    except UserError:
        return None
