"""Cross-activity checks: before integration, outputs are checked against each other
(citations that point at nothing, values that contradict each other)."""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any

from ._walk import strings
from .base import error_verdict, guarded, verifier_name
from .citations import is_external
from .verdict import Verdict

__all__ = ["Agreement", "CrossCheck", "References", "run_cross_checks"]

_REF = re.compile(r"\[ref:\s*([^\]\s]+)\s*\]")


class CrossCheck(ABC):
    """Checks the outputs of several activities together. Verdicts name the activities
    they implicate in ``activities``.

    Example::

        class SameCurrency(CrossCheck):
            name = "same-currency"

            async def verify_all(self, outputs):
                found = {a: o.get("currency") for a, o in outputs.items()}
                if len(set(found.values())) > 1:
                    return [Verdict(verifier=self.name, status="fail",
                                    activities=sorted(found), evidence=[str(found)])]
                return [Verdict(verifier=self.name, status="pass")]
    """

    name: str
    timeout: float = 30.0
    """Seconds :func:`run_cross_checks` allows :meth:`verify_all` before an ``"error"``."""

    @abstractmethod
    async def verify_all(self, outputs: Mapping[str, Any]) -> list[Verdict]:
        """Judge ``outputs`` (activity id -> output) together."""


async def run_cross_checks(
    checks: Sequence[CrossCheck], outputs: Mapping[str, Any]
) -> list[Verdict]:
    """Run ``checks`` in order on ``outputs`` (activity id -> output), each under its
    timeout; one that raises or times out gives an ``"error"`` verdict and the others
    still run."""
    verdicts: list[Verdict] = []
    for check in checks:
        name = verifier_name(check)
        found, broke = await guarded(check.timeout, partial(check.verify_all, outputs))
        if broke:
            verdicts.append(error_verdict(name, broke))
        elif not isinstance(found, list) or not all(isinstance(v, Verdict) for v in found):
            verdicts.append(error_verdict(name, "verify_all() did not return a list of Verdicts"))
        else:
            verdicts += found
    return verdicts


class References(CrossCheck):
    """Every reference to another activity must name one (or a ``known`` id).

    Read are the ``[ref:ID]`` markers in every string of an output, and the entries of
    its ``field`` (a list): an entry with markers gives those, an id-shaped entry
    (``"a3"``, ``{"id": "a3"}``) is an id; external sources (http(s) URLs, DOIs,
    ``arXiv:``-style ids, bibliographic entries in words, ``{"url": ...}``; see
    :func:`~taskloom.verifiers.citations.is_external`) are not ids and never dangle.
    Each output with dangling references fails, naming them; otherwise one verdict
    passes. (Numbered, footnote and author-year citations are checked within each
    output by :class:`~taskloom.verifiers.Citations`.)

    Example::

        References(field="sources", known={"user-brief"})
    """

    def __init__(
        self,
        field: str = "references",
        *,
        known: Iterable[str] | None = None,
        name: str = "references",
        timeout: float = 30.0,
    ) -> None:
        self.field = field
        self.known = frozenset(known or ())
        self.name = name
        self.timeout = timeout

    async def verify_all(self, outputs: Mapping[str, Any]) -> list[Verdict]:
        """Check every output's references; see the class docstring."""
        valid = set(outputs) | self.known
        verdicts: list[Verdict] = []
        for activity, output in outputs.items():
            dangling = [r for r in dict.fromkeys(self._refs(output)) if r not in valid]
            if dangling:
                verdicts.append(self._dangling(activity, dangling, valid))
        if verdicts:
            return verdicts
        return [
            Verdict(
                verifier=self.name,
                status="pass",
                reasons=["every reference names an existing activity"],
                activities=list(outputs),
            )
        ]

    def _refs(self, output: Any) -> Iterator[str]:
        value = output.get(self.field) if isinstance(output, dict) else None
        for path, text in strings(output):
            if not (isinstance(value, list) and path.split(".")[0] == self.field):
                yield from _REF.findall(text)
        if isinstance(value, str):
            return  # its markers were read above
        for item in value if isinstance(value, list) else ():
            if isinstance(item, str):
                yield from (_REF.findall(item) or _as_id(item))
            elif isinstance(item, dict):
                yield from _entry_ids(item)

    def _dangling(self, activity: str, dangling: list[str], valid: set[str]) -> Verdict:
        names = ", ".join(repr(r) for r in dangling)
        return Verdict(
            verifier=self.name,
            status="fail",
            reasons=[f"activity {activity!r} cites {names}, which name no activity"],
            evidence=dangling,
            feedback=(
                f"These references point at nothing: {names}. Cite only these sources: "
                f"{', '.join(sorted(valid))}; remove or correct the others."
            ),
            activities=[activity],
        )


