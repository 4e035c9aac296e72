"""The PII verifier: e-mail addresses, phone numbers and card numbers, blocked,
redacted or escalated."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, TypeAlias, get_args

from ._walk import map_strings, strings, where
from .base import Check, Tools, Verifier
from .errors import VerifierConfigError
from .verdict import Verdict

__all__ = ["PII", "PIIKind", "PIIPolicy"]

PIIPolicy: TypeAlias = Literal["block", "redact", "escalate"]
"""``block``: fail (the retry removes it); ``redact``: replace it and pass;
``escalate``: ask a person (uncertain)."""
PIIKind: TypeAlias = Literal["email", "phone", "card"]

_KINDS: tuple[PIIKind, ...] = get_args(PIIKind)
_POLICIES: tuple[PIIPolicy, ...] = get_args(PIIPolicy)
_LABELS: dict[PIIKind, tuple[str, str]] = {
    "email": ("e-mail address", "e-mail addresses"),
    "phone": ("phone number", "phone numbers"),
    "card": ("card number", "card numbers"),
}

_EMAIL = re.compile(
    r"(?<![\w.%+-])[\w.%+-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}\b"
)
# A run of digit groups separated by single spaces or dashes: card candidates.
_DIGIT_RUN = re.compile(r"(?<![\w.])\d+(?:[ -]\d+)*(?![\w])")
_PHONES = (
    # International: +CC then groups, optionally with an area code in parentheses.
    re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){1,6}(?!\w)"),
    # North American: (555) 123-4567, 555-123-4567, 555.123.4567.
    re.compile(r"(?<![\w.-])(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}(?!\w)"),
    # National with a trunk 0 (most of Europe, the UK, Australia): 020 7946 0958,
    # 06 12 34 56 78, 030-12345678, 07700900123.
    re.compile(r"(?<![\w.+-])0\d{1,4}(?:[ .-]?\d{2,4}){1,4}(?!\w)"),
)
_PHONE_DIGITS = ((8, 15), (10, 10), (9, 11))  # per pattern: plausible digit counts


@dataclass(frozen=True)
class _Hit:
    kind: PIIKind
    start: int
    end: int
    value: str


class PII(Verifier):
    """Finds personal data in every string of the output (nested fields included).

    Kinds: ``email``; ``phone`` (international ``+CC ...``, North American, and national
    numbers with a trunk ``0``; plain years and short numbers are not phones); ``card``
    (13 to 19 digits, optionally grouped by spaces or dashes, that pass the Luhn check).

    Policies: ``block`` fails with feedback to remove them; ``redact`` passes with the
    output revised, each one replaced by ``[email redacted]`` (``[phone redacted]``,
    ``[card redacted]``); ``escalate`` is uncertain, for a person to decide. Evidence
    shows what was found masked (``a***@example.com``), never the raw value.

    Example::

        PII(policy="redact", kinds=("email", "phone"))
    """

    def __init__(
        self,
        *,
        policy: PIIPolicy = "block",
        kinds: Iterable[PIIKind] = _KINDS,
        name: str = "pii",
        timeout: float = 30.0,
    ) -> None:
        if policy not in _POLICIES:
            raise VerifierConfigError(
                f"PII: unknown policy {policy!r}; use one of {', '.join(_POLICIES)}"
            )
        self.kinds = tuple(kinds)
        unknown = [k for k in self.kinds if k not in _KINDS]
        if unknown or not self.kinds:
            raise VerifierConfigError(
                f"PII: unknown kinds {unknown or '(none given)'}; choose from {', '.join(_KINDS)}"
            )
        self.policy = policy
        self.name = name
        self.timeout = timeout

    async def verify(self, check: Check, tools: Tools) -> Verdict:
        """Look for personal data and apply the policy."""
        counts: Counter[PIIKind] = Counter()
        evidence: list[str] = []
        found_in: dict[str, list[_Hit]] = {}  # each string is scanned once
        for path, text in strings(check.output):
            hits = found_in.get(text)
            if hits is None:
                hits = found_in[text] = _find(text, self.kinds)
            for hit in hits:
                counts[hit.kind] += 1
                evidence.append(f"{_LABELS[hit.kind][0]} {where(path)}: {_mask(hit)}")
        if not counts:
            return Verdict(verifier=self.name, status="pass", reasons=["no personal data found"])
        found = _summary(counts)
        if self.policy == "redact":
            return Verdict(
                verifier=self.name,
                status="pass",
                reasons=[f"redacted {found}"],
                evidence=evidence,
                revised=True,
                output=map_strings(check.output, lambda t: _redact(t, found_in[t])),
            )
        if self.policy == "escalate":
            return Verdict(
                verifier=self.name,
                status="uncertain",
                reasons=[f"the output contains {found}; a person should decide if it may stay"],
                evidence=evidence,
            )
        kinds = ", ".join(_LABELS[k][1] for k in self.kinds)
        return Verdict(
            verifier=self.name,
            status="fail",
            reasons=[f"the output contains {found}"],
            evidence=evidence,
            feedback=(
                f"Remove the personal data from the output: it contains {found} "
                f"({'; '.join(evidence)}). Do not include {kinds}; refer to people and "
                "payments without them."
            ),
        )


def _redact(text: str, hits: list[_Hit]) -> str:
    out, last = [], 0
    for hit in hits:
        out += [text[last : hit.start], f"[{hit.kind} redacted]"]
        last = hit.end
    return "".join(out) + text[last:]


def _find(text: str, kinds: tuple[PIIKind, ...]) -> list[_Hit]:
    hits: list[_Hit] = []
    # Cards before phones (a grouped card number looks like phone groups), e-mails
    # before phones (digits in an address are not a phone number).
    if "card" in kinds:
        hits += _cards(text)
    if "email" in kinds:
        hits += (_Hit("email", m.start(), m.end(), m.group()) for m in _EMAIL.finditer(text))
    if "phone" in kinds:
        hits += (h for h in _phones(text) if not any(_overlap(h, o) for o in hits))
    return sorted(hits, key=lambda h: h.start)


def _cards(text: str) -> Iterator[_Hit]:
    for run in _DIGIT_RUN.finditer(text):
        groups = [(m.start() + run.start(), m.group()) for m in re.finditer(r"\d+", run.group())]
        i = 0
        while i < len(groups):
            j = _longest_card(groups, i)
            if j is None:
                i += 1
                continue
            start, end = groups[i][0], groups[j][0] + len(groups[j][1])
            yield _Hit("card", start, end, text[start:end])
            i = j + 1


def _longest_card(groups: list[tuple[int, str]], i: int) -> int | None:
    """The last group of the longest card number starting at group ``i``, if any."""
    best, digits = None, ""
    for j in range(i, len(groups)):
        digits += groups[j][1]
        if len(digits) > 19:
            break
        if len(digits) >= 13 and len(set(digits)) > 1 and _luhn(digits):
            best = j
    return best


def _luhn(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _phones(text: str) -> Iterator[_Hit]:
    seen: list[_Hit] = []
    for pattern, (low, high) in zip(_PHONES, _PHONE_DIGITS, strict=True):
        for m in pattern.finditer(text):
            hit = _Hit("phone", m.start(), m.end(), m.group())
            if low <= sum(c.isdigit() for c in hit.value) <= high and not any(
                _overlap(hit, s) for s in seen
            ):
                seen.append(hit)
                yield hit


def _overlap(a: _Hit, b: _Hit) -> bool:
    return a.start < b.end and b.start < a.end


def _mask(hit: _Hit) -> str:
    if hit.kind == "email":
        local, _, domain = hit.value.partition("@")
        return f"{local[:1]}***@{domain}"
    keep = 4 if hit.kind == "card" else 2
    digits = sum(c.isdigit() for c in hit.value)
    out, seen = [], 0
    for c in hit.value:
        if c.isdigit():
            seen += 1
            out.append(c if seen > digits - keep else "*")
        else:
            out.append(c)
    return "".join(out)


def _summary(counts: Counter[PIIKind]) -> str:
    parts = []
    for kind in _KINDS:
        n = counts.get(kind, 0)
        if n:
            one, many = _LABELS[kind]
            parts.append(f"{n} {one if n == 1 else many}")
    return ", ".join(parts)
