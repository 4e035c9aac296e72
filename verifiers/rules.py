"""The rules verifier: required fields, length bounds, regex patterns, banned terms."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ._walk import strings, where
from .base import Check, Tools, Verifier
from .errors import VerifierConfigError
from .verdict import Verdict

__all__ = ["Rules"]

_MISSING: Any = object()


class Rules(Verifier):
    """Deterministic rules on an output, each failure named in the feedback.

    - ``required``: fields of a JSON-object output that must be present and non-empty
      (``None``, ``""``, ``[]`` and ``{}`` are empty; ``0`` and ``False`` are not).
      ``"a.b"`` reaches into nested objects, ``"items.0"`` into lists.
    - ``min_length`` / ``max_length``: characters of a text output, or of the JSON text
      of a structured one.
    - ``patterns``: field -> regex that must be found in it (``re.search``; anchor it
      with ``^...$`` for a full match); the field ``""`` is the whole text.
    - ``banned``: terms that must not appear, matched case-insensitively as whole words
      in every string of the output.

    Example::

        Rules(required=("title", "summary"), max_length=4000,
              patterns={"date": r"^\\d{4}-\\d{2}-\\d{2}$"}, banned=("lorem ipsum",))
    """

    def __init__(
        self,
        *,
        required: Iterable[str] = (),
        min_length: int | None = None,
        max_length: int | None = None,
        patterns: Mapping[str, str] | None = None,
        banned: Iterable[str] = (),
        name: str = "rules",
        timeout: float = 30.0,
    ) -> None:
        self.required = tuple(required)
        self.min_length = min_length
        self.max_length = max_length
        self.patterns = {f: _compile(f, p) for f, p in (patterns or {}).items()}
        self.banned = tuple(t for t in banned if t.strip())
        self._banned = [
            (t, re.compile(rf"(?<!\w){re.escape(t.strip())}(?!\w)", re.I)) for t in self.banned
        ]
        self.name = name
        self.timeout = timeout
        for bound in (min_length, max_length):
            if bound is not None and bound < 0:
                raise VerifierConfigError(f"Rules: lengths must be >= 0, got {bound}")
        if min_length is not None and max_length is not None and min_length > max_length:
            raise VerifierConfigError(
                f"Rules: min_length ({min_length}) is above max_length ({max_length})"
            )

    async def verify(self, check: Check, tools: Tools) -> Verdict:
        """Apply every rule; fail listing each problem."""
        output = check.output
        measured = self.min_length is not None or self.max_length is not None
        whole = _text(output) if measured or "" in self.patterns else ""  # once for both
        problems = [
            *self._required(output),
            *self._lengths(whole),
            *self._patterns(output, whole),
        ]
        evidence: list[str] = []
        for term, place, found in self._banned_hits(output):
            problems.append(f"remove the banned term {term!r} (found {found!r} {place})")
            evidence.append(f"{place}: {found}")
        if not problems:
            return Verdict(verifier=self.name, status="pass", reasons=["every rule holds"])
        return Verdict(
            verifier=self.name,
            status="fail",
            reasons=problems,
            evidence=evidence,
            feedback="The output breaks these rules; fix each one:\n"
            + "\n".join(f"- {p}" for p in problems),
        )

    def _required(self, output: Any) -> Iterator[str]:
        if not self.required:
            return
        if not isinstance(output, dict):
            names = ", ".join(repr(f) for f in self.required)
            yield f"the output must be a JSON object with the fields {names}"
            return
        for path in self.required:
            value = _lookup(output, path)
            if value is _MISSING:
                yield f"the required field {path!r} is missing"
            elif value is None or value == "" or (isinstance(value, list | dict) and not value):
                yield f"the required field {path!r} is empty; fill it in"
            elif isinstance(value, str) and not value.strip():
                yield f"the required field {path!r} is blank; fill it in"

    def _lengths(self, whole: str) -> Iterator[str]:
        if self.min_length is None and self.max_length is None:
            return
        size = len(whole)
        if self.min_length is not None and size < self.min_length:
            yield (
                f"the output is {size} characters long, shorter than the minimum of "
                f"{self.min_length}: expand it"
            )
        if self.max_length is not None and size > self.max_length:
            yield (
                f"the output is {size} characters long, longer than the maximum of "
                f"{self.max_length}: shorten it"
            )

    def _patterns(self, output: Any, whole: str) -> Iterator[str]:
        for path, regex in self.patterns.items():
            if path == "":
                if not regex.search(whole):
                    yield f"the output does not match the required pattern /{regex.pattern}/"
                continue
            value = _lookup(output, path) if isinstance(output, dict) else _MISSING
            if value is _MISSING:
                yield f"the field {path!r} is missing; it must match /{regex.pattern}/"
            elif not regex.search(text := _text(value)):
                yield (
                    f"the field {path!r} ({_short(text)}) does not match the "
                    f"required pattern /{regex.pattern}/"
                )

    def _banned_hits(self, output: Any) -> Iterator[tuple[str, str, str]]:
        for path, text in strings(output):
            for term, regex in self._banned:
                for m in regex.finditer(text):
                    yield term, where(path), m.group(0)


def _compile(field: str, pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise VerifierConfigError(
            f"Rules: the pattern for {field or 'the whole text'!r} is not a valid regex "
            f"({exc}): {pattern!r}"
        ) from None


def _lookup(output: Any, path: str) -> Any:
    """The value at dotted ``path`` (``a.b``, ``items.0``), or ``_MISSING``."""
    value = output
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _text(value: Any) -> str:
    """A text as is; anything else as its JSON text."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