class Agreement(CrossCheck):
    """Outputs that give different values for the same key contradict each other.

    ``field`` names, in each JSON-object output, either a value (``{"total": 120}``
    with ``field="total"``) or an object of key -> value (``{"facts": {"total": 120,
    "year": 2024}}`` with ``field="facts"``). Outputs without it are not compared.
    Strings are compared ignoring case and surrounding spaces, numbers by value. Each
    contested key fails, implicating every activity that disagrees, with their values
    as evidence.

    Example::

        Agreement("figures")
    """

    def __init__(self, field: str, *, name: str = "agreement", timeout: float = 30.0) -> None:
        self.field = field
        self.name = name
        self.timeout = timeout

    async def verify_all(self, outputs: Mapping[str, Any]) -> list[Verdict]:
        """Compare the outputs' values key by key; see the class docstring."""
        claims: dict[str, dict[str, Any]] = {}  # key -> activity -> value
        for activity, output in outputs.items():
            if not isinstance(output, dict) or self.field not in output:
                continue
            value = output[self.field]
            pairs = value.items() if isinstance(value, dict) else [(self.field, value)]
            for key, item in pairs:
                claims.setdefault(str(key), {})[activity] = item
        verdicts = [
            self._contradiction(key, said)
            for key, said in claims.items()
            if len({_normal(v) for v in said.values()}) > 1
        ]
        if verdicts:
            return verdicts
        return [
            Verdict(
                verifier=self.name,
                status="pass",
                reasons=[f"the outputs agree on {len(claims)} value(s) of {self.field!r}"],
                activities=sorted({a for said in claims.values() for a in said}),
            )
        ]

    def _contradiction(self, key: str, said: dict[str, Any]) -> Verdict:
        evidence = [f"{activity}: {key} = {value!r}" for activity, value in said.items()]
        return Verdict(
            verifier=self.name,
            status="fail",
            reasons=[f"the outputs disagree on {key!r}: " + "; ".join(evidence)],
            evidence=evidence,
            feedback=(
                f"Activities {', '.join(said)} give different values for {key!r} "
                f"({'; '.join(evidence)}). Check the sources and use one correct value."
            ),
            activities=list(said),
        )


def _as_id(entry: str) -> list[str]:
    """``[entry]`` if a references entry names an id, ``[]`` for an external source."""
    entry = entry.strip()
    return [] if not entry or is_external(entry) else [entry]


def _entry_ids(entry: Mapping[str, Any]) -> list[str]:
    """The ids a references entry given as an object names (``{"id": "a3"}``); none
    for an external source (``{"url": ...}``, ``{"doi": ...}``, a title)."""
    for key in ("ref", "id", "activity"):
        value = entry.get(key)
        if isinstance(value, str) and value.strip():
            return _REF.findall(value) or _as_id(value)
    return []


def _normal(value: Any) -> tuple[str, Any]:
    """A hashable form for comparing: numbers by value, strings casefolded (tagged, so
    ``True`` and ``1`` differ)."""
    if isinstance(value, bool) or value is None:
        return "const", value
    if isinstance(value, int | float):
        return "number", float(value)
    if isinstance(value, str):
        return "text", " ".join(value.split()).casefold()
    return "json", json.dumps(value, sort_keys=True, default=str)
