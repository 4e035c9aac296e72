"""The PII verifier: e-mail addresses, phone numbers, card numbers, IBANs and national
ID numbers, blocked, redacted or escalated.

Formats and check digits come from well-kept libraries, not regexes of our own: phone
numbers from ``phonenumbers`` (Google's libphonenumber: every country's numbering plan),
IBANs, card numbers (Luhn) and national IDs from ``python-stdnum``. The regexes here
only pick candidate spans for those libraries to validate.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, TypeAlias, get_args

import phonenumbers
from stdnum import iban, luhn
from stdnum.es import dni, nie
from stdnum.fr import nir
from stdnum.it import codicefiscale
from stdnum.us import ssn

from ._walk import map_strings, strings, where
from .base import Check, Tools, Verifier
from .errors import VerifierConfigError
from .verdict import Verdict

__all__ = ["DEFAULT_REGIONS", "PII", "PIIKind", "PIIPolicy"]

PIIPolicy: TypeAlias = Literal["block", "redact", "escalate"]
"""``block``: fail (the retry removes it); ``redact``: replace it and pass;
``escalate``: ask a person (uncertain)."""
PIIKind: TypeAlias = Literal["email", "phone", "card", "iban", "national_id"]

DEFAULT_REGIONS: tuple[str, ...] = ("US", "GB", "DE", "FR")
"""Where a phone number written without ``+CC`` is read as a national number: the
numbering plans tried, each with libphonenumber's strict grouping. Numbers written with
``+CC`` are found whatever the regions."""

_KINDS: tuple[PIIKind, ...] = get_args(PIIKind)
_POLICIES: tuple[PIIPolicy, ...] = get_args(PIIPolicy)
_LABELS: dict[PIIKind, tuple[str, str]] = {
    "email": ("e-mail address", "e-mail addresses"),
    "phone": ("phone number", "phone numbers"),
    "card": ("card number", "card numbers"),
    "iban": ("IBAN", "IBANs"),
    "national_id": ("national ID number", "national ID numbers"),
}

_EMAIL = re.compile(
    r"(?<![\w.%+-])[\w.%+-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}\b"
)
# A run of digit groups separated by single spaces or dashes: card candidates.
_DIGIT_RUN = re.compile(r"(?<![\w.])\d+(?:[ -]\d+)*(?![\w])")
# No phone number anywhere has fewer than 5 digits in a row of digit groups.
_PHONE_DIGITS = re.compile(r"\d(?:[\s().-]*\d){4}")
# Country code, check digits, then letters and digits, grouped by single spaces or not:
# IBAN candidates (stdnum knows each country's length and checks the mod-97 digits).
_IBAN_RUN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Za-z0-9]){10,32}")
# Candidates for the national IDs that carry their own check (stdnum validates each):
# US social security numbers as written (123-45-6789), Spanish DNI and NIE, Italian
# codice fiscale, French NIR (social security number, with its key).
_NATIONAL_IDS: tuple[tuple[re.Pattern[str], Callable[[str], bool]], ...] = (
    (re.compile(r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])"), ssn.is_valid),
    (re.compile(r"(?<![\w-])\d{8}-?[A-Z](?![\w-])"), dni.is_valid),
    (re.compile(r"(?<![\w-])[XYZ]-?\d{7}-?[A-Z](?![\w-])"), nie.is_valid),
    (
        re.compile(
            r"(?<!\w)[A-Z]{6}[0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{3}[A-Z](?!\w)"
        ),
        codicefiscale.is_valid,
    ),
    (
        re.compile(r"(?<![\w-])[12] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}(?![\w-])"),
        nir.is_valid,
    ),
)


@dataclass(frozen=True)
class _Hit:
    kind: PIIKind
    start: int
    end: int
    value: str


class PII(Verifier):
    """Finds personal data in every string of the output (nested fields included).

    Kinds: ``email``; ``phone``, any number libphonenumber finds valid with strict
    grouping: international ``+CC ...`` numbers, and national ones such as
    ``(030) 1234-5678`` or ``(415) 555-0100`` read in each of ``regions`` (years,
    amounts, dates, page ranges and ungrouped order numbers are not phones); ``card``
    (13 to 19 digits, optionally grouped by spaces or dashes, passing the Luhn check);
    ``iban`` (any country's, grouped or not, with valid mod-97 check digits);
    ``national_id`` (US social security numbers written ``123-45-6789``, Spanish DNI and
    NIE, Italian codice fiscale, French NIR: each validated by python-stdnum).

    Policies: ``block`` fails with feedback to remove them; ``redact`` passes with the
    output revised, each one replaced by ``[email redacted]`` (``[phone redacted]``,
    ``[card redacted]``, ``[iban redacted]``, ``[national_id redacted]``); ``escalate``
    is uncertain, for a person to decide. Evidence shows what was found masked
    (``a***@example.com``, ``DE** **** ... **00``), never the raw value.

    Example::

        PII(policy="redact", kinds=("email", "phone", "iban"), regions=("DE", "AT", "CH"))
    """

    def __init__(
        self,
        *,
        policy: PIIPolicy = "block",
        kinds: Iterable[PIIKind] = _KINDS,
        regions: Iterable[str] = DEFAULT_REGIONS,
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
        self.regions = tuple(r.upper() for r in regions)
        supported = phonenumbers.SUPPORTED_REGIONS
        bad = [r for r in self.regions if r not in supported]
        if bad:
            raise VerifierConfigError(
                f"PII: unknown phone regions {bad}; use ISO 3166 country codes such as "
                "'DE', 'US', 'GB'"
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
                hits = found_in[text] = _find(text, self.kinds, self.regions)
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


def _find(text: str, kinds: tuple[PIIKind, ...], regions: tuple[str, ...]) -> list[_Hit]:
    hits: list[_Hit] = []
    # Identifiers with check digits first: an IBAN or a grouped card number also looks
    # like phone groups; e-mails before phones (digits in an address are no phone).
    finders: tuple[tuple[PIIKind, Callable[[str], Iterator[_Hit]]], ...] = (
        ("iban", _ibans),
        ("card", _cards),
        ("national_id", _national_ids),
        ("email", _emails),
        ("phone", lambda t: _phones(t, regions)),
    )
    for kind, finder in finders:
        if kind in kinds:
            hits += (h for h in finder(text) if not any(_overlap(h, o) for o in hits))
    return sorted(hits, key=lambda h: h.start)


def _emails(text: str) -> Iterator[_Hit]:
    return (_Hit("email", m.start(), m.end(), m.group()) for m in _EMAIL.finditer(text))


def _ibans(text: str) -> Iterator[_Hit]:
    for run in _IBAN_RUN.finditer(text):
        value = run.group()
        # The longest prefix that ends where a group ends and is a valid IBAN (the run
        # may have swallowed a following word such as "EUR").
        ends = [i for i, c in enumerate(value) if c == " "] + [len(value)]
        for end in reversed(ends):
            if iban.is_valid(value[:end]):
                yield _Hit("iban", run.start(), run.start() + end, value[:end])
                break


def _national_ids(text: str) -> Iterator[_Hit]:
    for pattern, valid in _NATIONAL_IDS:
        for m in pattern.finditer(text):
            if valid(m.group()):
                yield _Hit("national_id", m.start(), m.end(), m.group())


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
        if len(digits) >= 13 and len(set(digits)) > 1 and luhn.is_valid(digits):
            best = j
    return best


def _phones(text: str, regions: tuple[str, ...]) -> Iterator[_Hit]:
    seen: list[_Hit] = []
    if not _PHONE_DIGITS.search(text):  # libphonenumber's matcher is slow; most text has none
        return
    for region in regions or ("ZZ",):  # "ZZ": no national plan, +CC numbers only
        matcher = phonenumbers.PhoneNumberMatcher(
            text, region, leniency=phonenumbers.Leniency.STRICT_GROUPING
        )
        for m in matcher:
            if _bare_figure(m.raw_string):
                continue
            hit = _Hit("phone", m.start, m.end, m.raw_string)
            if not any(_overlap(hit, s) for s in seen):
                seen.append(hit)
                yield hit


def _bare_figure(raw: str) -> bool:
    """A plain run of fewer than ten digits with no trunk ``0`` or ``+``: an amount
    ("subtotal": 330000), not a number people dial (national numbers are written with
    their trunk prefix, and North American ones have ten digits)."""
    return raw.isdigit() and len(raw) < 10 and not raw.startswith("0")


def _overlap(a: _Hit, b: _Hit) -> bool:
    return a.start < b.end and b.start < a.end


def _mask(hit: _Hit) -> str:
    if hit.kind == "email":
        local, _, domain = hit.value.partition("@")
        return f"{local[:1]}***@{domain}"
    keep = 2 if hit.kind == "phone" else 4
    lead = 2 if hit.kind == "iban" else 0  # the country code stays readable
    digits = sum(c.isalnum() for c in hit.value)
    out, seen = [], 0
    for c in hit.value:
        if c.isalnum():
            seen += 1
            out.append(c if seen <= lead or seen > digits - keep else "*")
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
